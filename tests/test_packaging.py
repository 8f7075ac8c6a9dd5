"""What a wheel or an sdist carries: the licence, the data, and only the dependencies used at run time."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_licence_file_matches_the_metadata():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    project = _pyproject()["project"]
    assert project["license"] == "Apache-2.0" and "LICENSE" in project["license-files"]
    build = _pyproject()["build-system"]["requires"]
    assert any(re.fullmatch(r"hatchling>=1\.(2[7-9]|[3-9]\d)(\.\d+)?", r) for r in build), build  # PEP 639


def test_model_cards_carry_the_licence():
    cards = sorted((ROOT / "baselines").glob("*/card.json"))
    assert len(cards) >= 6
    for c in cards:
        assert json.loads(c.read_text())["license"] == "Apache-2.0", c


def test_runtime_dependencies_are_used_at_run_time():
    """torchvision and scikit-image are not imported by memorybench: not runtime dependencies
    (lpips brings torchvision; the tests cross-check SSIM against scikit-image: `dev`)."""
    project = _pyproject()["project"]
    names = {re.split(r"[<>=!~;\[ ]", d)[0].lower() for d in project["dependencies"]}
    assert "torchvision" not in names and "scikit-image" not in names
    assert any(d.startswith("scikit-image") for d in project["optional-dependencies"]["dev"])
    pattern = re.compile(r"^\s*(import|from)\s+(torchvision|skimage)\b", re.M)
    offenders = [str(p) for p in (ROOT / "memorybench").rglob("*.py") if pattern.search(p.read_text())]
    assert not offenders, offenders
    for dep in ("torch", "numpy", "typer", "datasets", "safetensors", "pillow"):
        assert dep in names


def test_install_hint_fits_the_installation(monkeypatch, tmp_path):
    import memorybench

    monkeypatch.chdir(ROOT)
    assert memorybench.source_checkout() == str(ROOT)
    assert memorybench.install_hint("mazes") == 'pip install -e ".[mazes]"'
    monkeypatch.chdir(tmp_path)
    assert memorybench.install_hint("mazes") == f'pip install -e "{ROOT}[mazes]"'
    monkeypatch.setattr(memorybench, "source_checkout", lambda: None)  # as from a wheel
    assert memorybench.install_hint("mazes") == 'pip install "memorybench[mazes]"'


def test_wheel_contains_licence_tasks_and_checkpoints(tmp_path, monkeypatch):
    """Build the wheel with hatchling where it is installed (it is the build backend; pip
    fetches it into an isolated environment, so the test environment need not have it)."""
    build = pytest.importorskip("hatchling.build")
    monkeypatch.chdir(ROOT)
    name = build.build_wheel(str(tmp_path))
    with zipfile.ZipFile(tmp_path / name) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: Apache-2.0" in meta
    assert "memorybench/_data/tasks/occlusion-recall.yaml" in names
    assert "memorybench/_data/baselines/lssvwm/card.json" in names
