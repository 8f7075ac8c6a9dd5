"""The new user's commands: `models list`, plain progress lines in logs, `show`, portable reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memorybench.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_models_list_json(capsys):
    assert main(["models", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    from memorybench.models import BUILTIN_MODELS
    from memorybench.zoo import ZOO_MODELS

    assert set(BUILTIN_MODELS) <= set(rows)
    assert rows["copy-last"]["kind"] == "calibration" and rows["copy-last"]["parameters"] == 0
    assert rows["perfect-memory"]["kind"] == "reference" and rows["ground-truth"]["kind"] == "reference"
    for name in ZOO_MODELS:
        r = rows[name]
        card = json.loads((ROOT / "baselines" / name / "card.json").read_text())
        assert r["kind"] == "zoo" and r["parameters"] == card["parameters"] > 1_000_000
        assert r["checkpoint"]["present"] and r["checkpoint"]["sha256"] == card["checkpoint"]["sha256"]
        assert Path(r["checkpoint"]["path"]).name == "model.safetensors"
        assert r["citation_keys"], name
        assert r["license"] == card["license"] == "Apache-2.0"
    assert rows["lssvwm"]["citation_keys"] == ["po2025lssvwm"]


def test_models_list_shows_plugins_and_their_errors(tmp_path, monkeypatch, capsys):
    (tmp_path / "mb_plugin_ok.py").write_text(
        "from memorybench.models.calibration import CopyLast\n\n"
        'class Mine(CopyLast):\n    """My model."""\n    name = \'mine\'\n'
        "    citation = '@article{me2025mine, title={Mine}}'\n"
    )
    dist = tmp_path / "mb_plugin_ok-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mb-plugin-ok\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[memorybench.models]\nmine = mb_plugin_ok:Mine\nbroken = mb_plugin_missing_xyz:Model\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from memorybench import models

    models.MODELS.clear_cache()
    try:
        assert main(["models", "list", "--json"]) == 0
        rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
        assert rows["mine"]["kind"] == "plugin" and rows["mine"]["citation_keys"] == ["me2025mine"]
        assert rows["mine"]["summary"] == "My model." and rows["mine"]["parameters"] is None
        assert "mb_plugin_missing_xyz" in rows["broken"]["error"]
        assert main(["models", "list"]) == 0
        out = capsys.readouterr().out
        assert "mine" in out and "plugin" in out and "po2025lssvwm" in out
    finally:
        models.MODELS.clear_cache()


# -- progress in logs -------------------------------------------------------------------------------------


def _cli(args, tmp_path, **env):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(
        [sys.executable, "-m", "memorybench", *args], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600
    )


def test_progress_lines_when_not_a_terminal(tmp_path):
    """stdout/stderr are pipes here, as in CI or a SLURM log: plain progress lines, no live bar."""
    proc = _cli(
        [
            "run",
            "--model",
            "copy-last",
            "--tasks",
            "occlusion-recall@smoke",
            "--limit",
            "2",
            "--batch-size",
            "1",
            "--device",
            "cpu",
            "--no-retention",
            "--out",
            str(tmp_path / "runs"),
        ],
        tmp_path,
        MEMORYBENCH_PROGRESS_INTERVAL="0",
    )
    assert proc.returncode == 0, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.startswith("[progress] ")]
    assert any("copy-last · occlusion-recall@smoke · rollout · episodes 1-1 of 2" in x for x in lines), proc.stderr
    assert any("episodes 2-2 of 2" in x for x in lines)
    last = lines[-1]
    assert "16/16 frames (100%)" in last and "frames/s" in last and "ETA 0:00:00" in last, last
    assert "━" not in proc.stderr  # no bar characters in a log

    proc = _cli(
        ["tasks", "generate", "scene-retrieval@smoke", "--out", str(tmp_path / "ds")],
        tmp_path,
        MEMORYBENCH_PROGRESS_INTERVAL="0",
    )
    assert proc.returncode == 0, proc.stderr
    assert "[progress] generate scene-retrieval@smoke: 8/8 episodes (100%)" in proc.stderr, proc.stderr


def test_plain_progress_lines():
    import io

    from memorybench.console import PlainProgress

    buf = io.StringIO()
    p = PlainProgress(fields=("loss",), interval=3600, stream=buf)
    with p:
        job = p.add_task("train mamba", total=10, unit="steps", loss="—")
        for i in range(9):
            p.update(job, completed=i + 1, loss=f"{1 / (i + 1):.3f}")
        assert buf.getvalue() == ""  # within the interval: silent until the task finishes
        p.update(job, completed=10, loss="0.100")
    (line,) = buf.getvalue().splitlines()
    assert line.startswith("[progress] train mamba: 10/10 steps (100%), ") and ", loss 0.100, elapsed 0:00:00" in line
    assert "ETA 0:00:00" in line


# -- memorybench show -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory, _session_cache):
    os.environ["MEMORYBENCH_CACHE"] = _session_cache
    out = tmp_path_factory.mktemp("show") / "runs"
    assert (
        main(
            [
                "run",
                "--model",
                "mean-frame",
                "--tasks",
                "occlusion-recall@smoke,scene-retrieval@smoke",
                "--limit",
                "2",
                "--out",
                str(out),
                "--device",
                "cpu",
                "--no-retention",
                "--save-predictions",
            ]
        )
        == 0
    )
    return out / "mean-frame"


def test_show_sheet_and_animation(saved_run, tmp_path):
    from PIL import Image

    png, gif = tmp_path / "s.png", tmp_path / "a.gif"
    assert main(["show", str(saved_run), "--task", "occlusion-recall", "--episode", "1", "--out", str(png)]) == 0
    assert (
        main(
            [
                "show",
                str(saved_run),
                "--task",
                "scene-retrieval@smoke",
                "--episode",
                "0",
                "--out",
                str(gif),
                "--frames",
                "70:76",
            ]
        )
        == 0
    )
    with Image.open(png) as im:
        assert im.format == "PNG" and im.height > im.width  # one row per selected frame, four panels each
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == 6


def test_show_panels_are_prediction_truth_mask_and_last_seen(saved_run):
    from memorybench import preview
    from memorybench.generators import get_generator
    from memorybench.results import RunDir, load_run_json
    from memorybench.taskfile import spec_from_dict

    meta = load_run_json(saved_run)
    entry = next(t for t in meta["tasks"] if t["key"] == "occlusion-recall@smoke")
    spec = spec_from_dict(entry["spec"])
    ep = get_generator(spec.family)(spec).generate(1)
    preds, start = RunDir(saved_run).read_predictions(entry["key"], "rollout", 1)
    t = max(range(start, spec.frames), key=lambda f: ep.memory_mask[f].sum())
    pred, truth, mask, past = preview._panels(ep, preds[t - start], t)
    assert (pred == preds[t - start]).all() and (truth == ep.frames[t]).all()
    g = int(ep.memory_gap[t])
    assert g > spec.recent_window and (past == ep.frames[t - g]).all()
    m = ep.memory_mask[t]
    assert m.any() and (mask[m] != ep.frames[t][m]).any(axis=-1).all()  # the mask is drawn on memory pixels
    # the mask view is grey outside the marks: no object hue can be mistaken for the mask
    rest = ~m & ~ep.novel_mask[t]
    assert (mask[rest].max(axis=-1) - mask[rest].min(axis=-1) <= 1).all()
    # under rollout the gap and the last-seen frame are those of what the model saw (the context):
    # a predicted frame without memory pixels, whose content the true trajectory showed a frame ago
    u = next(f for f in range(start + 1, spec.frames) if ep.memory_gap_rollout[f] != ep.memory_gap[f])
    gr = int(ep.memory_gap_rollout[u])
    assert preview.gap_of(ep, u, "rollout") == gr and preview.last_seen_frame(ep, u, "rollout") == u - gr < start
    *_, past_r = preview._panels(ep, preds[u - start], u, "rollout")
    assert (past_r == ep.frames[u - gr]).all()
    assert preview.gap_of(ep, u) == int(ep.memory_gap[u])


def test_show_errors(saved_run, small_plain_run, tmp_path, capsys):
    def fails(argv, needle):
        assert main(argv) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert needle in err and "Traceback" not in err, err

    fails(["show", str(saved_run), "--episode", "0", "--out", str(tmp_path / "x.png")], "the run has several tasks")
    fails(
        ["show", str(saved_run), "--task", "occlusion-recall", "--episode", "3", "--out", str(tmp_path / "x.png")],
        "--episode 3: no saved predictions of occlusion-recall@smoke (rollout) for it; saved: 0, 1",
    )
    fails(
        ["show", str(saved_run), "--task", "occlusion-recal", "--episode", "0", "--out", str(tmp_path / "x.png")],
        "Did you mean 'occlusion-recall@smoke'",
    )
    fails(
        ["show", str(saved_run), "--task", "occlusion-recall", "--episode", "0", "--out", str(tmp_path / "x.jpg")],
        "--out must end in .png, .pdf, .gif, .mp4",
    )
    fails(
        ["show", str(small_plain_run), "--episode", "0", "--out", str(tmp_path / "x.png")],
        "was run without --save-predictions",
    )


def test_show_mp4_needs_ffmpeg(saved_run, tmp_path, capsys):
    from memorybench import preview

    out = tmp_path / "a.mp4"
    rc = main(
        ["show", str(saved_run), "--task", "occlusion-recall", "--episode", "0", "--out", str(out), "--frames", "66:70"]
    )
    if preview._mp4_writer() is None:
        assert rc == 2 and "needs ffmpeg" in capsys.readouterr().err and not out.exists()
    else:
        assert rc == 0 and out.stat().st_size > 0


@pytest.fixture(scope="module")
def small_plain_run(tmp_path_factory, _session_cache):
    os.environ["MEMORYBENCH_CACHE"] = _session_cache
    out = tmp_path_factory.mktemp("plain") / "runs"
    assert (
        main(
            [
                "run",
                "--model",
                "copy-last",
                "--tasks",
                "occlusion-recall@smoke",
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
    return out / "copy-last"


# -- publishable results ------------------------------------------------------------------------------


def test_report_writes_portable_results(tmp_path, monkeypatch, capsys):
    """What `report --runs-to` writes names no machine and no home directory."""
    import socket

    from memorybench.portable import find_non_portable
    from memorybench.profile import write_profiles

    real_host = socket.gethostname()
    monkeypatch.setattr(socket, "gethostname", lambda: "mb-test-host-7f3a")
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "work" / "runs"
    assert (
        main(
            [
                "run",
                "--model",
                "copy-last",
                "--tasks",
                "occlusion-recall@smoke",
                "--limit",
                "1",
                "--out",
                str(work),
                "--device",
                "cpu",
                "--no-retention",
            ]
        )
        == 0
    )
    raw = (work / "copy-last" / "run.json").read_text()
    assert "mb-test-host-7f3a" in raw and os.environ["MEMORYBENCH_CACHE"] in raw  # what a local run records
    prof = tmp_path / "work" / "p.json"  # a profile as an older memorybench wrote it: with the host name
    prof.write_text(
        json.dumps(
            {"format": "memorybench-profile/1", "environment": {"hostname": "mb-test-host-7f3a"}, "profiles": []}
        )
    )
    results = tmp_path / "results"
    assert (
        main(
            [
                "report",
                str(work),
                "--runs-to",
                str(results / "runs" / "smoke"),
                "--out",
                str(results),
                "--profile",
                str(prof),
            ]
        )
        == 0
    )
    write_profiles([], results / "profiles" / "new.json")
    assert json.loads((results / "profiles" / "p.json").read_text())["environment"] == {}
    assert (results / "runs" / "smoke" / "copy-last" / "records").is_dir()
    assert find_non_portable(results, ["mb-test-host-7f3a", real_host]) == []
    meta = json.loads((results / "runs" / "smoke" / "copy-last" / "run.json").read_text())
    assert meta["tasks"][0]["dataset_path"].startswith("$MEMORYBENCH_CACHE/tasks/occlusion-recall-smoke-")
    assert (
        meta["command"][0] in ("memorybench", "__main__.py", "pytest", "-c") and "hostname" not in meta["environment"]
    )
    board = json.loads((results / "leaderboard.json").read_text())
    assert not Path(board["runs"][0]["path"]).is_absolute()
    # the copies are runs like any other
    assert main(["leaderboard", str(results / "runs")]) == 0


def test_portable_rewrites_paths_and_drops_hosts(monkeypatch, tmp_path):
    from memorybench import storage
    from memorybench.portable import portable

    home = str(Path.home())
    repo_ckpt = str(ROOT / "baselines" / "s4" / "model.safetensors")
    obj = {
        "environment": {"hostname": "h", "python": "3"},
        "host": "h",
        "dataset_path": str(storage.cache_root() / "tasks" / "x-smoke-1"),
        "checkpoint": repo_ckpt,
        "command": ["/opt/venv/bin/memorybench", "run", "--out", str(tmp_path / "runs")],
        "note": f"{home}/data/eps is mine",
        "other": "/srv/data",
    }
    monkeypatch.chdir(tmp_path)
    out = portable(obj)
    assert out["environment"] == {"python": "3"} and "host" not in out
    assert out["dataset_path"] == "$MEMORYBENCH_CACHE/tasks/x-smoke-1"
    assert out["checkpoint"] == "baselines/s4/model.safetensors"
    assert out["command"] == ["memorybench", "run", "--out", "runs"]
    assert out["note"] == "~/data/eps is mine" and out["other"] == "/srv/data"


def test_committed_results_are_portable():
    import socket

    from memorybench.portable import find_non_portable

    assert find_non_portable(ROOT / "results", [socket.gethostname()]) == []


def test_html_tables_scroll_inside_the_page(tmp_path):
    import re

    from memorybench import leaderboard as lb

    runs = lb.load_runs([ROOT / "results" / "gate"])
    text = lb.to_html(lb.build(runs))
    tables = re.findall(r"(.{0,30})<table", text)
    assert tables and all(t.endswith("<div class='scroll'>") for t in tables)
    assert text.count("<div class='scroll'>") == text.count("</table></div>")
    assert ".scroll{max-width:100%;overflow-x:auto" in text and "position:sticky;left:0" in text
