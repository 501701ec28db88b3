"""`llava-vr sft --jsonl`: every line parsed and every image decoded before training; all bad lines reported at once."""

import json
import re

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("trl")

from llava_vr.data import jsonl_documents  # noqa: E402
from llava_vr.data.jsonl_documents import check_image, read_jsonl_documents  # noqa: E402
from llava_vr.hub.refusals import LlavaVRRefusal  # noqa: E402
from llava_vr.training import sft_cli  # noqa: E402


def noise_png(path, size=(64, 48)):
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def truncated_png(path):
    data = noise_png(path).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_jsonl(path, lines):
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


@pytest.fixture
def bad_data(tmp_path):
    noise_png(tmp_path / "good.png")
    truncated_png(tmp_path / "cut.png")
    (tmp_path / "notes.png").write_text("not an image")
    lines = [
        {"image": "good.png", "question": "Total?", "answer": 12},  # 1 fine
        '{"image": "good.png", "question": "Q" "answer": "x"}',  # 2 invalid JSON
        {"image": "good.png", "question": "Q"},  # 3 missing answer
        {"image": "gone.png", "question": "Q", "answer": "x"},  # 4 missing file
        "",  # 5 blank: skipped
        {"image": "cut.png", "question": "Q", "answer": "x"},  # 6 truncated PNG
        {"image": "notes.png", "question": "Q", "answer": "x"},  # 7 not an image
        '["good.png", "Q", "x"]',  # 8 not an object
        {"image": "good.png", "question": "Q", "answer": "x"},  # 9 fine
    ]
    return write_jsonl(tmp_path / "data.jsonl", lines), tmp_path


def test_every_bad_line_is_reported_at_once_with_file_line_and_reason(bad_data):
    path, root = bad_data
    with pytest.raises(ValueError) as raised:
        read_jsonl_documents(str(path), str(root))
    assert isinstance(raised.value, LlavaVRRefusal)
    message = str(raised.value)
    assert message.splitlines()[0] == f"{path}: 6 of 8 lines cannot be used; fix or remove them (nothing was trained):"
    listed = dict(re.findall(rf"^  {re.escape(str(path))}:(\d+): (.*)$", message, flags=re.M))
    assert sorted(map(int, listed)) == [2, 3, 4, 6, 7, 8]
    assert listed["2"].startswith("invalid JSON")
    assert listed["3"].startswith("missing keys ['answer']")
    assert listed["4"] == f"no image file {root / 'gone.png'}"
    assert listed["6"].startswith(f"unreadable image {root / 'cut.png'}") and "truncated" in listed["6"].lower()
    assert listed["7"].startswith(f"unreadable image {root / 'notes.png'}")
    assert listed["8"].startswith("not a JSON object")


def test_a_truncated_png_in_the_first_line_is_named_by_the_dataset_loader(tmp_path):
    from llava_vr.training.sft_data import jsonl_dataset

    truncated_png(tmp_path / "cut.png")
    noise_png(tmp_path / "ok.png")
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [{"image": "cut.png", "question": "Q", "answer": "A"}, {"image": "ok.png", "question": "Q", "answer": "A"}],
    )
    with pytest.raises(LlavaVRRefusal, match=rf"(?m)^  {re.escape(str(path))}:1: unreadable image .*cut\.png"):
        jsonl_dataset(str(path), str(tmp_path))


def test_good_lines_come_back_with_their_line_numbers(tmp_path):
    noise_png(tmp_path / "a.png")
    path = write_jsonl(tmp_path / "d.jsonl", ["", {"image": "a.png", "question": "Q?", "answer": 7}])
    assert read_jsonl_documents(str(path), str(tmp_path)) == [(2, str(tmp_path / "a.png"), "Q?", "7")]


def test_check_image_decodes_the_whole_file(tmp_path):
    assert check_image(str(noise_png(tmp_path / "ok.png"))) is None
    assert "truncated" in check_image(str(truncated_png(tmp_path / "cut.png"))).lower()
    jpeg = tmp_path / "cut.jpg"
    Image.open(tmp_path / "ok.png").save(jpeg, quality=95)
    jpeg.write_bytes(jpeg.read_bytes()[:-200])
    assert check_image(str(jpeg)) is not None


def test_a_wrong_image_root_says_so_and_a_long_listing_goes_to_a_file(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonl_documents, "MAX_LISTED", 3)
    lines = [{"image": f"{i}.png", "question": "Q", "answer": "A"} for i in range(5)]
    path = write_jsonl(tmp_path / "d.jsonl", lines)
    with pytest.raises(LlavaVRRefusal) as raised:
        read_jsonl_documents(str(path), str(tmp_path / "wrong"))
    message = str(raised.value)
    assert f"none of the images exists under --image_root {tmp_path / 'wrong'}" in message
    more = re.search(r"\.\.\. and 2 more: all 5 in (\S+)$", message)
    assert more and len(open(more.group(1)).read().splitlines()) == 5
    assert message.count(f"{path}:") == 3 + 1  # 3 listed, plus the summary line


def test_sft_command_refuses_bad_data_before_loading_a_model_or_training(bad_data, tmp_path, capsys, monkeypatch):
    path, root = bad_data

    def no_model(*args):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(sft_cli, "load_model_and_processor", no_model)
    output_dir = tmp_path / "run"
    status = sft_cli.main(["--tiny", "--jsonl", str(path), "--image_root", str(root), "--output_dir", str(output_dir)])
    captured = capsys.readouterr()
    assert status == 2
    assert f"\nerror: {path}: 6 of 8 lines cannot be used" in captured.err
    assert f"{path}:6: unreadable image" in captured.err and "Traceback" not in captured.err
    assert "Checking data.jsonl" in captured.err  # the progress bar
    assert not output_dir.exists()


def test_a_truncated_image_is_refused_even_where_a_library_lets_pil_load_truncated_files(tmp_path, monkeypatch):
    """lmms-eval sets PIL's `ImageFile.LOAD_TRUNCATED_IMAGES = True` when imported; the checks keep PIL's default and
    leave the flag as they found it."""
    from PIL import ImageFile

    from llava_vr.data.jsonl_documents import check_images

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    jpeg = tmp_path / "cut.jpg"
    Image.open(noise_png(tmp_path / "ok.png")).save(jpeg, quality=95)
    jpeg.write_bytes(jpeg.read_bytes()[:-200])
    assert check_image(str(jpeg)) is not None
    assert check_images([str(jpeg), str(tmp_path / "ok.png")], num_threads=2)[0] is not None
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True
