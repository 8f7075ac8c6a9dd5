"""Bring-your-own episodes (the `recorded` family) and the pose-based memory metadata it shares
with the Memory Maze family. Always runs: the example episodes are built here, in a temp dir."""

from __future__ import annotations

import math
import os
import time
import zipfile

import numpy as np
import pytest
import torch

from memorybench import storage
from memorybench.episode import NEVER_SEEN
from memorybench.errors import DataError, TaskSpecError
from memorybench.generators import get_generator
from memorybench.generators.poses import frame_ages, near_matrix, pose_memory_metadata
from memorybench.taskfile import load_task_file

# ------------------------------------------------------------------------------------------------
# pose-based metadata on hand-built pose sequences


def meta_of(xy, deg, K=1, C=None, r=0.2, theta=12.0):
    m = pose_memory_metadata(np.array(xy, float), np.deg2rad(np.array(deg, float)), (2, 3), K, C, r, theta)
    return m.memory_gap.tolist(), m.memory_mask[:, 0, 0].tolist(), m.novel_mask[:, 0, 0].tolist(), m


def test_near_needs_both_distance_and_heading_inclusive():
    xy = [(0, 0), (0.2, 0), (0.21, 0), (0, 0), (0, 0), (0, 0)]
    deg = [0, 0, 0, 12, 12.5, 350]
    near = near_matrix(np.array(xy, float), np.deg2rad(deg), 0.2, 12.0)
    assert near[0].tolist() == [True, True, False, True, False, True]  # 0.2 and 12 degrees count; 350 is -10


def test_gap_is_frames_since_last_near_pose():
    # walk away along x (0.5 apart: never near), then come back to frame 1's pose, then stand
    xy = [(0, 0), (1, 0), (2, 0), (3, 0), (4, 0), (1.1, 0), (1.1, 0)]
    deg = [0, 90, 90, 90, 90, 95, 95]
    gap, mem, nov, m = meta_of(xy, deg, K=2)
    assert gap == [NEVER_SEEN, NEVER_SEEN, NEVER_SEEN, NEVER_SEEN, NEVER_SEEN, 4, 1]
    assert nov == [True, True, True, True, True, False, False]
    assert mem == [False, False, False, False, False, True, False]  # gap 4 > K=2; the next is recent
    assert m.memory_mask[5].all() and m.memory_mask.shape == (7, 2, 3) and m.age[5].tolist() == [[4] * 3] * 2


def test_heading_threshold_separates_views_at_one_spot():
    # turning in place by 18 degrees a step (more than 12): each view is new; a second full turn
    # revisits every heading
    deg = [18 * i for i in range(20)] + [18 * i + 5 for i in range(20)]
    gap, mem, nov, _ = meta_of([(0, 0)] * 40, deg, K=4)
    assert nov[:20] == [True] * 20
    # frame 20 (heading 5) is within 12 degrees of frame 0 (heading 0): 20 frames ago; every later
    # frame of the second turn matches the frame 20 earlier
    assert gap[20:] == [20] * 20 and all(mem[20:]) and not any(nov[20:])
    # with a 4-degree threshold the offset 5 is too much: the second turn is novel too
    gap, mem, nov, _ = meta_of([(0, 0)] * 40, deg, K=4, theta=4)
    assert all(nov) and not any(mem)


def test_predicted_frames_count_only_context_poses_as_seen():
    # C = 3: frame 3 is new; frame 4 returns to frame 3's pose (seen only in a predicted frame:
    # novel, though its age is 1); frame 5 returns to frame 0's pose (seen in the context)
    xy = [(0, 0), (1, 0), (2, 0), (5, 5), (5, 5), (0, 0)]
    deg = [0] * 6
    gap, mem, nov, m = meta_of(xy, deg, K=1, C=3)
    assert nov == [True, True, True, True, True, False]
    assert gap == [NEVER_SEEN, NEVER_SEEN, NEVER_SEEN, NEVER_SEEN, NEVER_SEEN, 5]
    assert m.age[4, 0, 0] == 1  # the age itself still counts every earlier frame, as for pixels
    assert mem == [False] * 5 + [True]


