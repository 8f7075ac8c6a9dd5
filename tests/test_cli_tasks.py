"""The `memorybench tasks ...` commands, run in-process through the CLI's entry point."""

from __future__ import annotations

import json

from PIL import Image

from memorybench.cli import main


def test_list_json(capsys):
    assert main(["tasks", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    keys = {(r["task"], r["tier"]) for r in rows}
    assert ("occlusion-recall", "standard") in keys and ("scene-reasoning", "smoke") in keys
    occ = next(r for r in rows if r["task"] == "occlusion-recall" and r["tier"] == "standard")
    assert occ["frames"] == 676 and occ["resolution"] == "64x64" and "640" in occ["gaps"]


def test_show_reports_statistics(capsys):
    assert main(["tasks", "show", "occlusion-recall", "--tier", "smoke", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    stats = info["statistics"]
    assert stats["episodes"] == 8
    assert 0 < stats["memory_pixel_fraction_predicted"] < 1
    assert sum(stats["gap_histogram"]) == stats["predicted_frames_with_memory"] > 0
    assert info["spec"]["params"]["gaps"] == [6, 12, 24, 40]


def test_show_table_output(capsys):
    assert main(["tasks", "show", "scene-retrieval", "--tier", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "memory-gap histogram" in out and "protocols: [rollout, teacher-forced]" in out


def test_generate_then_reuse(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["tasks", "generate", "scene-reasoning", "--tier", "smoke", "--out", str(out)]) == 0
    assert "generated" in capsys.readouterr().out
    assert (out / "manifest.json").exists()
    assert main(["tasks", "generate", "scene-reasoning", "--tier", "smoke", "--out", str(out)]) == 0
    assert "verified cache" in capsys.readouterr().out


def test_generate_a_whole_tier(capsys, registry):
    assert main(["tasks", "generate", "smoke", "-j", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("✓") == len(registry.select("smoke")) >= 3


def test_preview_png_and_gif(tmp_path):
    png, gif = tmp_path / "sheet.png", tmp_path / "anim.gif"
    assert main(["tasks", "preview", "occlusion-recall", "--tier", "smoke", "--episode", "1", "--out", str(png)]) == 0
    assert main(["tasks", "preview", "scene-retrieval", "--tier", "smoke", "--out", str(gif), "--frames", "60:70"]) == 0
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 500
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == 10


def test_preview_errors(tmp_path, capsys):
    assert (
        main(
            [
                "tasks",
                "preview",
                "occlusion-recall",
                "--tier",
                "smoke",
                "--episode",
                "99",
                "--out",
                str(tmp_path / "x.png"),
            ]
        )
        == 2
    )
    assert "--episode must be in 0..7" in capsys.readouterr().err
    assert main(["tasks", "preview", "occlusion-recall", "--tier", "smoke", "--out", str(tmp_path / "x.bmp")]) == 2
    assert main(["tasks", "show", "no-such-task"]) == 2
