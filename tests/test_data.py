"""Training data: the train split (disjoint from evaluation), its datasets, sharding, npz export, guards."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import shrink

from memorybench import storage
from memorybench.cli import main
from memorybench.data import (
    EpisodeDataset,
    EpisodeStream,
    RoundRobinBatches,
    collate,
    crop_starts,
    make_sample,
    memory_intervals,
    round_robin_episodes,
    task_loader,
)
from memorybench.episode import NEVER_SEEN, Episode
from memorybench.errors import MemorybenchError
from memorybench.generators import get_generator
from memorybench.results import load_run_json
from memorybench.runner import RunRequest, evaluate
from memorybench.splits import TRAIN_SEED_OFFSET, TrainingDataError, export_npz, npz_arrays, split_spec, training_spec
from memorybench.taskfile import load_task_file
from memorybench.tasks import get_task
from memorybench.zoo.common import default_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def occ():
    return get_task("occlusion-recall", "smoke")


@pytest.fixture(scope="module")
def scene():
    return get_task("scene-retrieval", "smoke")


def tiny_occlusion():
    """occlusion-recall cut to 24 frames of 16x16 (4 ms an episode): for tests over thousands of episodes."""
    return shrink(
        get_task("occlusion-recall", "smoke"),
        frames=24,
        context_frames=16,
        resolution=(16, 16),
        params=dict(
            slots=(1, 2),
            gaps=(6, 8),
            study_frames=2,
            curtain_frames=1,
            reveal_spacing=1,
            distractors=1,
            distractor_size=2,
            background_cell=4,
        ),
    )


def frames_hash(ep) -> bytes:
    return hashlib.blake2b(ep.frames.tobytes(), digest_size=16).digest()


# ------------------------------------------------------------------------------------------------
# the split


def test_train_and_eval_episodes_never_coincide():
    spec = tiny_occlusion()
    n = 2000
    train, evl = (get_generator(s.family)(s) for s in (training_spec(spec), spec))
    train_hashes = {frames_hash(train.generate(i)) for i in range(n)}
    eval_hashes = {frames_hash(evl.generate(i)) for i in range(n)}  # every index an eval tier could use
    assert len(train_hashes) == n and len(eval_hashes) == n  # the hash tells episodes apart
    assert train_hashes.isdisjoint(eval_hashes)


def test_split_specs_and_their_errors(occ, tmp_path):
    t = split_spec(occ, "train", 10)
    assert t.seed == occ.seed + TRAIN_SEED_OFFSET and t.episodes == 10 and t.key == occ.key and t.hash() != occ.hash()
    assert split_spec(occ, "eval") is occ and training_spec(occ).episodes == occ.episodes
    with pytest.raises(TrainingDataError, match=f"exactly {occ.episodes} episodes"):
        split_spec(occ, "eval", 10)
    with pytest.raises(TrainingDataError, match="unknown split 'test'"):
        split_spec(occ, "test")
    with pytest.raises(TrainingDataError, match=">= 1"):
        split_spec(occ, "train", 0)
    rec = recorded_spec(tmp_path, export_npz(split_spec(occ, "eval"), tmp_path / "e", "eval"), occ)
    with pytest.raises(TrainingDataError, match="recorded task.*no training split"):
        training_spec(rec)


# ------------------------------------------------------------------------------------------------
# memory events and crops


def synthetic_episode(T=12, H=4, W=4, events=()):
    """An episode whose frame t has ``n`` memory-only pixels of gap ``g`` for each ``(t, n, g)``."""
    mem = np.zeros((T, H, W), bool)
    gap = np.ones(T, np.int32)
    gap[0] = NEVER_SEEN
    for t, n, g in events:
        mem[t].flat[:n] = True
        gap[t] = g
    return Episode(
        task="x",
        index=0,
        frames=np.zeros((T, H, W, 3), np.uint8),
        actions=np.zeros((T, 1), np.int64),
        poses=np.zeros((T, 0), np.float32),
        memory_gap=gap,
        memory_gap_rollout=gap,
        memory_mask=mem,
        novel_mask=np.zeros((T, H, W), bool),
    )


def test_memory_intervals_and_crop_starts():
    ep = synthetic_episode(events=[(7, 16, 5), (9, 3, 1), (11, 16, 2)])
    # frame 9 has too few memory pixels for a measured gap: its source is unknown, reported as 0
    assert memory_intervals(ep).tolist() == [[2, 7], [0, 9], [9, 11]]
    # length 6 over 12 frames: starts 0..6; (2, 7) fits in starts 2; (9, 11) in starts 6..6+
    assert np.flatnonzero(crop_starts(memory_intervals(ep), 12, 6)).tolist() == [2, 6]
    s = make_sample(ep, "x@y", start=3, length=6)  # frames 3..8: frame 7's source (2) lies before
    assert not s["memory_mask"].any() and int(s["novel_mask"][4].sum()) == 16
    s = make_sample(ep, "x@y", start=2, length=6)
    assert int(s["memory_mask"][5].sum()) == 16 and not s["novel_mask"].any()
    assert s["frames"].shape == (6, 3, 4, 4) and s["frames"].dtype == torch.uint8 and s["start"] == 2


def test_crops_keep_memory_events_whole_and_are_seeded(scene):
    data = EpisodeDataset(scene, 8, crop=24, seed=3)
    kept = 0
    for i in range(8):
        s, ep = data[i], data.episode(i)
        a = s["start"]
        assert s["frames"].shape == (24, 3, 32, 32) and 0 <= a <= scene.frames - 24
        assert torch.equal(s["frames"], torch.from_numpy(ep.frames[a : a + 24]).permute(0, 3, 1, 2))
        assert torch.equal(s["actions"], torch.from_numpy(ep.actions[a : a + 24]))
        ev = {t: src for src, t in memory_intervals(ep)}
        for t in np.flatnonzero(s["memory_mask"].flatten(1).any(1).numpy()):
            assert ev[a + t] >= a  # every memory frame kept has its source inside the crop
            kept += 1
        # a pixel is dropped from the memory mask only into the novel mask
        assert torch.equal(
            s["memory_mask"] | s["novel_mask"], torch.from_numpy(ep.memory_mask[a : a + 24] | ep.novel_mask[a : a + 24])
        )
        assert EpisodeDataset(scene, 8, crop=24, seed=3)[i]["start"] == a  # (seed, index) -> the same crop
    assert kept > 0
    starts = {EpisodeDataset(scene, 8, crop=24, seed=k)[0]["start"] for k in range(6)}
    assert len(starts) > 1  # the seed matters
    whole = EpisodeDataset(scene, 2, float_frames=True)[1]
    assert whole["frames"].shape[0] == scene.frames and whole["frames"].dtype == torch.float32
    assert float(whole["frames"].max()) <= 1.0 and whole["task"] == scene.key and whole["episode"] == 1


# ------------------------------------------------------------------------------------------------
# loaders: determinism across workers, sharding across ranks


def batches(loader, n):
    return [b for _, b in zip(range(n), loader)]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)


def test_task_loader_is_round_robin_and_the_same_for_any_number_of_workers(occ, scene):
    tasks = [occ, scene]
    b0 = batches(task_loader(tasks, 2, crop=16, seed=1, start=1, stop=5, workers=0), 10)
    b2 = batches(task_loader(tasks, 2, crop=16, seed=1, start=1, stop=5, workers=2), 10)
    assert len(b0) == 4 and all(same(x, y) for x, y in zip(b0, b2))
    # batch i: task i mod 2, its episodes (i // 2) * 2 + j
    assert [(b["task"], b["episode"].tolist()) for b in b0] == [
        (scene.key, [0, 1]),
        (occ.key, [2, 3]),
        (scene.key, [2, 3]),
        (occ.key, [4, 5]),
    ]
    ep = get_generator(occ.family)(training_spec(occ)).generate(3)
    assert torch.equal(b0[1]["actions"][1], torch.from_numpy(ep.actions[b0[1]["start"][1] :][:16]))
    assert RoundRobinBatches(3, 2, rank=1, world_size=2).batch(4) == [(1, 6), (1, 7)]
    assert round_robin_episodes(3, 2, 7) == [6, 4, 4] and round_robin_episodes(3, 2, 1) == [2, 0, 0]


def test_stream_is_the_same_for_0_and_2_workers(occ):
    def loader(workers, **kw):
        stream = EpisodeStream(occ, crop=20, seed=5, **kw)
        return torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers)

    s0, s2 = batches(loader(0), 6), batches(loader(2), 6)
    assert [s["episode"] for s in s0] == list(range(6)) and all(same(a, b) for a, b in zip(s0, s2))
    b0, b2 = batches(loader(0, batch_size=3), 3), batches(loader(2, batch_size=3), 3)
    assert [b["episode"].tolist() for b in b0] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert all(same(a, b) for a, b in zip(b0, b2))
    assert same(b0[1], collate(s0[3:6]))


def test_stream_shards_2_workers_x_2_ranks_disjoint_and_covering(occ):
    per_rank = 10
    seen = {}
    for rank in range(2):
        stream = EpisodeStream(occ, crop=4, rank=rank, world_size=2, start=3)
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
        eps = [s["episode"] for s in batches(loader, per_rank)]
        assert len(set(eps)) == per_rank
        assert eps == list(range(3 + rank, 3 + 2 * per_rank, 2))  # any worker count: rank r takes start + r + 2m
        seen[rank] = set(eps)
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(range(3, 3 + 2 * per_rank))
    with pytest.raises(MemorybenchError, match="rank must be"):
        next(iter(EpisodeStream(occ, rank=2, world_size=2)))


def test_map_style_from_the_cache_and_from_disk(occ, tmp_path):
    on_the_fly = EpisodeDataset(occ, 3, crop=10, seed=2)
    cached = EpisodeDataset(occ, 3, crop=10, seed=2, cache=True)
    assert len(cached) == 3 and cached.path is not None and all(same(on_the_fly[i], cached[i]) for i in range(3))
    with pytest.raises(IndexError):
        cached[3]
    assert (
        main(
            [
                "tasks",
                "generate",
                "occlusion-recall",
                "--tier",
                "smoke",
                "--split",
                "train",
                "--episodes",
                "3",
                "--out",
                str(tmp_path / "train"),
            ]
        )
        == 0
    )
    man = json.loads((tmp_path / "train" / "manifest.json").read_text())
    assert (man["split"], man["seed"], man["episode_range"]) == ("train", occ.seed + TRAIN_SEED_OFFSET, [0, 3])
    disk = EpisodeDataset.from_disk(tmp_path / "train", crop=10, seed=2)
    assert all(same(on_the_fly[i], disk[i]) for i in range(3))
    loader = torch.utils.data.DataLoader(disk, batch_size=3, num_workers=2, collate_fn=collate)
    assert torch.equal(next(iter(loader))["frames"], collate([disk[i] for i in range(3)])["frames"])
    # an evaluation dataset is not training data
    assert main(["tasks", "generate", "occlusion-recall", "--tier", "smoke", "--out", str(tmp_path / "eval")]) == 0
    with pytest.raises(TrainingDataError, match="split 'eval'"):
        EpisodeDataset.from_disk(tmp_path / "eval")


# ------------------------------------------------------------------------------------------------
# npz export, read back by the recorded family


def recorded_spec(tmp_path, path, task, extra=""):
    f = tmp_path / f"rec-{path.name}.yaml"
    nvec = task.action_space.nvec
    actions = (
        f"    action_nvec: {list(nvec)}\n"
        if len(nvec) > 1
        else (f"    action_labels: {list(task.action_space.labels[0])}\n")
    )
    f.write_text(f"""\
