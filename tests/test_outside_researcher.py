"""Issue 19: the outside researcher's path. Weights in the model's identity (resume refused when
they change), parameter counts found, model tracebacks kept, --limit N costing N episodes,
comparability explained in words, compare --tasks, score's output directory, environment
variables documented."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from memorybench import leaderboard as lb
from memorybench import storage
from memorybench.cli import main
from memorybench.hashing import file_sha256
from memorybench.references import reference_dir
from memorybench.results import DifferentRunError, RunDir, load_run_json, load_summary, read_events
from memorybench.runner import AdapterError, RunRequest, evaluate

ROOT = Path(__file__).parents[1]

PLUGIN = textwrap.dedent('''
    import os

    import torch
    import torch.nn as nn

    from memorybench.adapter import WorldModel


    class ConvWM(WorldModel):
        """copy-last through a 1x1 convolution; fails at episode MB_PLUGIN_FAIL (if set)."""

        name = "conv-wm"

        def __init__(self, checkpoint=None, weights_dir=None):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                self.net = nn.Conv2d(3, 3, 1)
            with torch.no_grad():
                self.net.weight.copy_(torch.eye(3)[:, :, None, None])
                self.net.bias.zero_()
            if checkpoint:
                self.net.load_state_dict(torch.load(checkpoint, weights_only=True))
            self.episode = -1

        def reset(self, spec, batch_size):
            self.episode += 1
            self.last = None

        def observe(self, frames, actions):
            self.last = frames[:, -1]

        def predict(self, actions):
            if os.environ.get("MB_PLUGIN_FAIL") == str(self.episode):
                raise RuntimeError("boom inside the model")
            return self.net(self.last).clamp(0, 1).unsqueeze(1)


    from memorybench.models.calibration import CopyLast


    class Imposter(CopyLast):
        """Another class that calls itself copy-last."""


    class Rule(WorldModel):
        """A model with nothing that identifies its weights."""

        name = "rule-wm"

        def reset(self, spec, batch_size):
            self.last = None

        def observe(self, frames, actions):
            self.last = frames[:, -1]

        def predict(self, actions):
            return self.last.unsqueeze(1)
''')


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    d = tmp_path / "plugin_src"
    d.mkdir()
    (d / "mb_outside_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(d))
    return "mb_outside_plugin"


def save_weights(path: Path, scale: float) -> Path:
    import torch

    torch.save({"weight": torch.eye(3)[:, :, None, None] * scale, "bias": torch.zeros(3)}, path)
    return path


def partial_run(out, plugin, spec, monkeypatch, **args) -> None:
    """Episode 0 finished, then the model raises in episode 1: a resumable partial run."""
    monkeypatch.setenv("MB_PLUGIN_FAIL", "1")
    with pytest.raises(AdapterError, match="boom inside the model"):
        evaluate(
            RunRequest(
                model=f"{plugin}:ConvWM",
                model_args=args,
                tasks=[spec],
                out=out,
                batch_size=1,
                limit=2,
                progress=False,
                retention=False,
                device="cpu",
            )
        )
    monkeypatch.delenv("MB_PLUGIN_FAIL")
    assert RunDir(out).done_episodes(spec.key, "rollout") == {0}


def resume(out, plugin, spec, **args):
    return evaluate(
        RunRequest(
            model=f"{plugin}:ConvWM",
            model_args=args,
            tasks=[spec],
            out=out,
            batch_size=1,
            limit=2,
            progress=False,
            retention=False,
            device="cpu",
            resume=True,
        )
    )


# -- 1. weights in the identity ---------------------------------------------------------------


def test_resume_refused_when_the_checkpoint_file_changed(tmp_path, plugin, registry, monkeypatch):
    spec = registry.get("occlusion-recall", "smoke")
    ckpt = save_weights(tmp_path / "ckpt.pt", 0.9)
    out = tmp_path / "run"
    partial_run(out, plugin, spec, monkeypatch, checkpoint=str(ckpt))
    meta = load_run_json(out)
    (entry,) = [w for w in meta["model"]["weights"] if w["source"] == "argument checkpoint"]
    old = file_sha256(ckpt)
    assert entry["sha256"] == old and entry["type"] == "file"
    save_weights(ckpt, 0.5)  # "trained" in between
    new = file_sha256(ckpt)
    with pytest.raises(DifferentRunError) as e:
        resume(out, plugin, spec, checkpoint=str(ckpt))
    msg = str(e.value)
    assert "argument checkpoint" in msg and old[:12] in msg and new[:12] in msg and str(ckpt) in msg
    assert RunDir(out).done_episodes(spec.key, "rollout") == {0}  # nothing was mixed in
    save_weights(ckpt, 0.9)  # the original weights again: the same model, resumable
    assert load_summary(resume(out, plugin, spec, checkpoint=str(ckpt)))["complete"]


def test_resume_refused_when_a_weights_directory_changed(tmp_path, plugin, registry, monkeypatch):
    spec = registry.get("occlusion-recall", "smoke")
    wdir = tmp_path / "weights"
    (wdir / "sub").mkdir(parents=True)
    (wdir / "a.bin").write_bytes(b"\x00" * 64)
    (wdir / "sub" / "b.bin").write_bytes(b"\x01" * 32)
    out = tmp_path / "run"
    partial_run(out, plugin, spec, monkeypatch, weights_dir=str(wdir))
    (entry,) = [w for w in load_run_json(out)["model"]["weights"] if w["source"] == "argument weights_dir"]
    assert entry["type"] == "directory" and entry["files"] == 2 and entry["bytes"] == 96
    (wdir / "sub" / "b.bin").write_bytes(b"\x02" * 32)  # one file's bytes
    with pytest.raises(DifferentRunError, match=r"argument weights_dir: directory .*weights SHA-256"):
        resume(out, plugin, spec, weights_dir=str(wdir))
    (wdir / "sub" / "b.bin").write_bytes(b"\x01" * 32)
    (wdir / "c.bin").write_bytes(b"")  # an added file changes the hash too
    with pytest.raises(DifferentRunError, match="argument weights_dir"):
        resume(out, plugin, spec, weights_dir=str(wdir))
    (wdir / "c.bin").unlink()
    assert load_summary(resume(out, plugin, spec, weights_dir=str(wdir)))["complete"]


def test_run_json_records_the_parameters_of_held_modules(tmp_path, plugin, registry):
    spec = registry.get("scene-retrieval", "smoke")
    d = evaluate(
        RunRequest(
            model=f"{plugin}:ConvWM",
            tasks=[spec],
            out=tmp_path / "r",
            limit=1,
            progress=False,
            retention=False,
            device="cpu",
        )
    )
    model = load_run_json(d)["model"]
    assert model["parameters"] == 3 * 3 + 3  # the 1x1 convolution, found on the adapter's attribute
    (mods,) = model["weights"]
    assert mods["type"] == "modules" and mods["modules"] == ["net"] and mods["parameters"] == 12


def test_undeclared_weights_are_recorded_and_marked(tmp_path, plugin, registry):
    spec = registry.get("scene-retrieval", "smoke")
    rule = evaluate(
        RunRequest(
            model=f"{plugin}:Rule",
            tasks=[spec],
            out=tmp_path / "rule",
            limit=1,
            progress=False,
            retention=False,
            device="cpu",
        )
    )
    copy = evaluate(
        RunRequest(
            model="copy-last",
            tasks=[spec],
            out=tmp_path / "copy",
            limit=1,
            progress=False,
            retention=False,
            device="cpu",
        )
    )
    assert load_run_json(rule)["model"]["weights"] == "undeclared"
    assert load_run_json(copy)["model"]["weights"] == "none"  # calibration baselines declare learned = False
    board = lb.build(lb.load_runs([rule, copy]))
    md = lb.to_markdown(board)
    row = next(line for line in md.splitlines() if line.startswith("| rule-wm"))
    assert "‡" in row and "‡ rule-wm ‡: weights undeclared" in md
    assert not any(line.startswith("| copy-last ‡") for line in md.splitlines())
    assert "weights undeclared" in lb.to_html(board) and "weights undeclared" in lb.to_latex(board)


def test_zoo_checkpoint_is_in_the_identity():
    from memorybench.models import load_model

    m = load_model("s4")
    ident = m.identity()
    card = json.loads((ROOT / "baselines" / "s4" / "card.json").read_text())
    sources = {w["source"]: w for w in ident["weights"]}
    assert sources["declared"]["sha256"] == card["checkpoint"]["sha256"] == ident["checkpoint_sha256"]
    assert ident["parameters"] == card["parameters"] == sources["modules"]["parameters"]


def test_one_name_per_model_whatever_the_route(plugin):
    from memorybench.errors import MemorybenchError
    from memorybench.models import BUILTIN_MODELS, model_name, resolve
    from memorybench.runner import run_dir_name, run_dir_names

    for name, target in BUILTIN_MODELS.items():  # built-ins declare their registry name
        assert resolve(name).name == name and model_name(target) == name and run_dir_name(target) == name
    assert run_dir_name(f"{plugin}:ConvWM") == "conv-wm"
    with pytest.raises(MemorybenchError, match="both call themselves 'copy-last'"):
        run_dir_names(["copy-last", f"{plugin}:Imposter"])


# -- 3. model failures --------------------------------------------------------------------------


def test_model_exception_leaves_its_traceback_in_the_run_directory(tmp_path, plugin, registry, monkeypatch, capsys):
    spec = registry.get("occlusion-recall", "smoke")
    out = tmp_path / "runs"
    monkeypatch.setenv("MB_PLUGIN_FAIL", "1")
    code = main(
        [
            "run",
            "--model",
            f"{plugin}:ConvWM",
            "--tasks",
            spec.key,
            "--batch-size",
            "1",
            "--limit",
            "2",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--no-retention",
            "--debug",
        ]
    )
    assert code == 3
    err = capsys.readouterr().err
    run_dir = out / "conv-wm"
    (tb,) = sorted((run_dir / "errors").glob("*.txt"))
    text = tb.read_text()
    assert re.match(r"\d{8}-\d{6}-occlusion-recall@smoke-rollout-ep1-predict\.txt", tb.name)
    assert "Traceback (most recent call last)" in text and "RuntimeError: boom inside the model" in text
    assert "mb_outside_plugin.py" in text and "in predict" in text  # the model's own frame
    (event,) = [e for e in read_events(run_dir) if e["event"] == "error"]
    assert event["traceback"] == f"errors/{tb.name}" and "boom inside the model" in event["error"]
    flat = " ".join(err.split())
    assert "boom inside the model" in flat and tb.name in flat  # the one-line message says where it is
    assert "Traceback (most recent call last)" in err  # --debug printed it
    # without --debug only the one line (with the path) is printed
    monkeypatch.setenv("MB_PLUGIN_FAIL", "0")  # the resumed run's first batch is episode 1
    code = main(
        [
            "run",
            "--model",
            f"{plugin}:ConvWM",
            "--tasks",
            spec.key,
            "--batch-size",
            "1",
            "--limit",
            "2",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--no-retention",
            "--resume",
        ]
    )
    err = capsys.readouterr().err
    assert code == 3 and "Traceback" not in err and "errors/" in " ".join(err.split())


# -- 4. --limit N costs N episodes --------------------------------------------------------------


def test_limit_generates_and_evaluates_only_the_selected_episodes(tmp_path, registry, monkeypatch):
    monkeypatch.setenv("MEMORYBENCH_CACHE", str(tmp_path / "cache"))  # an empty cache
    spec = registry.get("occlusion-recall", "smoke")
    assert spec.episodes > 3
    d = evaluate(
        RunRequest(model="copy-last", tasks=[spec], out=tmp_path / "two", limit=2, progress=False, device="cpu")
    )
    man = json.loads((storage.dataset_dir(spec) / "manifest.json").read_text())
    assert [e["index"] for e in man["episodes"]] == [0, 1] and not man["complete"]
    for ref in ("copy-last", "perfect-memory"):  # the references ran on those 2 episodes only
        rdir = reference_dir(ref, spec, "rollout")
        assert RunDir(rdir).done_episodes(spec.key, "rollout") == {0, 1}
    meta = load_run_json(d)
    (t,) = meta["tasks"]
    assert t["episodes_selected"] == [0, 1] and len(t["episodes_sha256"]) == 2
    assert load_summary(d)["groups"][f"{spec.key}/rollout"]["retention"]["retention"]["mean"] == pytest.approx(0.0)
    first_shard = man["episodes"][0]["shard"]
    # a later run that asks for more generates only what is missing
    calls = []
    res = storage.prepare(spec, episodes=range(3), on_generate=calls.append)
    assert calls == [1] and res.generated == [2]
    man = json.loads((storage.dataset_dir(spec) / "manifest.json").read_text())
    assert [e["shard"] for e in man["episodes"][:2]] == [first_shard] * 2 and man["episodes"][2]["shard"] != first_shard
    # the whole tier, completed piece by piece, is byte-for-byte the dataset generated in one go
    full = evaluate(
        RunRequest(model="copy-last", tasks=[spec], out=tmp_path / "all", progress=False, device="cpu", retention=False)
    )
    whole = storage.open_store(storage.write(spec, tmp_path / "one-go"), spec, deep=True)
    assert load_run_json(full)["tasks"][0]["dataset_sha256"] == whole.dataset_hash
    store = storage.prepare(spec).store
    assert (
        store.complete
        and store.dataset_hash == whole.dataset_hash
        and store.manifest["dataset_sha256"] == whole.dataset_hash
    )
    # and the 2-episode run's data hash is the hash of those 2 episodes of it
    assert t["dataset_sha256"] == whole.selection_hash([0, 1])


def test_legacy_single_dataset_directory_is_read_as_one_shard(tmp_path, registry):
    """A cache written before shards existed (one dataset at the top level) is reused, not regenerated."""
    spec = registry.get("scene-retrieval", "smoke")
    path = storage.write(spec, tmp_path / "ds")
    man = json.loads((path / "manifest.json").read_text())
    (shard,) = {e["shard"] for e in man["episodes"]}
    for f in (path / shard).iterdir():  # move the shard's files to the top, as the old layout had them
        f.rename(path / f.name)
    for e in man["episodes"]:
        del e["shard"], e["row"]
    (path / "manifest.json").write_text(json.dumps(man))
    import shutil

    shutil.rmtree(path / "shards")
    res = storage.prepare(spec, out=path, episodes=[1, 2])
    assert res.reused and res.store[2].sha256() == man["episodes"][2]["sha256"]
    assert storage.verify(path, spec) == []


# -- 5. comparability in words ----------------------------------------------------------------


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory, registry):
    root = tmp_path_factory.mktemp("small")
    occ, scene = registry.get("occlusion-recall", "smoke"), registry.get("scene-retrieval", "smoke")
    out = {}
    for name, model, tasks, limit in (
        ("base", "copy-last", [occ, scene], 1),
        ("one-task", "copy-last", [occ], 1),
        ("mean", "mean-frame", [occ, scene], 1),
        ("mean2", "mean-frame", [occ], 2),
    ):
        out[name] = evaluate(
            RunRequest(
                model=model, tasks=tasks, out=root / name, limit=limit, progress=False, retention=False, device="cpu"
            )
        )
    return out


def test_leaderboard_refusal_says_what_differs_and_how_to_match(small_runs):
    with pytest.raises(lb.IncomparableRunsError) as e:
        lb.build(lb.load_runs([small_runs["base"], small_runs["mean2"]]))
    msg = " ".join(str(e.value).split())
    assert "evaluates 1 episode (0)" in msg and "2 episodes (0-1)" in msg and "run with --limit 1" in msg
    assert "--split" in msg
    board = lb.build(lb.load_runs([small_runs["base"], small_runs["mean2"]]), split=True)
    cols = board.columns("rollout")
    assert "occlusion-recall@smoke [1 episode (0)]" in cols and "occlusion-recall@smoke [2 episodes (0-1)]" in cols
    md = lb.to_markdown(board)
    assert "occlusion-recall@smoke [2 episodes (0-1)]: 2 episodes (0-1); spec" in md  # the legend


def test_resume_refusal_says_what_differs(small_runs, registry):
    occ = registry.get("occlusion-recall", "smoke")
    with pytest.raises(DifferentRunError) as e:
        evaluate(
            RunRequest(
                model="copy-last",
                tasks=[occ],
                out=small_runs["one-task"],
                limit=2,
                resume=True,
                progress=False,
                retention=False,
                device="cpu",
            )
        )
    msg = " ".join(str(e.value).split())
    assert "on disk evaluates 1 episode (0), requested 2 episodes (0-1)" in msg and "--limit 1" in msg
    with pytest.raises(DifferentRunError, match="model name 'copy-last' \\(on disk\\) vs 'mean-frame'"):
        evaluate(
            RunRequest(
                model="mean-frame",
                tasks=[occ],
                out=small_runs["one-task"],
                limit=1,
                resume=True,
                progress=False,
                retention=False,
                device="cpu",
            )
        )


def test_compare_refusal_in_words(small_runs, tmp_path):
    import shutil

    from memorybench.compare import compare

    other = tmp_path / "v2"
    shutil.copytree(small_runs["base"], other)
    meta = json.loads((other / "run.json").read_text())
    meta["metrics"]["version"] = 99
    (other / "run.json").write_text(json.dumps(meta))
    with pytest.raises(lb.IncomparableRunsError, match=r"metric definitions v\d+ \(the baseline\) vs v99"):
        compare(small_runs["base"], other)


# -- 6. compare --tasks, score --out, re-scored runs in a leaderboard ----------------------------


def test_compare_gates_on_a_subset_of_tasks(small_runs, capsys):
    base, cur = str(small_runs["base"]), str(small_runs["one-task"])
    assert main(["compare", base, cur]) == 4
    assert "scene-retrieval@smoke is in the baseline but not in the current run" in " ".join(
        capsys.readouterr().err.split()
    )
    assert main(["compare", base, cur, "--tasks", "occlusion-recall@smoke"]) == 0
    assert main(["compare", base, cur, "--tasks", "occlusion-recall"]) == 0  # a bare name: every tier in the run
    out = capsys.readouterr().out
    assert "occlusion-recall@smoke" in out and "scene-retrieval" not in out
    assert main(["compare", base, cur, "--tasks", "occlusion-recal"]) == 2
    assert "Did you mean 'occlusion-recall@smoke'" in capsys.readouterr().err
    # different models: compared all the same, with a warning
    main(["compare", base, str(small_runs["mean"])])
    assert "different models" in capsys.readouterr().err
    main(["compare", base, base])
    assert "different models" not in capsys.readouterr().err


def test_score_writes_where_told_and_leaderboard_names_a_rescored_copy(tmp_path, registry, monkeypatch, capsys):
    spec = registry.get("scene-reasoning", "smoke")
    monkeypatch.chdir(tmp_path)
    run = evaluate(
        RunRequest(
            model="copy-last",
            tasks=[spec],
            out=tmp_path / "runs" / "std" / "copy-last",
            limit=1,
            save_predictions=True,
            progress=False,
            retention=False,
            device="cpu",
        )
    )
    assert main(["score", str(run), "--no-retention", "--device", "cpu"]) == 0
    (default,) = (tmp_path / "rescored").glob("*/copy-last")  # rescored/<date-time>/<run name>
    assert load_run_json(default)["rescored_from"] == str(run.resolve())
    assert sorted(p.name for p in (tmp_path / "runs" / "std").iterdir()) == ["copy-last"]  # nothing beside the run
    assert main(["score", str(run), "--out", str(tmp_path / "mine"), "--no-retention", "--device", "cpu"]) == 0
    assert (tmp_path / "mine" / "run.json").exists()
    capsys.readouterr()
    assert main(["leaderboard", str(tmp_path / "runs" / "std"), str(default)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "is a re-scored copy (`memorybench score`) of the other" in err and "merge" not in err


# -- 7. environment variables -------------------------------------------------------------------


def test_every_environment_variable_read_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Environment variables and files")[1].split("\n## ")[0]
    names = set()
    pat = re.compile(
        r"""environ(?:\.get|\.setdefault)?\(?\[?\s*["']([A-Z][A-Z0-9_]+)["']|["']([A-Z][A-Z0-9_]+)["']\s+(?:not\s+)?in\s+os\.environ"""
    )
    for f in (ROOT / "memorybench").rglob("*.py"):
        for a, b in pat.findall(f.read_text()):
            names.add(a or b)
    assert {
        "MEMORYBENCH_CACHE",
        "MEMORYBENCH_WEIGHTS_DIR",
        "MEMORYBENCH_TASKS_DIR",
        "MUJOCO_GL",
        "XDG_CACHE_HOME",
    } <= names
    missing = sorted(n for n in names if f"`{n}`" not in section)
    assert not missing, f"environment variables read by memorybench but not in the README's table: {missing}"
    assert "safe to wipe" in section
