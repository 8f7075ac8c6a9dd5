"""docs/adapters.md cannot rot: its example package is extracted and run end to end through both
plugin routes, its action-width table is checked against the task registry, and the call sequence
it documents is the one the runner makes."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from memorybench.hashing import file_sha256
from memorybench.results import load_run_json, load_summary

ROOT = Path(__file__).parents[1]
TESTS = Path(__file__).parent
GUIDE = ROOT / "docs" / "adapters.md"


def guide() -> str:
    return GUIDE.read_text(encoding="utf-8")


def example_files(text: str) -> dict[str, str]:
    return dict(re.findall(r"<!-- example-file: (\S+) -->\n```\w*\n(.*?)```", text, re.S))


def example_commands(text: str) -> list[str]:
    block = re.search(r"<!-- example-run -->\n```\w*\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def install_without_pip(files: dict[str, str], root: Path) -> dict[str, str]:
    """Write the package, and register its entry points as pip would: a ``.dist-info`` directory
    (METADATA + entry_points.txt, from the package's pyproject.toml) on the path. Returns the
    environment to run it in."""
    src = root / "src"
    for rel, body in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(body, encoding="utf-8")
    project = tomllib.loads(files["pyproject.toml"])["project"]
    dist = root / "site" / f"{project['name']}-{project['version']}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    lines = []
    for group, eps in project.get("entry-points", {}).items():
        lines.append(f"[{group}]")
        lines += [f"{k} = {v}" for k, v in eps.items()]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    path = os.pathsep.join([str(root / "site"), str(src), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


def test_guide_example_package_runs_end_to_end(tmp_path):
    text = guide()
    files = example_files(text)
    assert set(files) == {"pyproject.toml", "tinywm/__init__.py", "tinywm/adapter.py"}
    env = install_without_pip(files, tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    commands = example_commands(text)
    assert any("--model tiny-wm" in c for c in commands) and any("tinywm.adapter:TinyWM" in c for c in commands)
    for cmd in commands:
        argv = shlex.split(cmd)
        argv = [sys.executable, *argv[1:]] if argv[0] == "python" else [sys.executable, "-m", "memorybench", *argv[1:]]
        proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    ckpt = file_sha256(work / "tiny.pt")
    metas = []
    for route in ("ep", "path"):  # the entry point and module:Class: one run-directory name, the declared one
        d = work / "runs" / route / "tiny-wm"
        meta = load_run_json(d)
        metas.append(meta)
        assert meta["model"]["name"] == "tiny-wm" and load_summary(d)["complete"]
        weights = {w["source"]: w for w in meta["model"]["weights"]}
        assert weights["argument checkpoint"]["sha256"] == ckpt
        assert weights["modules"]["modules"] == ["net"] and len(weights["modules"]["sha256"]) == 64
        assert "tinywm" in meta["model"]["citation"]
    assert metas[0]["model"]["identity_hash"] == metas[1]["model"]["identity_hash"]
    stated = int(re.search(r"parameter count\s+\(([\d,]+)\)", text).group(1).replace(",", ""))
    assert metas[0]["model"]["parameters"] == stated > 0


def test_action_width_table_matches_the_registry(registry):
    block = guide().split("<!-- action-widths:start -->")[1].split("<!-- action-widths:end -->")[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in block.strip().splitlines()[2:]]
    table = {(r[0], r[1]): r[2:] for r in rows}
    expected = {}
    for spec in registry.all_specs():
        nvec = spec.action_space.nvec
        expected[(spec.name, spec.tier)] = [
            str(len(nvec)),
            ", ".join(map(str, nvec)),
            f"{spec.resolution[0]}x{spec.resolution[1]}",
            f"{spec.frames} ({spec.context_frames} + {spec.predict_frames})",
            ", ".join(spec.protocols),
        ]
    assert table == expected, "docs/adapters.md's action-width table differs from the task registry: update it"


@pytest.mark.parametrize("protocol", ["rollout", "teacher-forced"])
def test_call_sequence_is_the_documented_one(tmp_path, registry, monkeypatch, protocol):
    from memorybench.runner import RunRequest, evaluate
    from memorybench.storage import prepare

    monkeypatch.syspath_prepend(str(TESTS))
    import mb_test_models

    assert RunRequest.__dataclass_fields__["context_chunk"].default == 128  # the documented chunk size
    spec = registry.get("occlusion-recall", "smoke")
    C, T = spec.context_frames, spec.frames
    log = mb_test_models.Recorder.log
    log.clear()
    evaluate(
        RunRequest(
            model="mb_test_models:Recorder",
            tasks=[spec],
            out=tmp_path / "r",
            protocols=(protocol,),
            batch_size=3,
            limit=3,
            context_chunk=24,
            device="cpu",
            progress=False,
            retention=False,
        )
    )
    assert log[0] == ("to", "cpu")  # to() first, once
    assert sum(1 for e in log if e[0] == "to") == 1
    resets = [i for i, e in enumerate(log) if e[0] == "reset"]
    assert [log[i][1:] for i in resets] == [(spec.key, 3, "cpu")]  # one batch of 3 episodes; device set before
    calls = log[resets[0] + 1 :]
    chunks = [e for e in calls[:3] if e[0] == "observe"]
    assert [e[1] for e in chunks] == [24, 24, 16]  # the context in chunks of at most context_chunk frames
    store = prepare(spec, episodes=[0, 1, 2]).store
    truth = np.stack([store[i].frames for i in range(3)])  # [B, T, H, W, 3]
    actions = np.stack([store[i].actions for i in range(3)])
    context = np.concatenate([e[5].numpy() for e in chunks], 1)
    assert chunks[0][2] == "torch.float32" or str(chunks[0][2]) == "torch.float32"
    assert np.array_equal((context * 255).round().astype(np.uint8), truth[:, :C].transpose(0, 1, 4, 2, 3))
    assert np.array_equal(np.concatenate([e[6].numpy() for e in chunks], 1), actions[:, :C])
    rest = calls[3:]
    assert len(rest) == 2 * (T - C)
    for k, t in enumerate(range(C, T)):
        pred, obs = rest[2 * k], rest[2 * k + 1]
        assert pred[0] == "predict" and pred[1] == 1 and str(pred[2]) == "torch.int64"
        assert np.array_equal(pred[3].numpy()[:, 0], actions[:, t])  # actions[t]: the move from frame t-1 to t
        assert obs[0] == "observe" and obs[1] == 1 and np.array_equal(obs[6].numpy()[:, 0], actions[:, t])
        if protocol == "rollout":
            assert obs[4]  # the very tensor predict returned
        else:
            assert not obs[4]
            got = (obs[5].numpy()[:, 0] * 255).round().astype(np.uint8)
            assert np.array_equal(got, truth[:, t].transpose(0, 3, 1, 2))
