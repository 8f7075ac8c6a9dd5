"""Training on a finite, cached train split (the Memory Maze tasks' data): generated once into the
cache, checksummed, cycled through by ``task_loader`` and ``train``, chosen by ``--train-episodes``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from memorybench import data, storage
from memorybench.cli.train import _train_episodes
from memorybench.errors import MemorybenchError
from memorybench.splits import train_dir
from memorybench.tasks import get_task
from memorybench.train import train, training_data_hash, training_spec

TINY = {"width": 32, "layers": 1, "heads": 2, "stem_channels": 8, "mlp_ratio": 2}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def specs():
    return [get_task(n, "smoke") for n in ("occlusion-recall", "scene-retrieval")]


def test_a_cached_split_is_generated_once_and_cycled(specs):
    spec = specs[1]
    loader = data.task_loader([spec], 1, stop=5, episodes=[2])
    batches = list(loader)
    assert [b["episode"].tolist() for b in batches] == [[0], [1], [0], [1], [0]]
    # the split is in the cache, where `memorybench tasks generate --split train --episodes 2` puts it
    path = train_dir(training_spec(spec, 2))
    assert storage.verify(path, training_spec(spec, 2)) == []
    assert json.loads((path / "manifest.json").read_text())["split"] == "train"
    # every pass gives the same whole episode: the cached training episode
    fresh = data.EpisodeDataset(spec, 2)[1]
    assert torch.equal(batches[1]["frames"][0], fresh["frames"]) and torch.equal(
        batches[3]["frames"], batches[1]["frames"]
    )
    # crops are drawn per position in the stream: another pass, another crop (same episode)
    cropped = list(data.task_loader([spec], 1, stop=8, episodes=[2], crop=8))
    starts = {int(b["start"][0]) for b in cropped[0::2]}
    assert all(int(b["episode"][0]) == 0 for b in cropped[0::2]) and len(starts) > 1


def test_an_endless_task_beside_a_cached_one(specs):
    b = list(data.task_loader(specs, 1, stop=6, episodes=[None, 1]))
    assert [x["task"] for x in b] == [specs[0].key, specs[1].key] * 3
    assert [int(x["episode"][0]) for x in b] == [0, 0, 1, 0, 2, 0]


def test_bad_episode_counts_are_refused(specs):
    with pytest.raises(MemorybenchError, match="2 episode counts for 1 tasks"):
        data.task_loader(specs[:1], 1, episodes=[1, 2])
    with pytest.raises(MemorybenchError, match="positive integer"):
        data.task_loader(specs[:1], 1, episodes=[0])
    with pytest.raises(MemorybenchError, match="positive integer"):
        train("s4", specs[:1], 1, "unused", train_episodes=[-3], progress=False)


def test_train_records_the_cached_split(specs, tmp_path):
    train(
        "s4",
        specs,
        5,
        tmp_path / "m",
        batch_size=1,
        window=8,
        model_config=TINY,
        progress=False,
        train_episodes=[None, 2],
    )
    t = json.loads((tmp_path / "m" / "card.json").read_text())["training"]
    # 5 steps over 2 tasks: occlusion-recall got steps 0, 2, 4 (episodes 0..2); scene-retrieval steps
    # 1 and 3, samples 0 and 1 of its 2 cached episodes
    first, second = t["tasks"]
    assert first["episode_range"] == [0, 3] and "episodes" not in first and "cached" not in first
    assert second["episode_range"] == [0, 2] and second["episodes"] == 2 and second["cached"] and second["samples"] == 2
    assert t["data_hash"] == training_data_hash(specs, [None, 2]) != training_data_hash(specs)
    train(
        "s4",
        specs,
        7,
        tmp_path / "m2",
        batch_size=1,
        window=8,
        model_config=TINY,
        progress=False,
        train_episodes=[None, 2],
    )
    second = json.loads((tmp_path / "m2" / "card.json").read_text())["training"]["tasks"][1]
    assert second["episode_range"] == [0, 2] and second["samples"] == 3  # a second pass over the 2 episodes
    # resuming with another data setting is refused: the data stream would differ
    with pytest.raises(MemorybenchError, match="differs in tasks$"):
        train(
            "s4",
            specs,
            7,
            tmp_path / "m2",
            batch_size=1,
            window=8,
            model_config=TINY,
            progress=False,
            resume=True,
            train_episodes=[None, 3],
        )


def test_train_episodes_option(specs):
    assert _train_episodes("4", specs) == [4, 4]
    assert _train_episodes("scene-retrieval=64", specs) == [None, 64]
    assert _train_episodes(f"{specs[0].key}=2, scene-retrieval=3", specs) == [2, 3]
    with pytest.raises(MemorybenchError, match="'maze-retrieval' is not one of the training tasks"):
        _train_episodes("maze-retrieval=64", specs)
    with pytest.raises(MemorybenchError, match="positive number of episodes, got 'x'"):
        _train_episodes("scene-retrieval=x", specs)
    with pytest.raises(MemorybenchError, match="positive number"):
        _train_episodes("0", specs)
    assert np.all([n is None for n in _train_episodes("occlusion-recall@smoke=1", specs)[1:]])