def test_chunked_computation_matches_the_matrix_definition():
    rng = np.random.default_rng(0)
    T = 600  # more than one chunk
    xy = rng.integers(0, 4, (T, 2)) * 0.15
    h = np.deg2rad(rng.integers(0, 8, T) * 10.0)
    m = pose_memory_metadata(xy, h, (1, 1), 4, 400, 0.2, 12.0)
    age, novel = frame_ages(near_matrix(xy, h, 0.2, 12.0), 400)
    assert np.array_equal(m.age[:, 0, 0], age) and np.array_equal(m.novel_mask[:, 0, 0], novel)
    assert np.array_equal(m.memory_gap, np.where(novel, NEVER_SEEN, age))


def test_bad_poses_are_rejected():
    with pytest.raises(ValueError, match="NaN"):
        pose_memory_metadata(np.array([[0, 0], [np.nan, 0]]), np.zeros(2), (1, 1), 1)
    with pytest.raises(ValueError, match="positions must be"):
        pose_memory_metadata(np.zeros((3, 2)), np.zeros(2), (1, 1), 1)


# ------------------------------------------------------------------------------------------------
# an example source: .npz files in the Memory Maze offline-dataset layout

H = W = 16
T_FILE = 41


def view(x: float, y: float, d: np.ndarray, seed: int) -> np.ndarray:
    """A deterministic picture per (place, heading): the same pose always shows the same picture."""
    ang = int(round(math.degrees(math.atan2(d[1], d[0])) / 20)) % 18
    rng = np.random.default_rng([seed, int(round(x * 4)), int(round(y * 4)), ang])
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def make_episode(seed: int, T: int = T_FILE) -> dict:
    """Walk 4 steps (0.25 cells each), look around turning left (18 steps of 20 degrees), then turn
    back right the same way: each view of the second turn is the view of the first turn at the
    same heading, ``2 (t - 22)`` frames earlier."""
    y0 = 0.5 + seed % 5
    pos, dirs, acts = [], [], []
    x, deg = 0.5, 0.0
    for t in range(T):
        if t == 0:
            a = 0
        elif t <= 4:
            a, x = 1, x + 0.25
        elif t <= 22:
            a, deg = 2, deg + 20
        else:
            a, deg = 3, deg - 20
        pos.append((x, y0))
        dirs.append((math.cos(math.radians(deg)), math.sin(math.radians(deg))))
        acts.append(a)
    pos, dirs = np.array(pos), np.array(dirs)
    image = np.stack([view(p[0], p[1], q, seed) for p, q in zip(pos, dirs)])
    onehot = np.zeros((T, 6), np.float32)
    onehot[np.arange(1, T), np.array(acts[1:])] = 1.0  # row 0 is zeros: no action before the first frame
    return {
        "image": image,
        "action": onehot,
        "reward": np.zeros(T, np.float32),
        "agent_pos": pos,
        "agent_dir": dirs,
        "maze_layout": np.ones((T, 9, 9), np.uint8),
    }


@pytest.fixture
def source(tmp_path):
    d = tmp_path / "episodes"
    d.mkdir()
    for i in range(4):
        np.savez_compressed(d / f"{i:05d}-episode.npz", **make_episode(i))
    return d


def task_file(tmp_path, path, name="my-maze", episodes=3, frames=36, context=24, extra="", res=H):
    f = tmp_path / f"{name}.yaml"
    f.write_text(f"""\
name: {name}
family: recorded
generator_version: 1
description: recorded Memory Maze episodes
common:
  recent_window: 2
  seed: 0
  params:
    path: {path}
{extra}
tiers:
  smoke: {{frames: {frames}, context_frames: {context}, resolution: [{res}, {res}], episodes: {episodes}}}
""")
    return f


def load(tmp_path, path, **kw):
    return load_task_file(task_file(tmp_path, path, **kw))["smoke"]


def generate(spec, i=0):
    return get_generator(spec.family)(spec).generate(i)


