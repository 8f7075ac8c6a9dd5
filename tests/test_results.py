"""The committed results/: regenerated from the committed run summaries, they must not differ
(no hand edits), the README must show the same table, and the CI gate baseline must pass."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from memorybench.cli import main
from memorybench.zoo import ZOO_MODELS

ROOT = Path(__file__).parents[1]
RESULTS = ROOT / "results"
RUNS = RESULTS / "runs" / "standard"

pytestmark = pytest.mark.skipif(not RUNS.is_dir(), reason="no committed results/runs/standard yet")


def regenerate(tmp_path, monkeypatch) -> Path:
    """The documented command, run from the repository root (the files record run paths as given)."""
    monkeypatch.chdir(ROOT)
    args = ["report", str(RUNS.relative_to(ROOT)), "--out", str(tmp_path)]
    for prof in sorted((RESULTS / "profiles").glob("*.json")):
        args += ["--profile", str(prof.relative_to(ROOT))]
    assert main(args) == 0
    return tmp_path


def test_committed_leaderboard_is_regenerated_exactly(tmp_path, monkeypatch):
    new = regenerate(tmp_path / "out", monkeypatch)
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.tex", "leaderboard.json"):
        assert (RESULTS / name).read_text() == (new / name).read_text(), f"results/{name} differs from its regeneration"
    # the HTML embeds figures whose PNG bytes depend on the matplotlib build: compare it without them
    strip = lambda t: re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:image/png;base64,…", t)  # noqa: E731
    assert strip((RESULTS / "leaderboard.html").read_text()) == strip((new / "leaderboard.html").read_text())
    committed = sorted(p.name for p in (RESULTS / "figures").iterdir())
    assert committed == sorted(p.name for p in (new / "figures").iterdir())


def test_readme_shows_the_committed_table():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- leaderboard:start -->")[1].split("<!-- leaderboard:end -->")[0].strip()
    table = (RESULTS / "leaderboard.md").read_text()
    for line in block.splitlines():
        if line.startswith("|"):
            assert line in table, f"README table line not in results/leaderboard.md: {line[:80]}"


# The committed runs keep their per-frame records (results/runs/standard/main/<model>/records/...):
# re-running the shipped checkpoint on episode 0 must give the recorded metrics. The committed run
# was evaluated 8 episodes at a time and this one alone, so float rounding may move a few pixels by
# one 8-bit level: a tolerance far below any model gap.
CHECKED_GROUP = ("occlusion-recall", "rollout")
TOLERANCE = {"psnr": 0.05, "ssim": 2e-3, "lpips": 2e-3, "mse": 1e-4}


@pytest.mark.parametrize("model", ZOO_MODELS)
def test_shipped_checkpoint_reproduces_its_committed_records(model, tmp_path):
    import json

    from memorybench.results import RunDir, load_run_json
    from memorybench.runner import RunRequest, evaluate
    from memorybench.tasks import get_task

    committed_dir = RUNS / "main" / model
    meta = load_run_json(committed_dir)
    card = json.loads((ROOT / "baselines" / model / "card.json").read_text())
    # the committed results were produced by the shipped weights, and those are what loads by name
    assert meta["model"]["checkpoint_sha256"] == card["checkpoint"]["sha256"]
    task, protocol = CHECKED_GROUP
    spec = get_task(task, "standard")
    committed = RunDir(committed_dir).record_path(spec.key, protocol, 0)
    assert committed.exists(), f"{committed} is not committed"
    out = evaluate(
        RunRequest(
            model=model,
            tasks=[spec],
            out=tmp_path / model,
            protocols=(protocol,),
            device="cpu",
            batch_size=1,
            limit=1,
            retention=False,
            progress=False,
        )
    )
    new = RunDir(out).record_path(spec.key, protocol, 0)
    old_rows = [json.loads(line) for line in committed.read_text().splitlines()]
    new_rows = [json.loads(line) for line in new.read_text().splitlines()]
    assert [r["frame"] for r in new_rows] == [r["frame"] for r in old_rows]
    for old, new_ in zip(old_rows, new_rows):
        for key, value in old.items():
            base = key.split("_")[0]
            if base in TOLERANCE and isinstance(value, float):
                assert new_[key] == pytest.approx(value, abs=TOLERANCE[base], nan_ok=True), (model, old["frame"], key)
            elif isinstance(value, float) and math.isnan(value):  # no memory pixels in that frame
                assert isinstance(new_[key], float) and math.isnan(new_[key]), (model, old["frame"], key)
            else:
                assert new_[key] == value, (model, old["frame"], key)


@pytest.mark.parametrize("model", ["copy-last"])
def test_gate_baseline_passes_on_this_machine(tmp_path, model):
    """What .github/workflows/memory-gate.yml does, with the committed smoke baseline."""
    base = RESULTS / "gate" / model
    assert (base / "run.json").exists() and (base / "summary.json").exists()
    import yaml

    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "memory-gate.yml").read_text())
    tasks = wf["env"]["TASKS"]
    assert main(["run", "--model", model, "--tasks", tasks, "--device", "cpu", "--out", str(tmp_path)]) == 0
    assert main(["compare", str(base), str(tmp_path / model)]) == 0


def test_extra_runs_never_reorder_the_columns():
    """Runs on a few tasks (the references' maze-standard runs, diffusion's scene run) add their
    columns after those of the runs that evaluate the most tasks (the suite's order), whatever
    order the runs are read in."""
    from memorybench import leaderboard as lb

    dirs = [RUNS / "maze" / "copy-last", RUNS / "diffusion-scene" / "diffusion", RUNS / "main" / "copy-last"]
    orders = [lb.build(lb.load_runs(d)).columns("rollout") for d in (dirs, dirs[::-1])]
    assert orders[0] == orders[1]
    suite = [t["key"] for t in lb.load_runs([dirs[-1]])[0]["meta"]["tasks"]]
    assert orders[0][: len(suite)] == suite and orders[0][len(suite) :] == [
        "maze-retrieval@standard",
        "maze-reasoning@standard",
    ]
