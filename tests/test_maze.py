"""The Memory Maze family: task files without the simulator, and tiny real episodes with it.

The tests that run the simulator need the `mazes` extra (`pip install -e ".[mazes]"` and a
headless GL renderer, see the README); CI installs both, so there they run.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import shrink

from memorybench.episode import NEVER_SEEN
from memorybench.errors import MemorybenchError
from memorybench.generators import get_generator
from memorybench.generators import maze as maze_mod

TASKS = ("maze-retrieval", "maze-reasoning")


# ------------------------------------------------------------------------------------------------
# without the simulator


@pytest.mark.parametrize("name", TASKS)
def test_task_files_validate(registry, name):
    std = registry.get(name, "standard")
    assert std.family == "memory_maze" and std.frames >= 512 and std.resolution == (64, 64)
    assert std.action_space.nvec == (6,) and std.action_space.labels[0][1] == "forward"
    assert std.pose_fields == ("x", "y", "dir_x", "dir_y")
    smoke = registry.get(name, "smoke")
    assert smoke.frames * smoke.episodes <= 200  # seconds to generate
    assert get_generator("memory_maze").has_content_ids is False


def test_listing_tasks_does_not_import_the_simulator():
    code = (
        "import sys; from memorybench.tasks import TaskRegistry; r = TaskRegistry(); r.get('maze-retrieval'); "
        "from memorybench.generators import get_generator; get_generator('memory_maze'); "
        "bad = [m for m in ('memory_maze', 'mujoco', 'dm_control', 'gym') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_spec_checks(registry):
    spec = registry.get("maze-retrieval", "smoke")
    with pytest.raises(ValueError, match="square"):
        shrink(spec, resolution=(32, 48))
    with pytest.raises(ValueError, match="at most 1000 steps"):
        shrink(spec, frames=1200, context_frames=1100)
    with pytest.raises(ValueError, match="retrace needs predict frames"):
        shrink(spec, frames=72, context_frames=30)
    with pytest.raises(ValueError, match="maze_size must be one of"):
        shrink(spec, params={"maze_size": 10})
    with pytest.raises(ValueError, match="min_revisit_age"):
        shrink(registry.get("maze-reasoning", "smoke"), params={"min_revisit_age": 48})


def test_missing_simulator_says_what_to_install(registry, monkeypatch):
    monkeypatch.setitem(sys.modules, "memory_maze", None)  # makes `import memory_maze` fail
    spec = registry.get("maze-retrieval", "smoke")
    with pytest.raises(MemorybenchError) as e:
        get_generator(spec.family)(spec).generate(0)
    msg = str(e.value)
    assert 'pip install -e ".[mazes]"' in msg and "apt-get install libegl1 libegl-mesa0" in msg and "libosmesa6" in msg


def test_unavailable_reason_names_what_is_missing(monkeypatch):
    gen = get_generator("memory_maze")
    monkeypatch.setitem(sys.modules, "memory_maze", None)
    reason = gen.unavailable_reason()
    assert "missing: memory_maze" in reason and 'pip install -e ".[mazes]"' in reason


def test_gl_backend_respects_the_user(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    assert maze_mod.choose_gl_backend() == "osmesa"
    monkeypatch.delenv("MUJOCO_GL")
    assert maze_mod.choose_gl_backend() in ("egl", "osmesa")


# ------------------------------------------------------------------------------------------------
# with the simulator

REASON = (
    'needs the Memory Maze simulator: pip install -e ".[mazes]" and apt-get install libegl1 libegl-mesa0 '
    "libgl1-mesa-dri libopengl0 (CI installs both, and there these tests must run)"
)


@pytest.fixture(scope="module")
def simulator():
    """The simulator module, or a skip with the reason; under CI (CI=true) a missing simulator fails."""
    os.environ.setdefault("MUJOCO_GL", maze_mod.choose_gl_backend())  # before memory_maze picks one itself
    if os.environ.get("CI", "").lower() == "true":
        try:
            return maze_mod.load_memory_maze()
        except MemorybenchError as e:
            pytest.fail(f"CI must run the Memory Maze tests: {e}")
    return pytest.importorskip("memory_maze", reason=REASON)


@pytest.fixture(scope="module")
def episodes(registry, simulator):
    """One smoke episode of each task (the simulator is slow: generate once per module)."""
    out = {}
    for name in TASKS:
        spec = registry.get(name, "smoke")
        out[name] = (spec, get_generator(spec.family)(spec).generate(0))
    return out


@pytest.mark.parametrize("name", TASKS)
def test_episode_matches_spec(episodes, name):
    spec, ep = episodes[name]
    ep.check(spec.frames, spec.resolution, spec.action_space.dims, len(spec.pose_fields))
    assert (ep.actions >= 0).all() and (ep.actions < 6).all() and ep.actions[0, 0] == 0
    assert ep.novel_mask[0].all() and ep.memory_gap[0] == NEVER_SEEN
    assert (ep.memory_mask & ep.novel_mask).sum() == 0
    # whole-frame masks
    m = ep.memory_mask.reshape(spec.frames, -1)
    assert (m.all(1) | ~m.any(1)).all()
    # the frames are real renders: not blank, and they change as the agent moves
    assert ep.frames.std() > 10 and np.abs(np.diff(ep.frames.astype(int), axis=0)).mean() > 1
    # the agent did not touch the current target, so the border colour never changed
    assert ep.info["targets_reached"] == 0 and ep.info["look_arounds"]
    # poses: positions inside the maze, unit heading vectors
    n = ep.info["maze_size"]
    assert (ep.poses[:, :2] > 0).all() and (ep.poses[:, :2] < n).all()
    assert np.allclose(np.hypot(ep.poses[:, 2], ep.poses[:, 3]), 1, atol=1e-3)


@pytest.mark.parametrize("name", TASKS)
def test_returns_revisit_views_seen_in_the_context(episodes, name):
    spec, ep = episodes[name]
    C, p = spec.context_frames, spec.params
    mem = np.flatnonzero(ep.memory_mask[C:, 0, 0]) + C
    assert len(mem) >= spec.predict_frames // 3, f"only {len(mem)} memory frames in {spec.predict_frames}"
    heading = np.arctan2(ep.poses[:, 3], ep.poses[:, 2])
    diffs, random_diffs = [], []
    rng = np.random.default_rng(0)
    for t in mem:
        s = t - ep.memory_gap[t]
        assert ep.memory_gap[t] > spec.recent_window
        # the agent was within the thresholds of this pose in some context frame
        d = np.hypot(*(ep.poses[:C, :2] - ep.poses[t, :2]).T)
        dh = np.degrees(np.abs((heading[:C] - heading[t] + np.pi) % (2 * np.pi) - np.pi))
        assert ((d <= p.near_distance + 1e-6) & (dh <= p.near_angle + 1e-6)).any()
        diffs.append(np.abs(ep.frames[t].astype(int) - ep.frames[s].astype(int)).mean())
        u = int(rng.integers(0, C))
        random_diffs.append(np.abs(ep.frames[t].astype(int) - ep.frames[u].astype(int)).mean())
    # and the view really is the one seen then: much closer than an arbitrary earlier frame
    assert np.mean(diffs) < 0.6 * np.mean(random_diffs), (np.mean(diffs), np.mean(random_diffs))
    if name == "maze-reasoning":
        assert np.median(ep.memory_gap[mem]) >= p.min_revisit_age


def test_same_seed_same_episode_other_index_differs(registry, episodes):
    spec, ep = episodes["maze-retrieval"]
    tiny = shrink(spec, frames=20, context_frames=12)
    gen = get_generator(spec.family)(tiny)
    a, b, c = gen.generate(0), gen.generate(0), gen.generate(1)
    assert a.sha256() == b.sha256()
    assert c.sha256() != a.sha256() and c.info["env_seed"] != a.info["env_seed"]
    # the first frames of the smoke episode are those of the tiny one: same seed, same policy
    assert np.array_equal(a.frames[:8], ep.frames[:8]) and a.info["env_seed"] == ep.info["env_seed"]


def test_worker_processes_render_the_same_bytes(registry, simulator, tmp_path):
    """Generation in spawned worker processes (each with its own GL context) is byte-identical."""
    from memorybench import storage

    spec = shrink(
        registry.get("maze-reasoning", "smoke"), frames=16, context_frames=12, episodes=2, params={"min_revisit_age": 4}
    )
    one = storage.prepare(spec, out=tmp_path / "one", workers=1).store
    two = storage.prepare(spec, out=tmp_path / "two", workers=2).store
    assert one.dataset_hash == two.dataset_hash
    assert storage.verify(tmp_path / "two", spec) == []


def test_perfect_memory_reference_runs(episodes):
    """The calibration reference falls back to the closest observed pose on maze episodes."""
    import torch

    from memorybench.models.calibration import CopyLast, PerfectMemory

    spec, ep = episodes["maze-retrieval"]
    C = spec.context_frames
    frames = torch.from_numpy(ep.frames[None]).permute(0, 1, 4, 2, 3).float() / 255
    actions = torch.from_numpy(ep.actions[None])
    errs = {}
    for model in (PerfectMemory(), CopyLast()):
        model.reset(spec, 1)
        if model.privileged:
            model.bind([ep])
        model.observe(frames[:, :C], actions[:, :C])
        pred = model.predict(actions[:, C:])
        mem = torch.from_numpy(ep.memory_mask[C:, 0, 0])
        errs[model.name] = (pred[0, mem] - frames[0, C:][mem]).abs().mean().item()
    assert errs["perfect-memory"] < errs["copy-last"], errs


@pytest.mark.skipif(os.environ.get("MUJOCO_GL") not in (None, "", "egl", "osmesa"), reason="a custom MUJOCO_GL")
def test_backend_is_headless(simulator):
    maze_mod.load_memory_maze()
    assert os.environ["MUJOCO_GL"] in ("egl", "osmesa")


def test_an_optimiser_can_be_built_after_a_maze_was_rendered(simulator):
    """Mesa and Triton each bring an LLVM: Triton imported after a render (AdamW imports it through
    torch._dynamo) segfaulted, killing `memorybench train` on maze tasks. A fresh process renders
    a maze, then builds an AdamW."""
    code = (
        "from memorybench.tasks import TaskRegistry; from memorybench.generators import get_generator; "
        "spec = TaskRegistry().get('maze-retrieval', 'smoke'); "
        "gen = get_generator('memory_maze')(spec); gen.generate(0); "
        "import torch; torch.optim.AdamW([torch.zeros(2, 2, requires_grad=True)]); print('built')"
    )
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and "built" in proc.stdout, proc.stderr[-2000:]


# ------------------------------------------------------------------------------------------------
# memory items (recall) and the training split


@pytest.mark.parametrize("name", TASKS)
def test_memory_items_are_other_views_of_the_episode(episodes, name):
    """Candidates: the true frame first, then views of the same episode at other poses, as
    memorybench.generators.poses defines them (tests/test_pose_items.py checks the same on a
    synthetic world)."""
    from test_pose_items import check_pose_items

    spec, ep = episodes[name]
    assert check_pose_items(spec, get_generator(spec.family)(spec), ep) >= 5


def test_validity_check_on_the_smoke_tasks(registry, simulator):
    """The validity check runs on the smoke maze tasks: ground-truth identifies every item, the
    approximate perfect-memory (closest observed pose) nearly every one. (The smoke tier has a few
    dozen items, too few for the no-memory criterion, whose CI needs hundreds per gap bin: that is
    checked on the standard and paper tiers by `memorybench validity`, results/validity-maze.md,
    and on a synthetic world in tests/test_pose_items.py.)"""
    from memorybench.models import NO_MEMORY
    from memorybench.validity import check

    result = check([registry.get(t, "smoke") for t in TASKS], protocols=("rollout", "teacher-forced"))
    assert sorted(result.results) == sorted(f"{t}@smoke" for t in TASKS) and sorted(result.approximate) == sorted(
        result.results
    )
    for key, by_protocol in result.results.items():
        assert list(by_protocol) == ["rollout"]  # the pose-based tasks offer rollout only
        r = by_protocol["rollout"]
        assert set(r) == {*NO_MEMORY, "perfect-memory", "ground-truth"} and r["copy-last"]["items"] >= 10
        assert r["ground-truth"]["metrics"]["recall"]["mean"] == 1
        assert r["perfect-memory"]["metrics"]["recall"]["mean"] >= 0.8, key
    assert not [p for p in result.problems() if "perfect-memory" in p or "ground-truth" in p]


def test_training_mazes_are_not_evaluation_mazes(registry, episodes):
    """The environment seed of episode i is the first draw of default_rng([seed, i]) in [0, 2^31 - 1):
    over thousands of indices no training seed (seed + TRAIN_SEED_OFFSET) gives an evaluation maze
    of either task; and the first training episode is another maze."""
    from memorybench.splits import training_spec

    def env_seeds(seed, n=4000):
        return {int(np.random.default_rng([seed, i]).integers(0, 2**31 - 1)) for i in range(n)}

    specs = [registry.get(t, "paper") for t in TASKS]
    ev = set().union(*(env_seeds(s.seed) for s in specs))
    tr = set().union(*(env_seeds(training_spec(s).seed) for s in specs))
    assert len(ev) == len(tr) == 2 * 4000 and not ev & tr
    spec, ep = episodes["maze-retrieval"]
    assert ep.info["env_seed"] == int(np.random.default_rng([spec.seed, 0]).integers(0, 2**31 - 1))
    train_ep = get_generator(spec.family)(shrink(training_spec(spec), frames=12, context_frames=8)).generate(0)
    assert train_ep.info["env_seed"] not in ev and train_ep.info["maze_layout"] != ep.info["maze_layout"]


@pytest.mark.slow
def test_a_cached_maze_train_split_feeds_training(registry, simulator, tmp_path, monkeypatch):
    """`memorybench tasks generate maze-retrieval@smoke --split train --episodes 2` writes the split
    where `task_loader(..., episodes=[2])` (what `memorybench train --train-episodes` uses) reads it."""
    from typer.testing import CliRunner

    from memorybench import data
    from memorybench.cli import app
    from memorybench.splits import train_dir, training_spec

    monkeypatch.setenv("MEMORYBENCH_CACHE", str(tmp_path))
    spec = shrink(registry.get("maze-retrieval", "smoke"), frames=14, context_frames=12)
    res = CliRunner().invoke(app, ["tasks", "generate", "maze-retrieval@smoke", "--split", "train", "--episodes", "2"])
    assert res.exit_code == 0, res.output
    path = train_dir(training_spec(registry.get("maze-retrieval", "smoke"), 2))
    assert (path / "manifest.json").exists() and str(path).startswith(str(tmp_path))
    batches = list(data.task_loader([registry.get("maze-retrieval", "smoke")], 1, stop=3, episodes=[2]))
    assert [int(b["episode"][0]) for b in batches] == [0, 1, 0]
    first = get_generator(spec.family)(training_spec(spec)).generate(1)  # the same exploration, shorter
    assert np.array_equal(batches[1]["frames"][0, :12].permute(0, 2, 3, 1).numpy(), first.frames[:12])
