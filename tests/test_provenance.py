"""Issue 17, provenance and data safety: verified reference records, the run-directory lock,
timings that survive a resume, model cards that guard shipped checkpoints, git provenance of
memorybench's own install only, and the XDG cache directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memorybench import storage
from memorybench.errors import MemorybenchError
from memorybench.references import ReferenceCacheWarning, reference_dir
from memorybench.results import RunDir, git_info, load_summary, read_events
from memorybench.runner import AdapterError, RunLockedError, RunRequest, evaluate, lock_run_dir
from memorybench.summarize import summarize_run

ROOT = Path(__file__).parents[1]
TESTS = Path(__file__).parent


@pytest.fixture(autouse=True)
def _test_models_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))


def retention(run_dir: Path, key: str) -> float:
    return load_summary(run_dir)["groups"][key]["retention"]["retention"]["mean"]


def test_a_deleted_or_edited_reference_record_is_recomputed_never_used(tmp_path, registry, monkeypatch):
    monkeypatch.setenv("MEMORYBENCH_CACHE", str(tmp_path / "cache"))
    spec = registry.get("scene-retrieval", "smoke")
    key = f"{spec.key}/rollout"
    d = evaluate(
        RunRequest(model="mean-frame", tasks=[spec], out=tmp_path / "run", limit=2, progress=False, device="cpu")
    )
    good = retention(d, key)
    ref = RunDir(reference_dir("copy-last", spec, "rollout"))
    record = ref.record_path(spec.key, "rollout", 1)
    original = record.read_bytes()
    # a deleted record
    record.unlink()
    with pytest.warns(ReferenceCacheWarning, match="episode 1: record file missing"):
        summarize_run(d, device="cpu")
    assert retention(d, key) == good and record.read_bytes() == original
    # an edited record: the copy-last error made smaller, which would change the index
    rows = [json.loads(line) for line in original.decode().splitlines()]
    for r in rows:
        if r.get("psnr_memory") is not None:
            r["psnr_memory"] += 3.0
    record.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.warns(ReferenceCacheWarning, match="episode 1: record file altered"):
        summarize_run(d, device="cpu")
    assert retention(d, key) == good and record.read_bytes() == original
    # a manifest of another reference (or an older cache layout) is not trusted either
    man = json.loads((ref.path / "reference.json").read_text())
    man["identity_hash"] = "0" * 64
    (ref.path / "reference.json").write_text(json.dumps(man))
    with pytest.warns(ReferenceCacheWarning, match="identity_hash"):
        summarize_run(d, device="cpu")
    assert retention(d, key) == good


def test_two_runs_cannot_write_into_one_directory(tmp_path, registry):
    spec = registry.get("occlusion-recall", "smoke")
    out = tmp_path / "run"
    with lock_run_dir(out):  # another process's run holds the directory
        with pytest.raises(RunLockedError, match="being written by another memorybench run .*pid"):
            evaluate(
                RunRequest(
                    model="copy-last", tasks=[spec], out=out, limit=1, progress=False, retention=False, device="cpu"
                )
            )
    assert not (out / "run.json").exists()  # the refused run wrote nothing
    assert load_summary(
        evaluate(
            RunRequest(model="copy-last", tasks=[spec], out=out, limit=1, progress=False, retention=False, device="cpu")
        )
    )["complete"]


def test_a_racing_second_process_is_refused(tmp_path, registry):
    """Two processes, the same directory, both with --resume (the race the lock exists for)."""
    spec = registry.get("occlusion-recall", "smoke")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "runs"
    cmd = [
        sys.executable,
        "-m",
        "memorybench",
        "run",
        "--model",
        "mb_test_models:Slow",
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
    first = subprocess.Popen(
        cmd + ["--model-args", "delay=1.0"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )  # 64 s of work: it holds the directory throughout
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not (out / "slow" / "run.json").exists():
            time.sleep(0.1)
        assert (out / "slow" / "run.json").exists()
        second = subprocess.run(
            cmd + ["--model-args", "delay=1.0", "--resume"], env=env, capture_output=True, text=True, timeout=300
        )
        assert first.poll() is None, "the first run should still be running"
        assert second.returncode == 2 and "being written by another memorybench run" in " ".join(second.stderr.split())
    finally:
        first.kill()
        first.wait()
    events = read_events(out / "slow")
    assert [e["event"] for e in events].count("resume") == 0  # the second process never got in


def test_summary_timings_survive_a_resume(tmp_path, registry, monkeypatch):
    spec = registry.get("occlusion-recall", "smoke")
    out = tmp_path / "faulty"
    req = dict(
        model="mb_test_models:Faulty",
        tasks=[spec],
        out=out,
        batch_size=1,
        progress=False,
        retention=False,
        device="cpu",
    )
    monkeypatch.setenv("MB_FAULT", "raise")
    with pytest.raises(AdapterError):
        evaluate(RunRequest(**req))
    monkeypatch.delenv("MB_FAULT")
    evaluate(RunRequest(**req, resume=True))
    tm = load_summary(out)["timings"][f"{spec.key}/rollout"]
    assert tm["episodes"] == spec.episodes and tm["sessions"] == 2
    assert tm["model_seconds"] > 0 and tm["wall_seconds"] >= tm["model_seconds"]
    batches = [e for e in read_events(out) if e["event"] == "batch_done"]
    assert sorted(i for e in batches for i in e["episodes"]) == list(range(spec.episodes))


def test_a_shipped_checkpoint_that_differs_from_its_model_card_is_refused(tmp_path, monkeypatch):
    from memorybench.models import load_model
    from memorybench.zoo import common

    shipped = ROOT / "baselines" / "s4"
    fake = tmp_path / "baselines" / "s4"
    fake.mkdir(parents=True)
    shutil.copy(shipped / "card.json", fake / "card.json")
    data = bytearray((shipped / "model.safetensors").read_bytes())
    data[-1000] ^= 0x01  # one bit of one weight: the file still loads
    (fake / "model.safetensors").write_bytes(bytes(data))
    monkeypatch.setattr(common, "baselines_dir", lambda: tmp_path / "baselines")
    with pytest.raises(MemorybenchError, match="does not match its model card .*damaged or was replaced"):
        load_model("s4")
    with pytest.raises(MemorybenchError, match="does not match its model card"):
        load_model("s4", {"checkpoint": str(fake / "model.safetensors")})
    shutil.copy(shipped / "model.safetensors", fake / "model.safetensors")
    assert load_model("s4").checkpoint_path() == (fake / "model.safetensors").resolve()


def _git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    return subprocess.run(
        ["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_provenance_is_memorybench_s_own(tmp_path):
    # a wheel installed in a virtual environment inside the user's repository: no commit
    user = tmp_path / "user-project"
    pkg = user / ".venv" / "lib" / "python3.11" / "site-packages" / "memorybench"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (user / "train.py").write_text("print(1)\n")
    _git(user, "init", "-q")
    _git(user, "add", "train.py")
    _git(user, "commit", "-qm", "user's work")
    info = git_info(pkg)
    assert info["source"] == "installed" and info["commit"] is None and info["version"]
    # a source checkout of memorybench itself: its commit
    src = tmp_path / "memorybench-src"
    (src / "memorybench").mkdir(parents=True)
    (src / "memorybench" / "__init__.py").write_text("")
    (src / "pyproject.toml").write_text('[project]\nname = "memorybench"\n')
    _git(src, "init", "-q")
    _git(src, "add", ".")
    _git(src, "commit", "-qm", "memorybench")
    info = git_info(src / "memorybench")
    assert info["source"] == "checkout" and info["commit"] == _git(src, "rev-parse", "HEAD") and info["dirty"] is False
    # another project's package directory in a repository is not memorybench's checkout
    other = tmp_path / "other"
    (other / "memorybench").mkdir(parents=True)
    (other / "pyproject.toml").write_text('[project]\nname = "somethingelse"\n')
    _git(other, "init", "-q")
    assert git_info(other / "memorybench")["commit"] is None


def test_the_cache_honours_xdg_cache_home(tmp_path, monkeypatch):
    from memorybench.lpips_weights import weights_dir

    monkeypatch.delenv("MEMORYBENCH_CACHE", raising=False)
    monkeypatch.delenv("MEMORYBENCH_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert storage.cache_root() == tmp_path / "xdg" / "memorybench"
    assert weights_dir() == tmp_path / "xdg" / "memorybench" / "weights"
    monkeypatch.setenv("MEMORYBENCH_CACHE", str(tmp_path / "mine"))  # MEMORYBENCH_CACHE first
    assert storage.cache_root() == tmp_path / "mine"
    monkeypatch.delenv("MEMORYBENCH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # not absolute: ignored, as the spec says
    assert storage.cache_root() == Path.home() / ".cache" / "memorybench"


def test_temporaries_of_a_killed_generation_are_removed_by_the_next(tmp_path, registry):
    spec = registry.get("scene-retrieval", "smoke")
    path = tmp_path / "ds"
    storage.prepare(spec, out=path, episodes=[0])
    leftovers = [path / ".tmp-killed" / "build", tmp_path / ".ds.tmp-killed" / "data", tmp_path / "ds.old-123"]
    for d in leftovers:
        d.mkdir(parents=True)
        (d / "x.arrow").write_bytes(b"partial")
    assert storage.prepare(spec, out=path, episodes=[0, 1]).generated == [1]
    assert not any(d.exists() for d in leftovers)
    assert storage.verify(path, spec, episodes=[0, 1]) == []
