"""The package as a newcomer meets it: the `llava-vr` command outside the checkout, one registry per axis of
variation, and a bundled checkpoint whose code files are the package's own."""

import subprocess
import sys
import typing
from pathlib import Path

import pytest

from llava_vr import LlavaVRConfig
from llava_vr.projectors_llava_vr import PROJECTOR_CLASSES
from llava_vr.registries_llava_vr import PROJECTORS, SALIENCY_MODES, VR_INTERACTIONS
from llava_vr.saliency_llava_vr import SALIENCY_QUERIES
from llava_vr.testing_utils import tiny_config
from llava_vr.training import sft_help
from llava_vr.vision_remember_llava_vr import CROSS_ATTENTION_CLASSES
from llava_vr_cli import HELP_PARSERS, SUBCOMMANDS, main

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "llava_vr"
BUNDLED = REPO / "examples" / "trained_models" / "llava-vr-tiny-digit-grid"


def run_cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "llava_vr", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_llava_vr_command_lists_its_subcommands_outside_the_checkout(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in SUBCOMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_every_subcommand_answers_help(command, tmp_path):
    result = run_cli(command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage" in result.stdout.lower()


# runs the installed `llava-vr` console script's entry point as the script does, then lists the heavy modules imported
CONSOLE_SCRIPT = """
import sys
from importlib.metadata import entry_points

(script,) = entry_points(group="console_scripts", name="llava-vr")
sys.argv = ["llava-vr", *sys.argv[1:]]
try:
    status = script.load()()
except SystemExit as exit:
    status = exit.code
print(status, sorted(name for name in ("torch", "transformers", "llava_vr") if name in sys.modules))
"""


def skip_where_the_stored_sft_help_does_not_fit(command):
    if command == "sft" and sft_help.build_parser() is None:
        pytest.skip(f"sft_help.json was written for other releases than {sft_help.current_key()['releases']}")


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--version"],
        ["frobnicate"],
        *([command, "--help"] for command in sorted(HELP_PARSERS)),
        ["bench", "-h"],
    ],
)
def test_llava_vr_help_version_and_usage_errors_do_not_import_torch(argv, tmp_path):
    skip_where_the_stored_sft_help_does_not_fit(argv[0])
    result = subprocess.run(
        [sys.executable, "-c", CONSOLE_SCRIPT, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    status, imported = result.stdout.strip().splitlines()[-1].split(" ", 1)
    assert imported == "[]", result.stdout + result.stderr[-2000:]
    assert status == ("2" if argv == ["frobnicate"] else "0")
    if argv == ["--help"]:
        assert all(name in result.stdout for name in SUBCOMMANDS)
    if argv[1:] in (["--help"], ["-h"]):
        assert result.stdout.startswith(f"usage: llava-vr {argv[0]} ")


def test_a_benchmarks_own_help_still_lists_its_options(tmp_path):
    """`bench NAME --help` is not the fast list's help: it goes on to the benchmark's own parser."""
    result = subprocess.run(
        [sys.executable, "-c", CONSOLE_SCRIPT, "bench", "vision-remember", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.stdout.startswith("usage: llava-vr bench vision-remember "), result.stderr[-2000:]
    assert "--preset" in result.stdout


@pytest.mark.parametrize("command", sorted(HELP_PARSERS))
def test_a_fast_help_is_the_commands_own_help(command, capsys):
    """In-process (torch already imported) `--help` goes through the command's own parsing: the same text."""
    skip_where_the_stored_sft_help_does_not_fit(command)
    if command == "sft":
        pytest.importorskip("trl")
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    module_name, function_name = HELP_PARSERS[command].split(":")
    parser = getattr(__import__(module_name, fromlist=[function_name]), function_name)()
    assert capsys.readouterr().out == parser.format_help()


def refusal_cases(tmp_path: Path) -> dict:
    """Per command: arguments it refuses before doing any work, and a phrase of the refusal."""
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    missing = tmp_path / "no-such-folder"
    return {
        "convert": (["--source", str(missing), "--output", str(tmp_path / "out")], "no such folder"),
        "push": ([str(missing), "--repo-id", "me/x", "--dry-run"], "does not exist"),
        "sft": (["--model", str(missing), "--output_dir", str(tmp_path / "sft")], "no such folder"),
        "experiment": (
            ["--preset", "smoke", "--output-dir", str(tmp_path / "runs"), "--save-best-to", str(occupied)],
            "is not empty",
        ),
    }


@pytest.mark.parametrize("command", ["convert", "push", "sft", "experiment"])
def test_every_command_refuses_with_one_error_line_and_status_2(command, tmp_path, capsys, monkeypatch):
    if command == "sft":
        pytest.importorskip("trl")
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # the launcher sets sys.argv for the subcommand's parser
    argv, phrase = refusal_cases(tmp_path)[command]
    capsys.readouterr()
    status = main([command, *argv])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert status == 2 and len(errors) == 1 and phrase in errors[0], (status, errors)


def test_unknown_subcommand_exits_with_usage_error(tmp_path):
    result = run_cli("frobnicate", cwd=tmp_path)
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_config_literal_fields_and_implementations_follow_the_registries():
    fields = LlavaVRConfig.__dataclass_fields__
    assert typing.get_args(fields["projector_type"].type) == tuple(PROJECTORS)
    assert typing.get_args(fields["vision_remember_interaction"].type) == tuple(VR_INTERACTIONS)
    assert typing.get_args(fields["vision_remember_saliency"].type) == tuple(SALIENCY_MODES)
    assert set(PROJECTOR_CLASSES) == set(PROJECTORS)
    assert set(CROSS_ATTENTION_CLASSES) == set(VR_INTERACTIONS)
    assert set(SALIENCY_QUERIES) | {"auto", "off"} == set(SALIENCY_MODES)


@pytest.mark.parametrize(
    "field, value",
    [("projector_type", "avg_pool"), ("vision_remember_interaction", "local"), ("vision_remember_saliency", "max")],
)
def test_config_refuses_a_variant_that_is_not_registered(field, value):
    with pytest.raises(Exception, match=field):
        tiny_config(**{field: value})


def test_bundled_checkpoint_ships_the_packages_own_code_files():
    """Re-save the bundled model (or copy the files) when this fails: its remote code has drifted from src/."""
    shipped = sorted(BUNDLED.glob("*.py"))
    assert shipped, "the bundled checkpoint has no code files"
    drifted = [f.name for f in shipped if f.read_bytes() != (PACKAGE / f.name).read_bytes()]
    assert not drifted, f"bundled code files differ from src/llava_vr/: {drifted}"
    needed = {p.name for p in PACKAGE.glob("*_llava_vr.py")}
    missing = needed - {f.name for f in shipped}
    assert not missing, f"bundled checkpoint lacks {sorted(missing)}"


IMPORT_TRANSFORMERS_MODELS = """
import sys
if sys.argv[1] == "drop":
    from llava_vr_cli import drop_known_import_notices
    drop_known_import_notices()
import transformers.modeling_utils
"""


def test_the_commands_drop_torchaos_notices_about_its_cuda_kernels(tmp_path):
    """Where torchao is installed, Transformers imports it and it prints notices no user can act on; `llava-vr`'s
    commands (and the quickstart) drop exactly those."""
    import importlib.util

    if importlib.util.find_spec("torchao") is None:
        pytest.skip("torchao is not installed: nothing prints these notices")
    kept, dropped = (
        subprocess.run(
            [sys.executable, "-c", IMPORT_TRANSFORMERS_MODELS, mode],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        ).stderr
        for mode in ("keep", "drop")
    )
    if "Failed to load" not in kept:
        pytest.skip("this torchao release prints no notice on a CPU torch")
    assert "Failed to load" not in dropped and "Enum subclass" not in dropped, dropped


def test_the_notice_filter_keeps_every_other_record():
    import logging

    from llava_vr_cli import DropKnownImportNotices

    keep = DropKnownImportNotices(("Failed to load ",))
    make = lambda message: logging.LogRecord("torchao", logging.WARNING, __file__, 1, message, None, None)  # noqa: E731
    assert not keep.filter(make("Failed to load /x/_C_mxfp8.so: no CUDA"))
    assert keep.filter(make("Skipping import of cpp extensions due to incompatible torch version"))
