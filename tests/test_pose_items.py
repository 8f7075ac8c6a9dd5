"""Memory items of the pose-based families (memory_maze, recorded with poses): candidates are frames
of the episode, chosen so that no candidate is set apart by how it was chosen. Checked on a
synthetic world of recorded episodes (no simulator needed): a first-person view of smooth
panoramas, explored with look-arounds and then retraced, like the maze tasks."""

from __future__ import annotations

import numpy as np
import pytest

from memorybench.generators import get_generator
from memorybench.generators.poses import FOIL_SEPARATION, pose_rho
from memorybench.recall import score_items
from memorybench.taskfile import load_task_file

H = W = 16
STEP_DEG = 18.0  # a turn step; a forward step moves 0.25 cells


def panorama(rng, spots: int, width: int = 360) -> np.ndarray:
    """``[spots, width, 3]`` smooth random colours around each spot; spots of one room (4 spots)
    share a base colour, so that neighbouring places look alike (as rooms do in Memory Maze)."""
    a = np.deg2rad(np.arange(width))[None, :, None]
    room = rng.uniform(60, 190, (spots // 4 + 1, 1, 3)).repeat(4, 0)[:spots]
    waves = sum(
        rng.uniform(10, 40, (spots, 1, 3)) * np.sin(k * a + rng.uniform(0, 6.3, (spots, 1, 3))) for k in (1, 2, 3, 5)
    )
    return np.clip(room + waves, 0, 255)


def view(pan: np.ndarray, spot: int, heading_deg: float, off: float) -> np.ndarray:
    """uint8 ``[H, W, 3]``: the columns of an 80-degree field of view of the spot's panorama, with
    a floor and sky gradient, brighter the farther (``off``, cells) from the spot's centre."""
    cols = (heading_deg + np.linspace(40, -40, W)).round().astype(int) % pan.shape[1]
    img = pan[spot, cols][None].repeat(H, 0) * np.linspace(0.7, 1.1, H)[:, None, None] * (1 + 0.5 * off)
    return np.clip(img, 0, 255).astype(np.uint8)


def trajectory(rng, frames: int, context: int, side: int = 4):
    """Poses ``[T, 4]`` (x, y, dir_x, dir_y), spot indices and actions: the context explores a
    ``side x side`` grid of spots (walking between neighbours, a look-around at each), then the
    agent retraces its path (frame ``C + j`` has the pose of frame ``C - 2 - j``)."""
    cell = (int(rng.integers(side)), int(rng.integers(side)))
    heading = float(rng.integers(20)) * STEP_DEG
    poses, spots, actions = [], [], []

    def add(pos, h, spot, a):
        poses.append([pos[0], pos[1], np.cos(np.deg2rad(h)), np.sin(np.deg2rad(h))])
        spots.append(spot)
        actions.append(a)

    spot_of = lambda c: c[1] * side + c[0]  # noqa: E731
    add(np.add(cell, 0.5), heading, spot_of(cell), 0)
    while len(poses) < context:
        turn = 2 if rng.random() < 0.5 else 3
        for _ in range(20):  # a look-around
            heading += STEP_DEG if turn == 2 else -STEP_DEG
            add(np.add(cell, 0.5), heading, spot_of(cell), turn)
        nxt = [
            (cell[0] + dx, cell[1] + dy)
            for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1))
            if 0 <= cell[0] + dx < side and 0 <= cell[1] + dy < side
        ]
        goal = nxt[int(rng.integers(len(nxt)))]
        target = np.rad2deg(np.arctan2(goal[1] - cell[1], goal[0] - cell[0]))
        while abs((heading - target + 180) % 360 - 180) > STEP_DEG / 2:  # face the next spot
            heading += STEP_DEG if (target - heading + 180) % 360 - 180 > 0 else -STEP_DEG
            add(np.add(cell, 0.5), heading, spot_of(cell), 2)
        heading = target
        for k in range(1, 5):  # four forward steps of 0.25 cells
            pos = np.add(cell, 0.5) + k / 4 * np.subtract(goal, cell)
            add(pos, heading, spot_of(cell if k < 2 else goal), 1)
        cell = goal
    poses, spots, actions = poses[:context], spots[:context], actions[:context]
    for j in range(frames - context):  # the retrace
        poses.append(poses[context - 2 - j])
        spots.append(spots[context - 2 - j])
        actions.append(1)
    return np.array(poses), np.array(spots), np.array(actions)


