"""The generators: determinism, the standard tier's promises, and masks checked by brute force."""

from __future__ import annotations

import numpy as np
import pytest
from bruteforce import masks_from_identities, occlusion_identity, scene_identity
from conftest import shrink

from memorybench.episode import NEVER_SEEN, frame_gaps, memory_metadata
from memorybench.generators import get_generator


def generate(spec, index=0):
    return get_generator(spec.family)(spec).generate(index)


@pytest.mark.parametrize("name", ["occlusion-recall", "scene-retrieval", "scene-reasoning"])
def test_same_seed_same_bytes_other_seed_differs(registry, name):
    spec = registry.get(name, "smoke")
    a, b = generate(spec, 1), generate(spec, 1)
    assert a.sha256() == b.sha256()
    for k, arr in a.arrays().items():
        assert np.array_equal(arr, b.arrays()[k]), k
    other_seed = shrink(spec, seed=spec.seed + 1)
    assert generate(other_seed, 1).sha256() != a.sha256()
    assert generate(spec, 2).sha256() != a.sha256()  # another episode index


@pytest.mark.parametrize("name", ["occlusion-recall", "scene-retrieval", "scene-reasoning"])
def test_episode_matches_spec(registry, name):
    for tier in ("smoke", "standard"):
        spec = registry.get(name, tier)
        ep = generate(spec, 0)
        ep.check(spec.frames, spec.resolution, spec.action_space.dims, len(spec.pose_fields))
        assert (ep.actions >= 0).all() and (ep.actions < np.array(spec.action_space.nvec)).all()
        # the memory-only pixels are where the task says they are: after the context
        assert ep.memory_mask[spec.context_frames :].sum() > 0
        assert (ep.memory_mask & ep.novel_mask).sum() == 0
        assert ep.memory_gap[0] == NEVER_SEEN and ep.novel_mask[0].all()


def test_standard_tier_frames_and_gaps(registry):
    for spec in registry.select("standard"):
        assert spec.frames >= 512 and spec.resolution == (64, 64)
    spec = registry.get("occlusion-recall", "standard")
    gen = get_generator(spec.family)(spec)
    n_slots = spec.params.slots[0] * spec.params.slots[1]
    covered = set()
    for i in range(3):
        ep = gen.generate(i)
        cs_rows = ep.poses[:, :n_slots].max(0)  # the fully-closed cover of each slot
        for trial in ep.info["trials"]:
            k, g, r = trial["slot"], trial["gap"], trial["reveal"]
            cover = ep.poses[:, k]
            # closed for exactly g frames right before the reveal, and open again from it
            assert (cover[r - g : r] == cs_rows[k]).all() and cover[r - g - 1] < cs_rows[k] and cover[r] < cs_rows[k]
            assert trial["hidden"] == r - g <= spec.context_frames
            # the reveal's memory-only pixels are at least g frames old
            revealing = ep.memory_mask[r]
            assert revealing.any() and ep.memory_gap[r] > g
            covered.add(g)
    assert covered == set(spec.params.gaps)


def test_scene_retrace_revisits_exact_views(registry):
    spec = registry.get("scene-retrieval", "smoke")
    ep = generate(spec, 0)
    C = spec.context_frames
    for j in range(spec.predict_frames):
        assert np.array_equal(ep.poses[C + j], ep.poses[C - 2 - j])
        assert np.array_equal(ep.frames[C + j], ep.frames[C - 2 - j])


def test_scene_revisit_goes_back_far(registry):
    spec = registry.get("scene-reasoning", "standard")
    ep = generate(spec, 0)
    C = spec.context_frames
    mem = ep.memory_mask[C:].reshape(spec.predict_frames, -1).sum(1) >= 16
    gaps = ep.memory_gap[C:][mem]
    assert len(gaps) > spec.predict_frames // 4
    assert np.median(gaps) >= spec.params.min_revisit_age // 2


