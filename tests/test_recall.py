"""Measurement v2: memory items, identification (recall), gaps counted from what the model saw,
the memory horizon, the false-recall rule, and the suite's validity against strategies without memory."""

from __future__ import annotations

import numpy as np
import pytest

from memorybench.aggregate import HORIZON_MIN, AggregationConfig, memory_horizon, summarize_group
from memorybench.episode import MemoryItems, memory_metadata
from memorybench.generators import get_generator
from memorybench.generators.occlusion import OcclusionRecall
from memorybench.recall import evaluate_recall, score_items

PROCEDURAL = ("occlusion-recall", "scene-retrieval", "scene-reasoning")


# -- memory items ------------------------------------------------------------------------------
def test_items_round_trip_and_checks():
    items = MemoryItems.build(
        [
            {"frame": 5, "gap": 9, "gap_rollout": 12, "truth": 3, "key": 1, "pixels": np.array([2, 7, 9])},
            {
                "frame": 4,
                "gap": 6,
                "gap_rollout": 6,
                "truth": 0,
                "key": 0,
                "pixels": np.array([1]),
                "exclude": np.array([4, 5]),
            },
        ],
        extra={"background": np.arange(12, dtype=np.uint8).reshape(2, 2, 3)},
    )
    assert list(items.frame) == [4, 5]  # sorted by frame
    back = MemoryItems.from_bytes(items.to_bytes())
    for k, v in items.arrays().items():
        np.testing.assert_array_equal(back.arrays()[k], v)
    assert list(back.pixels_of(1)) == [2, 7, 9] and list(back.excluded(0)) == [4, 5]
    back.check(frames=6, height=3, width=4)
    with pytest.raises(ValueError, match="outside the episode"):
        back.check(frames=5, height=3, width=4)
    with pytest.raises(ValueError, match="outside the frame"):
        back.check(frames=6, height=2, width=4)