@pytest.fixture(scope="module")
def synthetic_task(tmp_path_factory):
    """A recorded task of 12 synthetic retrieval episodes (320 frames, 200 of context)."""
    d = tmp_path_factory.mktemp("synthetic")
    T, C = 320, 200
    for i in range(12):
        rng = np.random.default_rng([7, i])
        pan = panorama(rng, 16)
        poses, spots, actions = trajectory(rng, T, C)
        headings = np.rad2deg(np.arctan2(poses[:, 3], poses[:, 2]))
        centre = np.stack([spots % 4, spots // 4], 1) + 0.5
        off = np.hypot(*(poses[:, :2] - centre).T)
        image = np.stack([view(pan, s, h, o) for s, h, o in zip(spots, headings, off)])
        np.savez(d / f"ep-{i:03d}.npz", image=image, action=actions, agent_pos=poses[:, :2], agent_dir=poses[:, 2:])
    f = d / "synthetic.yaml"
    f.write_text(f"""\
name: synthetic-retrieval
family: recorded
generator_version: 1
protocols: [rollout]
common:
  recent_window: 4
  seed: 0
  params: {{path: {d}}}
tiers:
  smoke: {{frames: {T}, context_frames: {C}, resolution: [{H}, {W}], episodes: 12,
           gap_bins: [1, 64, 128, 256, 512]}}
""")
    return load_task_file(f)["smoke"]


def check_pose_items(spec, gen, ep) -> int:
    """Assert the memory items of a pose-based episode are what ``memorybench.generators.poses``
    defines; returns their number."""
    C, K, p = spec.context_frames, spec.recent_window, spec.params
    items = ep.items
    H, W = spec.resolution
    assert gen.num_candidates(spec) == 1 + p.foils
    headings = np.arctan2(ep.poses[:, 3], ep.poses[:, 2])
    rho = lambda t: pose_rho(ep.poses[:, :2].astype(float), headings, t, p.near_distance, p.near_angle)  # noqa: E731
    frames = ep.frames.reshape(spec.frames, -1, 3)
    for i in range(len(items)):
        t = int(items.frame[i])
        cands = gen.item_candidates(ep, i)
        assert cands.shape == (1 + p.foils, H * W, 3) and np.array_equal(cands[items.truth[i]], frames[t])
        offered = np.setdiff1d(np.arange(1 + p.foils), items.excluded(i))
        chosen = items.extra["candidate_frames"][i][offered]
        assert chosen[0] == t and len(offered) >= 2
        assert ep.memory_mask[t].all() and items.gap_rollout[i] == ep.memory_gap_rollout[t] > K
        # every two offered candidates, and each and the last context views, are > FOIL_SEPARATION
        # apart, and no two show the very same picture
        for a in chosen:
            r = rho(int(a))
            assert (r[np.setdiff1d(chosen, [a])] > FOIL_SEPARATION).all()
            assert (r[C - K : C] > FOIL_SEPARATION).all()
        assert len({frames[a].tobytes() for a in chosen}) == len(chosen)
        # the key is the last context frame near the truth
        assert rho(t)[items.key[i]] <= 1 and items.key[i] < C and (rho(t)[items.key[i] + 1 : C] > 1).all()
    # a perfect prediction hits every item; chance is one over the candidates offered
    rows = score_items(gen, ep, ep.frames[C:], C, "rollout")
    assert len(rows) == len(items) and all(r["hit"] == 1 and r["score"] == 1 for r in rows)
    assert {r["chance"] for r in rows} <= {1 / (1 + n) for n in range(1, p.foils + 1)}
    return len(items)


def test_candidates_are_frames_of_the_episode_separated_as_the_truth(synthetic_task):
    gen = get_generator(synthetic_task.family)(synthetic_task)
    assert check_pose_items(synthetic_task, gen, gen.generate(0)) > 50


def test_episodes_without_poses_have_no_items(synthetic_task, tmp_path):
    import dataclasses

    spec = synthetic_task
    params = dataclasses.replace(spec.params, position_key="")
    bare = dataclasses.replace(spec, params=params, pose_fields=())
    assert get_generator("recorded").num_candidates(bare) is None
    assert get_generator("recorded")(bare).generate(0).items is None


@pytest.mark.slow
def test_no_memory_strategies_are_at_chance_on_the_synthetic_world(synthetic_task):
    """The validity check on the synthetic retrieval task: every no-memory reference at chance
    (recall CI upper bound <= 0.05 in every gap bin), ground-truth exactly 1, and perfect-memory
    (the closest observed pose: here the very same view) 1."""
    from memorybench.validity import check

    result = check([synthetic_task], protocols=("rollout",))
    assert result.problems() == [], result.to_markdown()
    by_model = result.results[synthetic_task.key]["rollout"]
    assert by_model["ground-truth"]["metrics"]["recall"]["mean"] == 1
    assert by_model["perfect-memory"]["metrics"]["recall"]["mean"] == 1
    assert synthetic_task.key in result.approximate  # reported as approximate, whatever it scores
    assert sum(b["items"] for b in by_model["copy-last"]["by_gap"]) > 1000


def test_perfect_memory_floor_is_not_applied_to_an_approximate_reference():
    from memorybench.validity import ValidityResult

    def summary(recall):
        return {"metrics": {"recall": {"mean": recall, "ci_low": recall, "ci_high": recall}}, "by_gap": []}

    r = ValidityResult(results={"m@x": {"rollout": {"perfect-memory": summary(0.8), "ground-truth": summary(1.0)}}})
    assert r.problems() == ["perfect-memory on m@x (rollout): recall 0.8 < 0.95"]
    r.approximate.append("m@x")
    assert r.problems() == [] and "approximate" in r.to_markdown()
    r.results["m@x"]["rollout"]["ground-truth"] = summary(0.99)
    assert r.problems() == ["ground-truth on m@x (rollout): recall 0.99 < 1.0"]