name: rec-{path.name}
family: recorded
generator_version: 1
common:
  recent_window: {task.recent_window}
  seed: 0
  params:
    path: {path}
    position_key: ''
{actions}{extra}
tiers:
  smoke: {{frames: {task.frames}, context_frames: {task.context_frames}, resolution: {list(task.resolution)},
          episodes: {task.episodes}}}
""")
    return load_task_file(f)["smoke"]


@pytest.mark.parametrize("name", ["occlusion-recall", "scene-retrieval"])
def test_npz_export_is_read_back_by_recorded_with_identical_frames_and_actions(name, tmp_path):
    task = get_task(name, "smoke")
    spec = training_spec(task, 3)
    path = export_npz(spec, tmp_path / name, "train", workers=2)
    man = json.loads((path / "manifest.json").read_text())
    assert (man["split"], man["seed"], man["episode_range"]) == ("train", spec.seed, [0, 3])
    assert [e["file"] for e in man["episodes"]] == [f"ep-00000{i}.npz" for i in range(3)]
    rec = recorded_spec(tmp_path, path, spec)
    assert rec.action_space.nvec == task.action_space.nvec
    gen, reader = get_generator(spec.family)(spec), get_generator("recorded")(rec)
    for i in range(3):
        ep, back = gen.generate(i), reader.generate(i)
        assert np.array_equal(back.frames, ep.frames) and np.array_equal(back.actions, ep.actions)
        with np.load(path / f"ep-00000{i}.npz", allow_pickle=False) as z:
            assert np.array_equal(z["memory_mask"], ep.memory_mask) and np.array_equal(z["novel_mask"], ep.novel_mask)
            assert np.array_equal(z["memory_gap"], ep.memory_gap) and np.array_equal(z["poses"], ep.poses)
            assert z["pose_names"].tolist() == list(spec.pose_fields) and int(z["episode"]) == i
            assert json.loads(str(z["info"])) == ep.info and man["episodes"][i]["sha256"] == ep.sha256()
            if len(task.action_space.nvec) == 1:  # Memory Maze's one-hot layout
                assert z["action"].shape == (spec.frames, task.action_space.nvec[0]) and z["action"].sum(1).max() == 1
    with pytest.raises(TrainingDataError, match="not empty"):
        export_npz(spec, path, "train")


def test_maze_like_poses_are_written_as_agent_pos_and_agent_dir(tmp_path):
    maze = get_task("maze-retrieval", "smoke")  # its layout only: no simulator needed
    T, (H, W) = maze.frames, maze.resolution
    rng = np.random.default_rng(0)
    ang = rng.uniform(-np.pi, np.pi, T)
    poses = np.concatenate([rng.uniform(0, 9, (T, 2)), np.stack([np.cos(ang), np.sin(ang)], 1)], 1).astype(np.float32)
    ep = Episode(
        task=maze.name,
        index=0,
        frames=rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8),
        actions=rng.integers(0, 6, (T, 1)),
        poses=poses,
        memory_gap=np.ones(T, np.int32),
        memory_gap_rollout=np.ones(T, np.int32),
        memory_mask=np.zeros((T, H, W), bool),
        novel_mask=np.ones((T, H, W), bool),
    )
    arrays = npz_arrays(ep, maze)
    assert "poses" not in arrays and np.array_equal(arrays["agent_pos"], poses[:, :2])
    d = tmp_path / "maze"
    d.mkdir()
    np.savez_compressed(d / "ep-000000.npz", **arrays)
    rec = load_task_file(
        _write(
            tmp_path / "m.yaml",
            f"""\