def test_npz_episode_is_the_file_cropped_with_pose_metadata(tmp_path, source):
    spec = load(tmp_path, source)
    assert spec.pose_fields == ("x", "y", "dir_x", "dir_y") and spec.action_space.nvec == (6,)
    ep = generate(spec, 1)
    raw = np.load(source / "00001-episode.npz")
    ep.check(spec.frames, spec.resolution, spec.action_space.dims, len(spec.pose_fields))
    assert np.array_equal(ep.frames, raw["image"][:36])
    assert ep.actions[0, 0] == 0 and np.array_equal(ep.actions[1:, 0], raw["action"][1:36].argmax(1))
    assert np.allclose(ep.poses[:, :2], raw["agent_pos"][:36]) and np.allclose(ep.poses[:, 2:], raw["agent_dir"][:36])
    assert ep.info == {"source": "00001-episode.npz", "start_frame": 0, "poses": True}
    # the turn back (frames 23..) shows the views of the first turn again, 2 (t - 22) frames later;
    # frame 22 (a full turn) is frame 4's view; K = 2 makes frame 23 (gap 2) recent
    C = spec.context_frames
    mem = np.flatnonzero(ep.memory_mask[:, 0, 0])
    assert mem.tolist() == [22] + list(range(24, 36))
    assert ep.memory_gap[22] == 18 and ep.memory_gap[24:36].tolist() == [2 * (t - 22) for t in range(24, 36)]
    assert ep.novel_mask[:22, 0, 0].all() and ep.memory_mask[C:].all()
    for t in mem:
        assert np.array_equal(ep.frames[t], ep.frames[t - ep.memory_gap[t]])
    assert ep.novel_mask[0].all() and ep.memory_gap[0] == NEVER_SEEN
    # other files are other episodes
    assert generate(spec, 2).sha256() != ep.sha256()


def test_start_frame_and_angles_and_integer_actions(tmp_path, source):
    raw = make_episode(7)
    ang = np.arctan2(raw["agent_dir"][:, 1], raw["agent_dir"][:, 0])
    d = tmp_path / "angles"
    d.mkdir()
    np.savez(
        d / "a.npz",
        image=raw["image"],
        act=raw["action"].argmax(1).astype(np.int32),
        agent_pos=raw["agent_pos"],
        yaw=ang,
    )
    spec = load(
        tmp_path,
        d,
        episodes=1,
        frames=30,
        context=20,
        extra="    start_frame: 5\n    action_key: act\n    direction_key: yaw",
    )
    ep = generate(spec)
    assert np.array_equal(ep.frames, raw["image"][5:35])
    assert np.allclose(ep.poses[:, 2:], raw["agent_dir"][5:35], atol=1e-6)
    assert np.array_equal(ep.actions[:, 0], raw["action"].argmax(1)[5:35])


def test_without_poses_every_frame_is_novel_and_that_is_explicit(tmp_path):
    d = tmp_path / "noposes"
    d.mkdir()
    raw = make_episode(0)
    np.savez(d / "e.npz", image=raw["image"], action=raw["action"])
    with pytest.raises(DataError, match=r"e\.npz: no array 'agent_pos'.*position_key: ''"):
        generate(load(tmp_path, d, episodes=1))
    spec = load(tmp_path, d, episodes=1, extra="    position_key: ''")
    assert spec.pose_fields == ()
    ep = generate(spec)
    assert ep.poses.shape == (36, 0) and ep.novel_mask.all() and not ep.memory_mask.any()
    assert (ep.memory_gap == NEVER_SEEN).all()
    assert "memory unscored" in get_generator("recorded").describe_gaps(spec)


def test_positions_only(tmp_path, source):
    spec = load(tmp_path, source, extra="    direction_key: ''")
    assert spec.pose_fields == ("x", "y")
    ep = generate(spec)
    # headings ignored: every frame of the look-around is at the spot of the frame before it
    assert ep.memory_gap[5:].tolist() == [1] * 31 and not ep.memory_mask.any()
    assert ep.novel_mask[:5, 0, 0].all() and not ep.novel_mask[5:].any()