def _check_masks(ep, age, memory, novel, age_rollout):
    assert np.array_equal(novel, ep.novel_mask), "novel masks differ from the brute-force recomputation"
    assert np.array_equal(memory, ep.memory_mask), "memory masks differ from the brute-force recomputation"
    assert np.array_equal(frame_gaps(age, memory, novel), ep.memory_gap)
    assert np.array_equal(frame_gaps(age_rollout, memory, novel), ep.memory_gap_rollout)


@pytest.mark.parametrize("name", ["scene-retrieval", "scene-reasoning"])
def test_scene_masks_by_brute_force(registry, name):
    spec = shrink(
        registry.get(name, "smoke"),
        frames=40,
        context_frames=24,
        resolution=(16, 16),
        params={"map_size": (64, 64), "step": 2, "min_revisit_age": 8},
    )
    ep = generate(spec, 3)
    H, W = spec.resolution
    masks = masks_from_identities(
        scene_identity(spec, ep.poses.astype(int)), spec.frames, H, W, spec.recent_window, spec.context_frames
    )
    _check_masks(ep, *masks)
    memory = masks[1]
    assert memory[spec.context_frames :].any()


def test_occlusion_masks_by_brute_force(registry):
    spec = shrink(
        registry.get("occlusion-recall", "smoke"),
        frames=40,
        context_frames=30,
        params={"gaps": (6, 8, 10, 12), "study_frames": 3},
    )
    ep = generate(spec, 1)
    H, W = spec.resolution
    ident = occlusion_identity(spec, ep.poses.astype(int), ep.info)
    masks = masks_from_identities(
        ident, spec.frames, H, W, spec.recent_window, spec.context_frames, eligible=lambda c: c[0] == "object"
    )  # v2: only objects are memory
    _check_masks(ep, *masks)
    memory = masks[1]
    assert memory[spec.context_frames :].any()


def test_memory_metadata_matches_reference_on_random_ids():
    """Property test of the fast scan against a direct definition, on random id sequences."""
    pytest.importorskip("hypothesis", reason="hypothesis is in the dev extra")
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=60, deadline=None)
    @given(st.integers(2, 12), st.integers(1, 5), st.integers(1, 4), st.integers(0, 2**31 - 1))
    def check(T, n_ids, K, seed):
        rng = np.random.default_rng(seed)
        ids = rng.integers(0, n_ids, (T, 2, 3))
        C = int(rng.integers(1, T + 1))
        meta = memory_metadata(ids, K, C)
        age, memory, novel, age_rollout = masks_from_identities(lambda t, y, x: int(ids[t, y, x]), T, 2, 3, K, C)
        assert np.array_equal(meta.age, age)
        assert np.array_equal(meta.age_rollout, age_rollout)
        assert np.array_equal(meta.novel_mask, novel)
        assert np.array_equal(meta.memory_mask, memory)

    check()


def test_frame_gap_uses_memory_pixels_then_recent_ones():
    # 3 frames of 4x4: frame 2 shows 16 pixels seen at frame 0 only (age 2 > K=1): gap 2
    ids = np.zeros((3, 4, 4), np.int64)
    ids[0] = np.arange(16).reshape(4, 4)
    ids[1] = 100 + np.arange(16).reshape(4, 4)
    ids[2] = ids[0]
    meta = memory_metadata(ids, recent_window=1)
    assert meta.memory_gap.tolist() == [NEVER_SEEN, NEVER_SEEN, 2]
    assert meta.memory_mask[2].all() and not meta.memory_mask[:2].any()
    # with too few memory pixels the gap falls back to the recent pixels' median age (1)
    ids[2, 0, 0] = 0
    ids[2, 1:, :] = ids[1, 1:, :]
    ids[2, 0, 1:] = ids[1, 0, 1:]
    meta = memory_metadata(ids, recent_window=1)
    assert meta.memory_gap[2] == 1 and meta.memory_mask[2].sum() == 1
