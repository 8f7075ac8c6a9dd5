"""Training: the data stream, exact resume, the time budget, the outputs it writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from memorybench.hashing import file_sha256
from memorybench.errors import MemorybenchError
from memorybench.generators import get_generator
from memorybench.models import load_model
from memorybench.tasks import get_task
from memorybench.train import TRAIN_SEED_OFFSET, EpisodeBatches, train, training_data_hash

TINY = {"width": 32, "layers": 1, "heads": 2, "stem_channels": 8, "mlp_ratio": 2}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def specs():
    return [get_task(n, "smoke") for n in ("occlusion-recall", "scene-retrieval", "scene-reasoning")]


def run(model, specs, out, steps=6, **kw):
    args = dict(batch_size=1, window=8, model_config=TINY, checkpoint_every=3, progress=False)
    return train(model, specs, steps, out, **{**args, **kw})


def test_the_data_stream_is_training_data_and_a_function_of_the_step(specs):
    data = EpisodeBatches(specs, batch_size=2, window=None, seed=0)
    b = data[4]  # step 4: task 4 mod 3 = scene-retrieval, episodes 8 and 9 of its training seed
    spec = specs[1]
    train_ep = get_generator(spec.family)(data.specs[1]).generate(8)
    assert data.specs[1].seed == spec.seed + TRAIN_SEED_OFFSET
    assert np.array_equal(b["frames"][0].numpy(), train_ep.frames)
    assert not np.array_equal(train_ep.frames, get_generator(spec.family)(spec).generate(8).frames)
    assert torch.equal(EpisodeBatches(specs, 2, None, 0)[4]["frames"], b["frames"])
    windowed = EpisodeBatches(specs, batch_size=2, window=8, seed=0)[4]
    assert windowed["frames"].shape[:2] == (2, 8) and windowed["memory"].shape == (2, 8, 32, 32)


@pytest.mark.parametrize("model", ["lssvwm", "diffusion"])
def test_resume_after_a_crash_gives_the_same_weights(specs, tmp_path, monkeypatch, model):
    whole = run(model, specs, tmp_path / "whole")

    real = EpisodeBatches.__getitem__

    def crash_at_step_3(self, step):
        if step == 3:
            raise RuntimeError("killed")
        return real(self, step)

    monkeypatch.setattr(EpisodeBatches, "__getitem__", crash_at_step_3)
    with pytest.raises(RuntimeError, match="killed"):
        run(model, specs, tmp_path / "resumed")
    state = torch.load(tmp_path / "resumed" / "train_state.pt", weights_only=True)
    assert state["step"] == 3 and not (tmp_path / "resumed" / "model.safetensors").exists()
    monkeypatch.setattr(EpisodeBatches, "__getitem__", real)
    resumed = run(model, specs, tmp_path / "resumed", resume=True)

    assert file_sha256(resumed) == file_sha256(whole)  # weights and metadata, byte for byte
    a, b = (json.loads((p.parent / "card.json").read_text())["training"] for p in (whole, resumed))
    assert a["loss_curve"] == b["loss_curve"] and b["steps"] == 6


def test_outputs_card_and_loadable_checkpoint(specs, tmp_path):
    path = run("mamba", specs, tmp_path / "m", steps=4, log_every=2)
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    t = card["training"]
    assert card["model"] == "mamba" and card["config"]["width"] == 32 and card["license"] == "Apache-2.0"
    assert [x["key"] for x in t["tasks"]] == [s.key for s in specs]
    assert [x["spec_hash"] for x in t["tasks"]] == [s.hash() for s in specs]
    assert t["data_hash"] == training_data_hash(specs) and t["seed_offset"] == TRAIN_SEED_OFFSET
    assert t["steps"] == 4 and t["complete"] and [s for s, _ in t["loss_curve"]] == [2, 4]
    assert np.isfinite(t["final_loss"]) and card["checkpoint"]["sha256"] == file_sha256(path)
    model = load_model("mamba", {"checkpoint": str(path)})
    assert model.num_parameters() == card["parameters"]
    assert model.identity()["checkpoint_sha256"] == card["checkpoint"]["sha256"]


def test_time_budget_stops_cleanly_and_resume_finishes(specs, tmp_path):
    run("s4", specs, tmp_path / "s", steps=5, max_seconds=0)
    card = json.loads((tmp_path / "s" / "card.json").read_text())["training"]
    assert card["steps"] == 1 and card["steps_planned"] == 5 and card["stopped_by_time_limit"]
    run("s4", specs, tmp_path / "s", steps=5, resume=True)
    card = json.loads((tmp_path / "s" / "card.json").read_text())["training"]
    assert card["steps"] == 5 and card["complete"]


def test_refuses_to_overwrite_or_to_resume_another_run(specs, tmp_path):
    run("full-attention", specs, tmp_path / "a", steps=2)
    with pytest.raises(MemorybenchError, match="resume=True"):
        run("full-attention", specs, tmp_path / "a", steps=2)
    with pytest.raises(MemorybenchError, match="differs in lr"):
        run("full-attention", specs, tmp_path / "a", steps=2, resume=True, lr=5e-4)
    with pytest.raises(MemorybenchError, match="different resolutions"):
        run("full-attention", specs + [get_task("occlusion-recall", "standard")], tmp_path / "b")
