"""The README's promises: its commands, its example adapter, and plugins by entry point."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from memorybench.cli import main
from memorybench.results import load_summary

README = (Path(__file__).parents[1] / "README.md").read_text()


def code_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_two_setup_commands():
    setup = README.split("## Set up and run")[1].split("\n## ")[0]
    blocks = re.findall(r"```bash\n(.*?)```", setup, flags=re.S)
    assert len(blocks) == 2
    main_cmd, test_cmd = (b.strip() for b in blocks)
    assert main_cmd.endswith("pip install -e . && memorybench run")
    assert "pytest" in test_cmd and ".[dev,mazes]" in test_cmd
    ci = (Path(__file__).parents[1] / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in ci and "exit 1" in ci  # CI reads the README's command


@pytest.fixture
def blur_module(tmp_path, monkeypatch):
    (src,) = [b for b in code_blocks("python") if "class Blur(WorldModel)" in b]
    assert len(src.strip().splitlines()) < 30, "the README promises an adapter under 30 lines"
    (tmp_path / "readme_blur.py").write_text(src)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "readme_blur"


def test_readme_adapter_runs(tmp_path, blur_module):
    out = tmp_path / "runs"
    assert (
        main(
            [
                "run",
                "--model",
                f"{blur_module}:Blur",
                "--model-args",
                "kernel=5",
                "--tasks",
                "occlusion-recall@smoke",
                "--limit",
                "2",
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    s = load_summary(out / "blur")  # the run directory is the declared name, whatever the route
    assert s["complete"] and s["model"]["args"] == {"kernel": 5}


def test_plugin_by_entry_point(tmp_path, blur_module, monkeypatch):
    dist = tmp_path / "readme_blur-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: readme-blur\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[memorybench.models]\nblur = {blur_module}:Blur\n")
    from memorybench import models

    models.MODELS.clear_cache()
    try:
        assert "blur" in models.model_names()
        assert models.resolve("blur").__name__ == "Blur"
        out = tmp_path / "runs"
        assert (
            main(
                [
                    "run",
                    "--model",
                    "blur",
                    "--tasks",
                    "scene-retrieval@smoke",
                    "--limit",
                    "1",
                    "--out",
                    str(out),
                    "--device",
                    "cpu",
                    "--no-retention",
                ]
            )
            == 0
        )
        assert (out / "blur" / "summary.json").exists()
    finally:
        models.MODELS.clear_cache()


def test_readme_training_data_example_trains(tmp_path, capsys):
    import runpy

    section = README.split("## Training data")[1].split("\n## ")[0]
    (src,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    (tmp_path / "train_example.py").write_text(src)
    ns = runpy.run_path(str(tmp_path / "train_example.py"))
    lines = capsys.readouterr().out.splitlines()
    assert ns["step"] == 4 and len(lines) == 5 and all(p.grad is not None for p in ns["net"].parameters())
    # 5 batches of 4 consecutive training episodes, in order whatever the number of workers
    assert [line.split(" [")[1].split("]")[0] for line in lines] == [
        ", ".join(str(4 * b + j) for j in range(4)) for b in range(5)
    ]
    assert ns["batch"]["frames"].shape == (4, 32, 3, 32, 32) and ns["loss"].isfinite()