name: m
family: recorded
generator_version: 1
common: {{recent_window: 4, seed: 0, params: {{path: {d}}}}}
tiers:
  smoke: {{frames: {T}, context_frames: {maze.context_frames}, resolution: [{H}, {W}], episodes: 1}}
""",
        )
    )["smoke"]
    back = get_generator("recorded")(rec).generate(0)
    assert np.array_equal(back.frames, ep.frames) and np.array_equal(back.actions, ep.actions)
    assert np.allclose(back.poses, poses, atol=1e-6)


def _write(path, text):
    path.write_text(text)
    return path


def test_recorded_multi_component_actions_are_checked(occ, tmp_path):
    path = export_npz(training_spec(occ, 2), tmp_path / "o", "train")
    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    with np.load(bad / "ep-000000.npz", allow_pickle=False) as z:
        arrays = dict(z)
    arrays["action"][5, 2] = 4
    np.savez(bad / "ep-000000.npz", **arrays)
    rec = recorded_spec(tmp_path, bad, training_spec(occ, 2))
    with pytest.raises(MemorybenchError, match="value 4 in component 2 at frame 5, outside 0..3"):
        get_generator("recorded")(rec).generate(0)


# ------------------------------------------------------------------------------------------------
# guards


def test_runner_refuses_a_recorded_task_over_a_train_split(occ, tmp_path):
    path = export_npz(training_spec(occ, occ.episodes), tmp_path / "train-npz", "train")
    rec = recorded_spec(tmp_path, path, occ)
    with pytest.raises(TrainingDataError, match="manifest.json says split 'train'"):
        evaluate(RunRequest(model="copy-last", tasks=[rec], out=tmp_path / "run", retention=False, progress=False))
    assert not (tmp_path / "run").exists()
    # an eval split exported as files is evaluation data
    ok = recorded_spec(tmp_path, export_npz(occ, tmp_path / "eval-npz", "eval"), occ)
    run = evaluate(
        RunRequest(model="copy-last", tasks=[ok], out=tmp_path / "ok", retention=False, progress=False, limit=1)
    )
    assert load_run_json(run)["tasks"][0]["split"] == "eval"
    # ... and the split and seed are in the summary too (every results file says where its episodes came from)
    group = json.loads((run / "summary.json").read_text())["groups"][f"{ok.key}/rollout"]
    assert (group["split"], group["seed"]) == ("eval", load_run_json(run)["tasks"][0]["seed"])


def test_runner_refuses_a_dataset_manifest_of_the_train_split(occ, tmp_path):
    from memorybench.splits import check_evaluation_data

    for split in ("eval", "train"):
        storage.write(occ, tmp_path / split, split=split)
    check_evaluation_data(occ, storage.open_store(tmp_path / "eval", occ))
    with pytest.raises(TrainingDataError, match="train/manifest.json says split 'train'"):
        check_evaluation_data(occ, storage.open_store(tmp_path / "train", occ))


def card_copy(tmp_path, edit=None):
    """The shipped s4 checkpoint and its card, copied (and the card edited) into tmp_path."""
    src = default_checkpoint("s4")
    d = tmp_path / "s4"
    d.mkdir()
    shutil.copy(src, d / src.name)
    card = json.loads(src.with_name("card.json").read_text())
    if edit:
        edit(card)
    (d / "card.json").write_text(json.dumps(card))
    return d / src.name, card


def test_runner_refuses_a_model_card_with_evaluation_seeds(tmp_path, registry):
    spec = registry.get("occlusion-recall", "standard")

    def leak(card):
        card["training"]["tasks"][0]["training_seed"] = spec.seed

    ckpt, _ = card_copy(tmp_path, leak)
    req = RunRequest(
        model="s4",
        model_args={"checkpoint": str(ckpt)},
        tasks=[spec],
        out=tmp_path / "run",
        retention=False,
        progress=False,
    )
    with pytest.raises(
        TrainingDataError,
        match=rf"card.json says 's4' was trained on occlusion-recall@standard "
        rf"with seed {spec.seed}, the evaluation seed of {spec.key}",
    ):
        evaluate(req)
    assert not (tmp_path / "run").exists()
    # and through the command line: a clear message, exit code 2, nothing written
    assert (
        main(
            [
                "run",
                "--model",
                "s4",
                "--model-args",
                f"checkpoint={ckpt}",
                "--tasks",
                "occlusion-recall",
                "--out",
                str(tmp_path / "cli"),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert not (tmp_path / "cli" / "s4").exists()


def test_run_json_records_splits_seeds_and_what_the_model_was_trained_on(tmp_path, occ):
    ckpt, card = card_copy(tmp_path)
    run = evaluate(
        RunRequest(
            model="s4",
            model_args={"checkpoint": str(ckpt)},
            tasks=[occ],
            out=tmp_path / "run",
            retention=False,
            progress=False,
            limit=1,
        )
    )
    meta = load_run_json(run)
    assert [(t["key"], t["split"], t["seed"]) for t in meta["tasks"]] == [(occ.key, "eval", occ.seed)]
    trained = meta["model"]["trained_on"]
    assert trained["card"] == str(ckpt.with_name("card.json")) and trained["split"] == "train"
    assert [t["training_seed"] for t in trained["tasks"]] == [t["training_seed"] for t in card["training"]["tasks"]]
    # models without a card say so
    base = evaluate(
        RunRequest(model="copy-last", tasks=[occ], out=tmp_path / "cl", retention=False, progress=False, limit=1)
    )
    assert load_run_json(base)["model"]["trained_on"] is None


def test_cli_generate_errors_are_clear(capsys, tmp_path):
    for args, msg in [
        (["--split", "test"], "unknown split 'test'"),
        (["--episodes", "9"], "exactly 8 episodes"),
        (["--format", "npz"], "--format npz needs --out"),
        (["--format", "zip", "--out", str(tmp_path)], "--format must be one of hf, npz"),
    ]:
        assert main(["tasks", "generate", "occlusion-recall", "--tier", "smoke", *args]) == 2
        assert msg in capsys.readouterr().err.replace("\n", " ")
