"""Scale-out: torchrun with 2 gloo processes on CPU, --shard + merge, and refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from memorybench.cli import main
from memorybench.distributed import merge
from memorybench.errors import MemorybenchError
from memorybench.results import DifferentRunError, RunDir, load_run_json, load_summary
from memorybench.runner import RunRequest, evaluate


def records(run_dir):
    return sorted(
        RunDir(Path(run_dir)).iter_records(), key=lambda r: (r["task"], r["protocol"], r["episode"], r["frame"])
    )


def strip_timings(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in ("timings", "written")}


@pytest.fixture
def single(tmp_path, smoke_specs):
    return evaluate(RunRequest(model="perfect-memory", tasks=smoke_specs, out=tmp_path / "single", progress=False))


def test_torchrun_two_gloo_processes_equal_one(tmp_path, single):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29533",
        "-m",
        "memorybench",
        "run",
        "--model",
        "perfect-memory",
        "--tasks",
        "smoke",
        "--out",
        str(tmp_path / "dist"),
        "--device",
        "cpu",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    merged = tmp_path / "dist" / "perfect-memory"
    meta = load_run_json(merged)
    assert meta["run"]["merged_shards"] == 2 and [m["shard"] for m in meta["merged_from"]] == [[0, 2], [1, 2]]
    assert records(merged) == records(single)
    a, b = load_summary(merged), load_summary(single)
    assert a["complete"] and strip_timings(a)["groups"] == strip_timings(b)["groups"]


def test_shard_then_merge_equals_one(tmp_path, smoke_specs, single):
    for i in range(3):
        assert (
            main(
                [
                    "run",
                    "--model",
                    "perfect-memory",
                    "--tasks",
                    "smoke",
                    "--shard",
                    f"{i}/3",
                    "--out",
                    str(tmp_path / f"s{i}"),
                    "--device",
                    "cpu",
                ]
            )
            == 0
        )
    shards = [tmp_path / f"s{i}" / "perfect-memory" for i in range(3)]
    assert load_run_json(shards[1])["run"]["shard"] == [1, 3]
    out = merge(shards, tmp_path / "merged")
    assert records(out) == records(single)
    assert load_summary(out)["groups"] == load_summary(single)["groups"]


def test_missing_or_foreign_shard_blocks_merge(tmp_path, smoke_specs):
    base = dict(tasks=smoke_specs, progress=False, retention=False)
    s0 = evaluate(RunRequest(model="copy-last", out=tmp_path / "s0", shard=(0, 3), **base))
    s2 = evaluate(RunRequest(model="copy-last", out=tmp_path / "s2", shard=(2, 3), **base))
    with pytest.raises(MemorybenchError, match=r"shard\(s\) 1/3 missing"):
        merge([s0, s2], tmp_path / "m")
    assert not (tmp_path / "m").exists()
    assert main(["merge", str(s0), str(s2), "--out", str(tmp_path / "m2")]) == 2
    other = evaluate(RunRequest(model="mean-frame", out=tmp_path / "o1", shard=(1, 3), **base))
    with pytest.raises(DifferentRunError, match="not a shard of the same run"):
        merge([s0, other, s2], tmp_path / "m3")
    # an unfinished shard: remove one of its episode records
    s1 = evaluate(RunRequest(model="copy-last", out=tmp_path / "s1", shard=(1, 3), **base))
    next((s1 / "records").rglob("ep-*.jsonl")).unlink()
    with pytest.raises(MemorybenchError, match="unfinished"):
        merge([s0, s1, s2], tmp_path / "m4")


def test_shard_selection_is_a_partition(registry):
    from memorybench.runner import select_episodes

    spec = registry.get("occlusion-recall", "standard")
    parts = [select_episodes(spec, None, (i, 4)) for i in range(4)]
    assert sorted(sum(parts, [])) == list(range(spec.episodes))
    assert select_episodes(spec, 10, (1, 4)) == [1, 5, 9]