def _write(d, name, **arrays):
    np.savez(d / name, **arrays)


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("missing", r"bad\.npz: no array 'image' \(it has: action, agent_dir, agent_pos\)"),
        ("dtype", r"bad\.npz: array 'image' has dtype float32 .* expected uint8 \[T, 16, 16, 3\]"),
        ("resolution", r"bad\.npz: array 'image' has dtype uint8 and shape \(41, 8, 8, 3\)"),
        ("short", r"bad\.npz: array 'agent_pos' has 20 frames, the task needs start_frame \+ frames = 36"),
        ("action_shape", r"bad\.npz: array 'action' has dtype float32 and shape \(41, 4\), expected one-hot \[T, 6\]"),
        ("action_range", r"bad\.npz: array 'action' has value 9 outside 0\.\.5"),
        ("nan", r"bad\.npz: the pose arrays contain NaN"),
        ("dir_shape", r"bad\.npz: array 'agent_dir' has dtype float64 and shape \(41, 3\)"),
    ],
)
def test_invalid_files_name_the_file_and_the_array(tmp_path, case, pattern):
    d = tmp_path / "bad"
    d.mkdir()
    raw = make_episode(0)
    if case == "missing":
        raw.pop("image")
    elif case == "dtype":
        raw["image"] = raw["image"].astype(np.float32)
    elif case == "resolution":
        raw["image"] = raw["image"][:, :8, :8]
    elif case == "short":
        raw["agent_pos"] = raw["agent_pos"][:20]
    elif case == "action_shape":
        raw["action"] = raw["action"][:, :4]
    elif case == "action_range":
        raw["action"] = np.full(T_FILE, 9, np.int64)
    elif case == "nan":
        raw["agent_pos"][3, 0] = np.nan
    elif case == "dir_shape":
        raw["agent_dir"] = np.zeros((T_FILE, 3))
    raw.pop("reward"), raw.pop("maze_layout")
    _write(d, "bad.npz", **raw)
    with pytest.raises(DataError, match=pattern):
        generate(load(tmp_path, d, episodes=1))


def test_unreadable_and_truncated_files(tmp_path, source):
    d = tmp_path / "broken"
    d.mkdir()
    (d / "a.npz").write_bytes(b"this is not a zip file")
    with pytest.raises(DataError, match=r"a\.npz: not a readable \.npz file \(not a zip archive"):
        generate(load(tmp_path, d, episodes=1))
    # a download cut in the middle: the zip's directory (at its end) is gone
    good = (source / "00000-episode.npz").read_bytes()
    (d / "a.npz").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"a\.npz: not a readable \.npz file"):
        generate(load(tmp_path, d, episodes=1))
    # a damaged array inside an intact zip: named
    raw = make_episode(0)
    np.savez(d / "a.npz", **raw)  # stored, not compressed: flip bytes inside 'image'
    with zipfile.ZipFile(d / "a.npz") as z:
        info = z.getinfo("image.npy")
    data = bytearray((d / "a.npz").read_bytes())
    start = info.header_offset + 30 + len(info.filename) + 200
    data[start : start + 16] = bytes(16)
    (d / "a.npz").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"a\.npz: array 'image' is truncated or corrupt"):
        generate(load(tmp_path, d, episodes=1))


def test_task_file_errors(tmp_path, source):
    with pytest.raises(TaskSpecError, match="holds 4 .npz episode files, the tier asks for 9 episodes"):
        load(tmp_path, source, episodes=9)
    with pytest.raises(TaskSpecError, match="is not a directory"):
        load(tmp_path, tmp_path / "nowhere")
    f = tmp_path / "nopath.yaml"
    f.write_text(
        "name: x\nfamily: recorded\ngenerator_version: 1\n"
        "tiers: {smoke: {frames: 8, context_frames: 4, resolution: [16, 16], episodes: 1, seed: 0}}\n"
    )
    with pytest.raises(TaskSpecError, match="path is required"):
        load_task_file(f)