@pytest.mark.parametrize("task", PROCEDURAL)
def test_candidates_contain_the_truth_exactly(registry, task):
    """The true candidate is what the frame shows on the item's pixels; no other candidate is."""
    spec = registry.get(task, "smoke")
    gen = get_generator(spec.family)(spec)
    ep = gen.generate(1)
    items = ep.items
    assert len(items) > 0 and items.frame.min() >= spec.context_frames
    frames = ep.frames.reshape(spec.frames, -1, 3)
    for i in range(0, len(items), max(1, len(items) // 25)):
        cands = gen.item_candidates(ep, i)
        assert cands.shape == (gen.num_candidates(spec), len(items.pixels_of(i)), 3)
        truth = frames[items.frame[i], items.pixels_of(i)]
        same = (cands == truth[None]).all(axis=(1, 2))
        assert same[items.truth[i]] and same.sum() == 1
        # items test memory: their pixels are memory-only pixels of their frame (occlusion: the
        # candidate region covers the object's silhouette, which is the memory mask)
        mem = ep.memory_mask[items.frame[i]].ravel()
        if spec.family == "scene_consistency":
            assert mem[items.pixels_of(i)].all()
        else:
            assert mem.sum() > 0 and np.isin(np.flatnonzero(mem), items.pixels_of(i)).all()
        assert items.gap[i] > spec.recent_window and items.gap_rollout[i] >= items.gap[i]


def test_occlusion_items_exclude_objects_in_view(registry):
    """A model without memory sees the objects revealed just before; they are not offered as candidates."""
    spec = registry.get("occlusion-recall", "standard")
    ep = OcclusionRecall(spec).generate(0)
    trials = {t["slot"]: t for t in ep.info["trials"]}
    for i in range(len(ep.items)):
        k, r = int(ep.items.key[i]), int(ep.items.frame[i])
        shown = {t["object"] for s, t in trials.items() if s != k and t["reveal"] < r}  # revealed objects stay in view
        assert set(ep.items.excluded(i)) == shown
        assert trials[k]["object"] == ep.items.truth[i] and trials[k]["gap"] + 1 == ep.items.gap[i]


# -- gaps counted from what the model saw ---------------------------------------------------------
def test_rollout_gaps_count_from_the_context():
    """Content 7 is seen at frames 0 and 6 (a predicted frame) and returns at frame 10: under teacher
    forcing the model saw it 4 frames ago, under rollout (it never saw frame 6) 10 frames ago."""
    T, C, K = 12, 4, 2
    ids = np.arange(T * 2).reshape(T, 1, 2) + 100  # every frame shows fresh content...
    for t in (0, 6, 10):
        ids[t, 0, 0] = 7  # ...except pixel 0 at frames 0, 6 and 10
    meta = memory_metadata(ids, recent_window=K, context_frames=C, min_memory_pixels=1)
    assert meta.memory_mask[10, 0, 0] and meta.age[10, 0, 0] == 4 and meta.age_rollout[10, 0, 0] == 10
    assert meta.memory_gap[10] == 4 and meta.memory_gap_rollout[10] == 10
    # frame 6 shows it for the first time since frame 0: 6 frames under both protocols
    assert meta.memory_gap[6] == 6 and meta.memory_gap_rollout[6] == 6
    assert meta.novel_mask[10, 0, 1] and not meta.memory_mask[10, 0, 1]  # never seen in the context


def test_scene_items_gap_by_protocol(registry):
    spec = registry.get("scene-reasoning", "smoke")
    gen = get_generator(spec.family)(spec)
    ep = gen.generate(0)
    assert (ep.items.gap_rollout >= ep.items.gap).all() and (ep.items.gap_rollout > ep.items.gap).any()
    C, K = spec.context_frames, spec.recent_window
    perfect = ep.frames[C:]
    rows = score_items(gen, ep, perfect, C, "teacher-forced")
    assert [r["gap"] for r in rows] == list(ep.items.gap)  # every item: its content left the last K frames
    # under rollout, an item whose content the last K context frames show is no memory test (a buffer of
    # the last observed frames predicts it): skipped; the others are scored with the rollout gap
    recent = ep.items.gap_rollout <= (ep.items.frame - C) + K
    assert recent.any() and (~recent).any()
    rows = score_items(gen, ep, perfect, C, "rollout")
    assert [r["item"] for r in rows] == list(np.flatnonzero(~recent))
    assert [r["gap"] for r in rows] == list(ep.items.gap_rollout[~recent])


# -- identification -------------------------------------------------------------------------------
def test_hits_ties_and_chance(registry):
    spec = registry.get("scene-retrieval", "smoke")
    gen = get_generator(spec.family)(spec)
    ep = gen.generate(0)
    C = spec.context_frames
    exact = score_items(gen, ep, ep.frames[C:], C, "teacher-forced")
    assert all(r["hit"] == 1 and r["score"] == 1 and r["chance"] == 1 / 64 for r in exact)
    # a prediction exactly half-way between two palette colours on an item ties them: hit 1/2
    pix = ep.items.pixels_of(0)
    pal = gen.item_candidates(ep, 0)[:, 0].astype(int)  # [64, 3]
    truth = pal[ep.items.truth[0]]
    other = truth.copy()
    other[0] = truth[0] + 64 if truth[0] < 160 else truth[0] - 64
    assert (pal == other).all(axis=1).any()  # the palette's levels are 64 apart
    pred = ep.frames[C:].copy()
    flat = pred.reshape(pred.shape[0], -1, 3)
    flat[ep.items.frame[0] - C, pix] = (truth + other) // 2
    rows = score_items(gen, ep, pred, C, "teacher-forced")
    assert (
        rows[0]["item"] == 0
        and rows[0]["hit"] == 0.5
        and rows[0]["score"] == pytest.approx((0.5 - 1 / 64) / (1 - 1 / 64))
    )


def test_constant_predictions_are_at_chance(registry):
    """Whatever a prediction without memory is, the truth is as likely as any candidate to be closest:
    over many items a constant prediction hits at the chance rate (a binomial bound)."""
    spec = registry.get("scene-retrieval", "smoke")
    gen = get_generator(spec.family)(spec)
    hits, n = 0.0, 0
    for e in range(6):
        ep = gen.generate(e)
        grey = np.full_like(ep.frames[spec.context_frames :], 128)
        rows = score_items(gen, ep, grey, spec.context_frames, "rollout")
        hits += sum(r["hit"] for r in rows)
        n += len(rows)
    p = 1 / 64
    assert abs(hits / n - p) < 4 * np.sqrt(p * (1 - p) / n)


# -- false recall --------------------------------------------------------------------------------
def test_painting_memories_everywhere_scores_below_painting_them_on_time(registry):
    from mb_test_models import OcclusionMemory

    spec = registry.get("occlusion-recall", "smoke")
    on_time = evaluate_recall(OcclusionMemory(), spec, "rollout")["metrics"]
    everywhere = evaluate_recall(OcclusionMemory(everywhere=True), spec, "rollout")["metrics"]
    assert on_time["recall"]["mean"] == 1 and on_time["false_recall"]["mean"] == 0
    assert everywhere["recall_acc"]["mean"] == 1  # it does show every object at its reveal...
    assert everywhere["false_recall"]["mean"] == 1  # ...but also under every closed curtain before
    assert everywhere["recall"]["mean"] == pytest.approx(0.0, abs=1e-12)


# -- the memory horizon -----------------------------------------------------------------------------
def test_horizon_is_the_largest_bin_above_the_no_memory_band():
    def b(lo, hi, ci_low):
        return {"bin": [lo, hi], "metrics": {"recall": {"mean": ci_low + 0.1, "ci_low": ci_low, "ci_high": 1}}}

    assert memory_horizon([b(8, 16, 0.9), b(16, 32, 0.3), b(32, 64, HORIZON_MIN), b(64, 128, -0.1)]) == (16, [16, 32])
    assert memory_horizon([b(8, 16, 0.01)]) == (0, None)


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["rollout", "teacher-forced"])
@pytest.mark.parametrize("task,horizon", [("occlusion-recall", 100), ("scene-retrieval", 100)])
def test_a_memory_of_H_frames_has_its_horizon_in_the_bin_of_H(registry, task, protocol, horizon):
    """A model that remembers what it observed for H frames, then forgets (built from observed frames
    only), gets its memory horizon in the gap bin that contains H; without forgetting, in the last."""
    from mb_test_models import OcclusionMemory, SceneMemory

    spec = registry.get(task, "standard")
    make = OcclusionMemory if spec.family == "occlusion_recall" else SceneMemory
    episodes = range(12)
    forgets = evaluate_recall(make(horizon=horizon), spec, protocol, episodes=episodes)
    lo, hi = forgets["memory_horizon_bin"]
    assert lo <= horizon < hi, forgets["memory_horizon_bin"]
    for bin_ in forgets["by_gap"]:
        r = (bin_.get("metrics") or {}).get("recall")
        if r is not None and bin_["bin"][0] > horizon:
            assert r["ci_high"] <= HORIZON_MIN  # beyond H: no better than a model without memory
    forever = evaluate_recall(make(), spec, protocol, episodes=episodes)
    assert forever["metrics"]["recall"]["mean"] > 0.95
    last = max(b["bin"][0] for b in forever["by_gap"] if b["items"])
    assert forever["memory_horizon"] == last


# -- aggregation ------------------------------------------------------------------------------------
def test_psnr_is_computed_from_the_mean_mse():
    import pandas as pd

    # two episodes, one perfect frame (capped at 100 dB per frame) and one poor frame each
    df = pd.DataFrame(
        {
            "episode": [0, 0, 1, 1],
            "frame": [0, 1, 0, 1],
            "step": [0, 1, 0, 1],
            "memory_gap": [1] * 4,
            "memory_pixels": [0] * 4,
            "mse": [0.0, 0.01, 0.0, 0.03],
            "psnr": [100.0, 20.0, 100.0, 15.23],
        }
    )
    g = summarize_group(df, (1, 8), AggregationConfig(resamples=50), "t/rollout")
    assert g["metrics"]["psnr"]["mean"] == pytest.approx(10 * np.log10(1 / 0.01))  # not (100 + 20 + 100 + 15) / 4
    assert "recall" not in g["metrics"] and "memory_horizon" not in g


def test_summary_recall_equals_the_fast_path(registry, tmp_path):
    """The runner's summary and evaluate_recall compute recall identically (the same items and bootstrap)."""
    import json

    from memorybench.runner import RunRequest, evaluate

    spec = registry.get("scene-reasoning", "smoke")
    run = evaluate(RunRequest(model="blur-last", tasks=[spec], out=tmp_path / "r", progress=False, retention=False))
    group = json.loads((run / "summary.json").read_text())["groups"][f"{spec.key}/rollout"]
    fast = evaluate_recall("blur-last", spec, "rollout")
    assert group["metrics"]["recall"] == fast["metrics"]["recall"]
    assert [b.get("metrics", {}).get("recall") for b in group["by_gap"]] == [
        b.get("metrics", {}).get("recall") for b in fast["by_gap"]
    ]
    assert group["items"] == fast["items"] > 0


# -- validity -----------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("tier", ["smoke", "standard"])
def test_no_memory_strategies_score_at_chance_and_oracles_at_one(registry, tier):
    """The suite's validity: every strategy without memory (copy-last, means, blur, inpainting,
    shifted copies) has its overall recall CI upper bound at most 0.05 and no memory horizon (every gap bin's CI
    lower bound at most 0.05), on every procedural
    task, tier and protocol; perfect-memory and ground-truth score 1."""
    from memorybench.validity import check

    result = check([registry.get(t, tier) for t in PROCEDURAL])
    assert result.problems() == []
    for task in result.results.values():
        for by_model in task.values():
            assert by_model["ground-truth"]["metrics"]["recall"]["mean"] == 1
            assert by_model["perfect-memory"]["metrics"]["recall"]["mean"] >= 0.95


def test_a_candidate_identical_to_the_truth_is_not_offered(registry):
    """Two objects can render to the same pixels on an item's region: offering the twin would make
    even the truth a tie (half credit); it is not offered, and the truth scores 1."""
    spec = registry.get("occlusion-recall", "standard")
    gen = OcclusionRecall(spec)
    ep = gen.generate(2)
    C = spec.context_frames
    twins = []
    for i in range(len(ep.items)):
        c = gen.item_candidates(ep, i)
        same = (c == c[ep.items.truth[i]]).all(axis=(1, 2))
        same[ep.items.excluded(i)] = False
        twins.append(int(same.sum()) - 1)
    assert max(twins) >= 1  # this episode has such an item
    rows = score_items(gen, ep, ep.frames[C:], C, "teacher-forced")
    assert all(r["hit"] == 1 and r["score"] == 1 for r in rows)
    for r in rows:
        n = len(ep.items.excluded(r["item"]))
        if twins[r["item"]]:
            assert 1 / r["chance"] == pytest.approx(gen.num_candidates(spec) - n - twins[r["item"]])


def test_validity_append_adds_tasks_to_an_earlier_check(tmp_path, capsys):
    """`memorybench validity --append` adds tasks to the check in --out (the maze tiers are checked
    on fewer episodes than the procedural ones): earlier tasks are kept, a task checked again is
    replaced, and the verdict covers them all."""
    from memorybench.cli import main
    from memorybench.validity import ValidityResult

    out = tmp_path / "validity.md"
    models = "copy-last,ground-truth"
    assert main(["validity", "--tasks", "occlusion-recall@smoke", "-m", models, "--limit", "1", "-o", str(out)]) == 0
    first = ValidityResult.from_json(out.with_suffix(".json").read_text())
    assert list(first.results) == ["occlusion-recall@smoke"] and first.episodes == {"occlusion-recall@smoke": 1}
    args = ["validity", "--tasks", "scene-retrieval@smoke", "-m", models, "--limit", "2", "-o", str(out), "--append"]
    assert main(args) == 0
    both = ValidityResult.from_json(out.with_suffix(".json").read_text())
    assert list(both.results) == ["occlusion-recall@smoke", "scene-retrieval@smoke"]
    assert both.episodes == {"occlusion-recall@smoke": 1, "scene-retrieval@smoke": 2}
    assert both.results["occlusion-recall@smoke"] == first.results["occlusion-recall@smoke"]
    text = out.read_text()
    assert "## occlusion-recall@smoke · rollout · 1 episodes" in text
    assert "## scene-retrieval@smoke · rollout · 2 episodes" in text
    # a task checked again replaces its earlier sections
    assert main(args[:5] + ["--limit", "1", "-o", str(out), "--append"]) == 0
    again = ValidityResult.from_json(out.with_suffix(".json").read_text())
    assert again.episodes["scene-retrieval@smoke"] == 1 and len(again.results) == 2


def test_validity_append_needs_an_earlier_check(tmp_path, capsys):
    from memorybench.cli import main
    from memorybench.validity import ValidityResult

    assert main(["validity", "--tasks", "occlusion-recall@smoke", "--append"]) == 2
    assert "--append needs --out" in capsys.readouterr().err
    out = tmp_path / "v.md"
    assert main(["validity", "--tasks", "occlusion-recall@smoke", "-o", str(out), "--append"]) == 2
    assert "does not exist" in capsys.readouterr().err
    out.with_suffix(".json").write_text("{not json")
    with pytest.raises(Exception, match="not a validity result"):
        ValidityResult.from_json(out.with_suffix(".json").read_text(), "v.json")
