"""The runner: calibration baselines, results files, resume, refusal to mix runs, bad outputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from memorybench.cli import main
from memorybench.errors import MemorybenchError
from memorybench.results import DifferentRunError, RunDir, RunExistsError, load_run_json, load_summary, read_events
from memorybench.runner import AdapterError, RunRequest, evaluate

TESTS = Path(__file__).parent


@pytest.fixture(autouse=True)
def _test_models_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))


def run(tmp_path, model, tasks, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("retention", False)
    return evaluate(RunRequest(model=model, tasks=tasks, out=tmp_path / model.replace(":", "_"), **kw))


def records(run_dir):
    rows = list(RunDir(Path(run_dir)).iter_records())
    return sorted(rows, key=lambda r: (r["task"], r["protocol"], r["episode"], r["frame"]))


def test_ground_truth_scores_perfect(tmp_path, smoke_specs):
    d = run(tmp_path, "ground-truth", smoke_specs, protocols=("rollout", "teacher-forced"))
    rows = records(d)
    protocols = {"rollout", "teacher-forced"}
    assert len(rows) == sum(s.episodes * s.predict_frames * len(protocols & set(s.protocols)) for s in smoke_specs)
    for r in rows:
        assert (
            r["psnr"] == 100.0
            and r["ssim"] == pytest.approx(1.0, abs=1e-9)
            and r["lpips"] == pytest.approx(0.0, abs=1e-6)
        )
    summary = load_summary(d)
    assert summary["complete"] and all(g["complete"] for g in summary["groups"].values())


# Margins (perfect-memory minus copy-last, on memory-only pixels, in every gap bin). Procedural
# families know each pixel's content, so their perfect-memory is exact; pose-based families
# (Memory Maze, recorded episodes) copy the closest-pose frame, an approximate reference.
EXACT = {"psnr": 10.0, "ssim": 0.2, "lpips_ratio": 0.5}
APPROXIMATE = {"psnr": 5.0, "ssim": 0.05, "lpips_ratio": 0.8}


@pytest.mark.parametrize("protocol", ["rollout", "teacher-forced"])
def test_suite_is_valid_perfect_memory_beats_copy_last_at_every_gap(tmp_path, smoke_specs, protocol):
    """The benchmark is meaningful only if memory pays: on every task and every gap bin."""
    from memorybench.generators import get_generator

    specs = [s for s in smoke_specs if protocol in s.protocols]
    pm = load_summary(run(tmp_path, "perfect-memory", specs, protocols=(protocol,)))
    cl = load_summary(run(tmp_path, "copy-last", specs, protocols=(protocol,)))
    for spec in specs:
        key = f"{spec.key}/{protocol}"
        g = pm["groups"][key]
        margin = EXACT if get_generator(spec.family).has_content_ids else APPROXIMATE
        bins = [b for b in g["by_gap"] if b["frames"] > 0]
        assert bins, f"{key}: no frames with memory-only pixels"
        cbins = {b["label"]: b for b in cl["groups"][key]["by_gap"]}
        for b in bins:
            p, c = b["metrics"], cbins[b["label"]]["metrics"]
            where = (key, b["label"], p, c)
            assert p["psnr_memory"]["mean"] - c["psnr_memory"]["mean"] > margin["psnr"], where
            assert p["ssim_memory"]["mean"] - c["ssim_memory"]["mean"] > margin["ssim"], where
            assert p["lpips_memory"]["mean"] < margin["lpips_ratio"] * c["lpips_memory"]["mean"], where


def test_run_json_is_self_describing(tmp_path, registry):
    spec = registry.get("occlusion-recall", "smoke")
    d = run(tmp_path, "mean-frame", [spec], batch_size=3, command=["memorybench", "run"])
    meta = load_run_json(d)
    assert meta["model"]["name"] == "mean-frame" and meta["model"]["identity_hash"]
    (t,) = meta["tasks"]
    assert t["spec_hash"] == spec.hash() and len(t["dataset_sha256"]) == 64 and t["spec"]["seed"] == spec.seed
    assert meta["metrics"]["version"] >= 1 and "psnr" in json.dumps(meta["metrics"]).lower()
    assert meta["aggregation"]["resamples"] == 1000 and meta["aggregation"]["seed"] == 0
    assert meta["environment"]["libraries"]["torch"] and meta["run"]["batch_size"] == 3
    assert "commit" in meta["git"]
    events = [e["event"] for e in read_events(d)]
    assert events[0] == "start" and events[-1] == "finish"
    rows = records(d)
    assert {"episode", "frame", "memory_gap", "memory_pixels", "psnr", "psnr_memory", "lpips_known"} <= set(rows[0])
    assert rows[0]["frame"] == spec.context_frames


def test_results_do_not_depend_on_batch_size(tmp_path, smoke_specs):
    a = records(
        evaluate(
            RunRequest(
                model="perfect-memory",
                tasks=smoke_specs,
                out=tmp_path / "a",
                batch_size=1,
                progress=False,
                retention=False,
            )
        )
    )
    b = records(
        evaluate(
            RunRequest(
                model="perfect-memory",
                tasks=smoke_specs,
                out=tmp_path / "b",
                batch_size=3,
                progress=False,
                retention=False,
            )
        )
    )
    assert a == b


def test_finished_run_is_never_overwritten_and_runs_never_mix(tmp_path, registry):
    spec = registry.get("scene-retrieval", "smoke")
    d = run(tmp_path, "copy-last", [spec])
    before = (d / "run.json").read_bytes()
    with pytest.raises(RunExistsError, match="--resume"):
        evaluate(RunRequest(model="copy-last", tasks=[spec], out=d, progress=False, retention=False))
    # another model, or the same model with other arguments, cannot resume into it
    with pytest.raises(DifferentRunError, match="model"):
        evaluate(RunRequest(model="mean-frame", tasks=[spec], out=d, resume=True, progress=False, retention=False))
    other = tmp_path / "noisy"
    evaluate(
        RunRequest(
            model="mb_test_models:Noisy",
            model_args="seed=1",
            tasks=[spec],
            out=other,
            progress=False,
            retention=False,
            limit=1,
        )
    )
    with pytest.raises(DifferentRunError, match="model"):
        evaluate(
            RunRequest(
                model="mb_test_models:Noisy",
                model_args="seed=2",
                tasks=[spec],
                out=other,
                resume=True,
                progress=False,
                retention=False,
                limit=1,
            )
        )
    # a finished run resumed with the same request changes nothing
    evaluate(RunRequest(model="copy-last", tasks=[spec], out=d, resume=True, progress=False, retention=False))
    assert (d / "run.json").read_bytes() == before


FAULTS = {
    "shape": "shape",
    "frames": "shape",
    "dtype": "dtype torch.float64",
    "range": "outside [0, 1]",
    "nan": "NaN or inf",
    "inf": "NaN or inf",
    "numpy": "expected a torch.Tensor",
    "raise": "predict() raised RuntimeError: simulated adapter crash",
}


@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_bad_adapter_output_is_named_and_resumable(tmp_path, registry, monkeypatch, kind):
    spec = registry.get("occlusion-recall", "smoke")
    out = tmp_path / "faulty"
    req = dict(model="mb_test_models:Faulty", tasks=[spec], out=out, batch_size=1, progress=False, retention=False)
    monkeypatch.setenv("MB_FAULT", kind)
    with pytest.raises(AdapterError) as e:
        evaluate(RunRequest(**req))
    msg = str(e.value)
    assert FAULTS[kind] in msg
    assert "'faulty'" in msg and "occlusion-recall@smoke" in msg and "episode 1" in msg
    assert f"frame {spec.context_frames + 2}" in msg
    # episode 0 was finished before the failure and is intact; episode 1 left nothing behind
    assert RunDir(out).done_episodes(spec.key, "rollout") == {0}
    assert not list(out.rglob("*.tmp"))
    if kind == "raise":  # a stopped run can be summarized as it stands: incomplete, and still resumable
        assert main(["summarize", str(out), "--no-retention", "--device", "cpu"]) == 0
        part = load_summary(out)
        group = part["groups"][f"{spec.key}/rollout"]
        assert not part["complete"] and not group["complete"] and group["episodes"] == 1
        assert group["missing_episodes"] == list(range(1, spec.episodes))
    monkeypatch.delenv("MB_FAULT")
    evaluate(RunRequest(**req, resume=True))
    assert load_summary(out)["complete"]


def test_kill_and_resume_gives_the_same_metrics(tmp_path, registry):
    spec = registry.get("occlusion-recall", "smoke")
    env = {**os.environ, "PYTHONPATH": str(TESTS) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "memorybench",
        "run",
        "--model",
        "mb_test_models:Slow",
        "--model-args",
        "delay=0.05",
        "--tasks",
        spec.key,
        "--batch-size",
        "1",
        "--out",
        str(out),
        "--no-retention",
        "--device",
        "cpu",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rec = out / "slow" / "records" / spec.key / "rollout"  # the declared name, whatever the route
    deadline = time.time() + 120
    while time.time() < deadline and len(list(rec.glob("ep-*.jsonl"))) < 1:
        time.sleep(0.05)
    time.sleep(0.3)  # well inside the next episode (16 frames x 0.05 s)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(rec.glob("ep-*.jsonl")))
    assert 1 <= done < spec.episodes, "the kill should land mid-run"
    assert not (out / "slow" / "summary.json").exists()
    subprocess.run(cmd + ["--resume"], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    resumed = out / "slow"
    events = [e["event"] for e in read_events(resumed)]
    assert events.count("start") == 1 and "resume" in events and events[-1] == "finish"
    # the timings count the killed session's finished episodes too
    tm = load_summary(resumed)["timings"][f"{spec.key}/rollout"]
    assert tm["episodes"] == spec.episodes and tm["sessions"] == 2 and tm["model_seconds"] > 0
    clean = evaluate(
        RunRequest(
            model="mb_test_models:Slow",
            model_args="delay=0",
            tasks=[spec],
            out=tmp_path / "clean",
            batch_size=1,
            progress=False,
            retention=False,
        )
    )
    strip = lambda rows: [{k: v for k, v in r.items()} for r in rows]  # noqa: E731
    assert strip(records(resumed)) == strip(records(clean))
    a, b = load_summary(resumed)["groups"], load_summary(clean)["groups"]
    assert a[f"{spec.key}/rollout"]["metrics"] == b[f"{spec.key}/rollout"]["metrics"]


def test_save_predictions_and_rescore(tmp_path, registry):
    spec = registry.get("scene-reasoning", "smoke")
    d = evaluate(
        RunRequest(
            model="mb_test_models:Noisy",
            tasks=[spec],
            out=tmp_path / "pred",
            save_predictions=True,
            progress=False,
            retention=False,
        )
    )
    preds = sorted((d / "predictions").rglob("ep-*.npz"))
    assert len(preds) == spec.episodes
    with np.load(preds[0]) as z:
        assert z["frames"].shape == (spec.predict_frames, *spec.resolution, 3) and z["frames"].dtype == np.uint8
    assert main(["score", str(d), "--out", str(tmp_path / "again"), "--no-retention", "--device", "cpu"]) == 0
    assert records(tmp_path / "again") == records(d)
    assert load_run_json(tmp_path / "again")["rescored_from"] == str(d.resolve())
    with pytest.raises(MemorybenchError, match="not run with --save-predictions"):
        from memorybench.runner import rescore

        rescore(tmp_path / "again", tmp_path / "x")


def test_protocol_not_supported_and_bad_options(tmp_path, registry):
    spec = registry.get("occlusion-recall", "smoke")
    with pytest.raises(MemorybenchError, match="--batch-size"):
        evaluate(RunRequest(model="copy-last", tasks=[spec], out=tmp_path / "x", batch_size=0, progress=False))
    with pytest.raises(MemorybenchError, match="unknown model 'copy-lats'. Did you mean 'copy-last'"):
        evaluate(RunRequest(model="copy-lats", tasks=[spec], out=tmp_path / "y", progress=False))
    assert (
        main(
            [
                "run",
                "--model",
                "copy-last",
                "--tasks",
                spec.key,
                "--protocol",
                "teacher-forcing",
                "--out",
                str(tmp_path / "z"),
            ]
        )
        == 2
    )


def test_cli_default_run_prints_a_table(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "memorybench results" in out
    for m in ("copy-last", "mean-frame", "ground-truth", "perfect-memory"):
        assert m in out
    (root,) = (tmp_path / "runs").iterdir()
    assert sorted(p.name for p in root.iterdir()) == ["copy-last", "ground-truth", "mean-frame", "perfect-memory"]
    pm = load_summary(root / "perfect-memory")
    r = next(iter(pm["groups"].values()))["retention"]["retention"]
    assert r["mean"] == pytest.approx(1.0)


def test_protocols_a_task_does_not_offer_are_skipped_and_recorded(tmp_path, registry):
    import dataclasses

    occ = registry.get("occlusion-recall", "smoke")
    rollout_only = dataclasses.replace(registry.get("scene-retrieval", "smoke"), protocols=("rollout",))
    d = evaluate(
        RunRequest(
            model="copy-last",
            tasks=[occ, rollout_only],
            out=tmp_path / "r",
            protocols=("rollout", "teacher-forced"),
            progress=False,
            retention=False,
            limit=1,
        )
    )
    meta = load_run_json(d)
    assert [t["protocols"] for t in meta["tasks"]] == [["rollout", "teacher-forced"], ["rollout"]]
    assert set(load_summary(d)["groups"]) == {
        f"{occ.key}/rollout",
        f"{occ.key}/teacher-forced",
        f"{rollout_only.key}/rollout",
    }
    with pytest.raises(MemorybenchError, match="no task supports"):
        evaluate(
            RunRequest(
                model="copy-last",
                tasks=[rollout_only],
                out=tmp_path / "t",
                protocols=("teacher-forced",),
                progress=False,
            )
        )