def test_relative_path_and_env_vars_resolve(tmp_path, source, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MB_EPISODES", str(source))
    a = load(tmp_path, "episodes", name="rel")
    b = load(tmp_path, "$MB_EPISODES", name="rel")
    assert a.params.path == b.params.path == str(source)
    assert a.hash() == b.hash()


def test_changed_source_files_invalidate_the_cache(tmp_path, source):
    spec = load(tmp_path, source)
    first = storage.prepare(spec)
    assert not first.reused and len(first.store) == 3
    assert storage.prepare(load(tmp_path, source)).reused  # nothing changed: reused
    # rewrite one episode file
    raw = make_episode(1)
    raw["image"] = 255 - raw["image"]
    time.sleep(0.01)
    np.savez_compressed(source / "00001-episode.npz", **raw)
    changed = load(tmp_path, source)
    assert changed.params.source_fingerprint != spec.params.source_fingerprint
    assert changed.hash() != spec.hash()
    # the old dataset does not verify against the new spec...
    assert any("spec hash" in p for p in storage.verify(first.store.path, changed))
    # ...and preparing the new spec regenerates from the new files
    res = storage.prepare(changed)
    assert not res.reused and np.array_equal(res.store[1].frames, raw["image"][:36])
    # adding a file that sorts first changes which file is episode 0: also a new spec
    np.savez(source / "00000-aaa.npz", **make_episode(9))
    assert load(tmp_path, source).hash() != changed.hash()
    # a generator holding the old spec refuses to read the new files
    with pytest.raises(DataError, match="changed since the task was loaded"):
        generate(changed, 0)


def test_touching_a_file_changes_stat_fingerprint_not_content_fingerprint(tmp_path, source):
    stat_a = load(tmp_path, source)
    cont_a = load(tmp_path, source, extra="    fingerprint_mode: content")
    st = os.stat(source / "00002-episode.npz")
    os.utime(source / "00002-episode.npz", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert load(tmp_path, source).hash() != stat_a.hash()
    assert load(tmp_path, source, extra="    fingerprint_mode: content").hash() == cont_a.hash()


def test_pinned_fingerprint(tmp_path, source):
    fp = load(tmp_path, source).params.source_fingerprint
    spec = load(tmp_path, source, extra=f"    source_fingerprint: '{fp}'")
    assert spec.params.source_fingerprint == fp and generate(spec, 0).num_frames == 36
    bad = load(tmp_path, source, extra=f"    source_fingerprint: '{'0' * 64}'")
    with pytest.raises(DataError, match="changed since the task was loaded"):
        generate(bad, 0)


def test_manifest_round_trip_without_the_source(tmp_path, source):
    """A stored dataset stays readable (its spec comes back from the manifest) when the source is gone."""
    spec = load(tmp_path, source)
    path = storage.prepare(spec, out=tmp_path / "ds").store.path
    import shutil

    shutil.rmtree(source)
    store = storage.open_store(path, deep=True)
    assert store.spec.hash() == spec.hash() and len(store) == 3


def test_hugging_face_dataset_on_disk(tmp_path, source):
    from datasets import Dataset, DatasetDict

    eps = [make_episode(i) for i in range(3)]
    cols = {k: [e[k] for e in eps] for k in ("image", "action", "agent_pos", "agent_dir")}
    Dataset.from_dict(cols).save_to_disk(str(tmp_path / "hf"))
    spec = load(tmp_path, tmp_path / "hf", name="hf-maze")
    assert spec.params.format == "hf"
    npz = load(tmp_path, source)
    for i in range(3):
        a, b = generate(spec, i), generate(npz, i)
        for k in ("frames", "actions", "poses", "memory_gap", "memory_mask", "novel_mask"):
            assert np.array_equal(getattr(a, k), getattr(b, k)), k
        assert a.info["source"] == f"row {i}"
    DatasetDict({"train": Dataset.from_dict(cols)}).save_to_disk(str(tmp_path / "hfd"))
    with pytest.raises(DataError, match=r"DatasetDict with splits \['train'\]: set params.split"):
        generate(load(tmp_path, tmp_path / "hfd", name="hfd"))
    assert generate(load(tmp_path, tmp_path / "hfd", name="hfd", extra="    split: train"), 2).num_frames == 36
    bad = load(tmp_path, tmp_path / "hf", name="hf-bad", extra="    image_key: rgb")
    with pytest.raises(DataError, match=r"row 0: no column 'rgb'"):
        generate(bad)


def test_perfect_memory_reference_runs_on_recorded_episodes(tmp_path, source):
    """The calibration reference falls back to the closest pose: on memory frames of this source
    (whose earlier view is pixel-identical) it predicts them exactly."""
    from memorybench.models.calibration import PerfectMemory

    spec = load(tmp_path, source)
    eps = [generate(spec, i) for i in range(2)]
    C = spec.context_frames
    frames = torch.from_numpy(np.stack([e.frames for e in eps])).permute(0, 1, 4, 2, 3).float() / 255
    actions = torch.from_numpy(np.stack([e.actions for e in eps]))
    model = PerfectMemory()
    model.reset(spec, 2)
    model.bind(eps)
    model.observe(frames[:, :C], actions[:, :C])
    pred = model.predict(actions[:, C:])
    assert pred.shape == frames[:, C:].shape
    for b, ep in enumerate(eps):
        mem = np.flatnonzero(ep.memory_mask[C:, 0, 0])
        assert len(mem)
        assert torch.allclose(pred[b, mem], frames[b, C + mem])
