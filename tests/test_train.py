"""Training: the data stream, exact resume, the time budget, the outputs it writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from memorybench import data
from memorybench.errors import MemorybenchError
from memorybench.generators import get_generator
from memorybench.hashing import file_sha256
from memorybench.models import load_model
from memorybench.tasks import get_task
from memorybench.train import TRAIN_SEED_OFFSET, train, training_data_hash, training_spec

TINY = {"width": 32, "layers": 1, "heads": 2, "stem_channels": 8, "mlp_ratio": 2}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def specs():
    return [get_task(n, "smoke") for n in ("occlusion-recall", "scene-retrieval", "scene-reasoning")]


def run(model, specs, out, steps=6, **kw):
    args = dict(batch_size=1, window=8, model_config=TINY, checkpoint_every=3, progress=False)
    return train(model, specs, steps, out, **{**args, **kw})


def test_the_data_stream_is_training_data_and_a_function_of_the_step(specs):
    def step(i, **kw):
        return next(iter(data.task_loader(specs, 2, start=i, stop=i + 1, **kw)))

    b = step(4)  # step 4: task 4 mod 3 = scene-retrieval, episodes 2 and 3 (4 // 3 * 2 + j) of its training seed
    spec = specs[1]
    train_ep = get_generator(spec.family)(training_spec(spec)).generate(2)
    assert training_spec(spec).seed == spec.seed + TRAIN_SEED_OFFSET
    assert b["task"] == spec.key and b["episode"].tolist() == [2, 3]
    assert np.array_equal(b["frames"][0].permute(0, 2, 3, 1).numpy(), train_ep.frames)
    assert not np.array_equal(train_ep.frames, get_generator(spec.family)(spec).generate(2).frames)
    assert torch.equal(step(4)["frames"], b["frames"])
    windowed = step(4, crop=8)
    assert windowed["frames"].shape[:2] == (2, 8) and windowed["memory_mask"].shape == (2, 8, 32, 32)


@pytest.mark.parametrize("model", ["lssvwm", "diffusion"])
def test_resume_after_a_crash_gives_the_same_weights(specs, tmp_path, monkeypatch, model):
    whole = run(model, specs, tmp_path / "whole")

    real = data.RoundRobinBatches.batch

    def crash_at_step_3(self, step):
        if step == 3:
            raise RuntimeError("killed")
        return real(self, step)

    monkeypatch.setattr(data.RoundRobinBatches, "batch", crash_at_step_3)
    with pytest.raises(RuntimeError, match="killed"):
        run(model, specs, tmp_path / "resumed")
    state = torch.load(tmp_path / "resumed" / "train_state.pt", weights_only=True)
    assert state["step"] == 3 and not (tmp_path / "resumed" / "model.safetensors").exists()
    monkeypatch.setattr(data.RoundRobinBatches, "batch", real)
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
    # batch size 1, 4 steps over 3 tasks: task 0 got steps 0 and 3 (episodes 0, 1), the others one each
    assert t["split"] == "train" and [(x["training_seed"], x["episode_range"]) for x in t["tasks"]] == [
        (s.seed + TRAIN_SEED_OFFSET, [0, n]) for s, n in zip(specs, [2, 1, 1])
    ]
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


def test_workers_do_not_change_the_weights(specs, tmp_path):
    a = run("s4", specs, tmp_path / "w0", steps=3, workers=0)
    b = run("s4", specs, tmp_path / "w2", steps=3, workers=2)
    assert file_sha256(a) == file_sha256(b)


def test_a_window_shorter_than_a_gap_is_reported_when_training_starts(registry, tmp_path, capsys):
    """Training on crops shorter than a task's longest memory gap says so, naming the task and the gap,
    before the first step."""
    from memorybench.cli import main
    from memorybench.train import ShortWindowWarning, longest_gaps, warn_short_window

    spec = registry.get("occlusion-recall", "smoke")
    gap = longest_gaps([spec])[spec.key]
    assert gap == max(spec.params.gaps) + 1  # the longest occlusion trial, seen from its last visible frame
    with pytest.warns(ShortWindowWarning, match=f"occlusion-recall@smoke \\({gap} frames\\)"):
        warn_short_window([spec], 24)
    assert warn_short_window([spec], gap + 1) == {}
    assert (
        main(
            [
                "train",
                "s4",
                "--tasks",
                "occlusion-recall",
                "--tier",
                "smoke",
                "--steps",
                "1",
                "--window",
                "24",
                "--batch-size",
                "1",
                "--out",
                str(tmp_path / "m"),
                "--config",
                "width=16,layers=1,heads=2",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err.replace("\n", " ")
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert card["training"]["command"].startswith("memorybench train s4 --tasks occlusion-recall --tier smoke")
    assert f"window 24 is shorter than the longest memory gap of occlusion-recall@smoke ({gap} frames)" in err


def test_memory_weights_give_the_memory_pixels_their_share():
    from memorybench.train import memory_weights

    mem = torch.zeros(2, 3, 4, 4, dtype=torch.bool)
    mem[0, 1, :2, :2] = True
    w = memory_weights(mem, 0.5)
    assert torch.isclose(w.sum(), torch.tensor(1.0)) and torch.isclose(w[mem].sum(), torch.tensor(0.5 + 0.5 * 4 / 96))
    assert memory_weights(torch.zeros_like(mem), 0.5) is None and memory_weights(mem, 0.0) is None


def test_a_curriculum_trains_each_window_in_turn(registry, tmp_path):
    """Phases of windows run in order; resuming in the middle of a later phase ends where an
    uninterrupted run ends (the data stream of each phase is a function of the step index)."""
    from memorybench.train import curriculum_phases, parse_curriculum

    assert parse_curriculum("2:24, 1:full") == [(2, 24), (1, None)]
    assert curriculum_phases(9, None, [(2, 24), (1, None)]) == [(0, 2, 24), (2, 3, None)]
    with pytest.raises(MemorybenchError, match="STEPS:WINDOW"):
        parse_curriculum("2-24")
    spec = registry.get("occlusion-recall", "smoke")
    cfg = {"width": 16, "layers": 1, "heads": 2}
    kw = dict(batch_size=1, model_config=cfg, progress=False, curriculum=[(2, 24), (2, None)])
    full = train("s4", [spec], 0, tmp_path / "a", **kw)
    card = json.loads((tmp_path / "a" / "card.json").read_text())
    assert card["training"]["curriculum"] == [[2, 24], [2, None]] and card["training"]["steps"] == 4
    train("s4", [spec], 0, tmp_path / "b", max_seconds=0.0, **kw)  # stops after the first step
    resumed = train("s4", [spec], 0, tmp_path / "b", resume=True, **kw)
    assert file_sha256(full) == file_sha256(resumed)
