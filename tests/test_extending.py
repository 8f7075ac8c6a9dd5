"""docs/extending.md cannot rot: its package (a task family, a model and a metric, registered
through entry points) is extracted, registered as pip would without installing anything, checked
with memorybench.testing (its own tests, as the guide runs them, and here in-process) and run end to
end with `memorybench run`."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from test_adapter_guide import example_commands, example_files, install_without_pip

ROOT = Path(__file__).parents[1]
GUIDE = ROOT / "docs" / "extending.md"


@pytest.fixture
def mbext(tmp_path, monkeypatch):
    """The guide's package written to tmp_path and registered (a .dist-info on sys.path); the
    registries' caches are cleared before and after so that no other test sees its plugins."""
    from memorybench import generators, metric_registry, models

    files = example_files(GUIDE.read_text(encoding="utf-8"))
    env = install_without_pip(files, tmp_path)
    for p in (tmp_path / "site", tmp_path / "src"):
        monkeypatch.syspath_prepend(str(p))
    caches = (generators.GENERATORS, models.MODELS, metric_registry.METRICS)
    for c in caches:
        c.clear_cache()
    yield files, env, tmp_path / "src"
    for c in caches:
        c.clear_cache()
    for name in [m for m in sys.modules if m == "mbext" or m.startswith("mbext.")]:
        monkeypatch.delitem(sys.modules, name)


def test_guide_has_one_file_per_extension():
    files = example_files(GUIDE.read_text(encoding="utf-8"))
    assert set(files) == {
        "pyproject.toml",
        "mbext/__init__.py",
        "mbext/family.py",
        "mbext/tasks/flash-recall.yaml",
        "mbext/model.py",
        "mbext/metric.py",
        "tests/test_mbext.py",
    }


def test_plugins_pass_the_conformance_checks(mbext, one_thread):
    from memorybench import metric_registry
    from memorybench.generators import generator_names, get_generator
    from memorybench.models import load_model, model_names
    from memorybench.tasks import TaskRegistry
    from memorybench.testing import check_adapter, check_generator

    assert "flash_recall" in generator_names() and "first-frame" in model_names()
    assert metric_registry.get("mae").fn is not None
    registry = TaskRegistry()
    spec = registry.get("flash-recall", "smoke")
    report = check_generator("flash_recall", spec)
    assert report.items == 1 and get_generator("flash_recall").__module__ == "mbext.family"
    for task in ("flash-recall", "occlusion-recall"):
        assert check_adapter(load_model("first-frame"), registry.get(task, "smoke")).max_difference == 0


def test_guide_package_runs_end_to_end(mbext):
    files, env, src = mbext
    commands = example_commands(GUIDE.read_text(encoding="utf-8"))
    assert commands[0].startswith("python -m pytest") and commands[-1].startswith("memorybench run")
    for cmd in commands:
        argv = shlex.split(cmd)
        argv = [sys.executable, *argv[1:]] if argv[0] == "python" else [sys.executable, "-m", "memorybench", *argv[1:]]
        proc = subprocess.run(argv, cwd=src, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        if argv[1:3] == ["-m", "pytest"]:
            assert "2 passed" in proc.stdout
    assert (src / "flash.gif").stat().st_size > 0
    summaries = {m: json.loads((src / "runs" / m / "summary.json").read_text()) for m in ("first-frame", "copy-last")}
    run_json = json.loads((src / "runs" / "first-frame" / "run.json").read_text())
    assert "mae" in run_json["metrics"]["user_metrics"]
    first = summaries["first-frame"]["groups"]["flash-recall@smoke/rollout"]["metrics"]
    copy = summaries["copy-last"]["groups"]["flash-recall@smoke/rollout"]["metrics"]
    # the first frame is every predicted frame of this task: no error, every square recalled
    assert first["mae"]["mean"] == 0 and first["recall"]["mean"] == 1
    # copy-last shows the cover where the square comes back
    assert 0 < copy["mae"]["mean"] < 1 and copy["mae"]["ci_low"] <= copy["mae"]["mean"] <= copy["mae"]["ci_high"]
