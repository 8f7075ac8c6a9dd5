"""memorybench.testing, the conformance kit: every registered task family and built-in model passes
it, and each check fails on an extension that breaks its rule."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from memorybench.generators import generator_names, get_generator
from memorybench.generators.occlusion import OcclusionRecall
from memorybench.models import BUILTIN_MODELS, MODEL_GROUPS, load_model
from memorybench.models.calibration import CopyLast
from memorybench.testing import ConformanceError, check_adapter, check_generator

#: a zoo model small enough for a unit test (random weights, one layer)
TINY_ZOO = ("lssvwm", "checkpoint=none,width=32,layers=1,heads=2,stem_channels=4")


def _smoke_by_family(registry) -> dict[str, list]:
    out: dict[str, list] = {}
    for spec in registry.all_specs():
        if spec.tier == "smoke":
            out.setdefault(spec.family, []).append(spec)
    return out


def test_every_procedural_family_has_a_smoke_task(registry):
    """The families the next test covers are every registered one that is neither a simulator
    (memory_maze: a slow test below) nor recorded data (recorded: read from files)."""
    families = _smoke_by_family(registry)
    assert set(generator_names()) - {"memory_maze", "recorded"} <= set(families)


@pytest.mark.parametrize("family", sorted(set(generator_names()) - {"memory_maze", "recorded"}))
def test_procedural_families_conform(registry, family):
    for spec in _smoke_by_family(registry)[family]:
        report = check_generator(family, spec)
        assert report.sha256[0] != report.sha256[1]
        if get_generator(family).num_candidates(spec) is not None:
            assert report.items > 0


@pytest.mark.slow
def test_memory_maze_conforms(registry):
    cls = get_generator("memory_maze")
    if cls.unavailable_reason():
        pytest.skip(cls.unavailable_reason())
    spec = registry.get("maze-retrieval", "smoke")
    assert check_generator(cls, spec).items > 0


@pytest.mark.parametrize("name", [m for m in BUILTIN_MODELS if m not in MODEL_GROUPS["zoo"]])
def test_builtin_models_conform(registry, one_thread, name):
    spec = registry.get("occlusion-recall", "smoke")
    report = check_adapter(load_model(name), spec)
    assert report.batch_size == 2 and report.protocols == ("rollout", "teacher-forced")


def test_a_zoo_model_conforms(registry, one_thread):
    spec = registry.get("scene-retrieval", "smoke")
    report = check_adapter(load_model(*TINY_ZOO), spec)
    assert report.episodes == 2 and report.max_difference <= 1


# -- each check fails where it should -------------------------------------------------------------


class Appends(CopyLast):
    """Breaks the contract: predict appends its prediction to the history (a fading copy)."""

    name = "appends"

    def predict(self, actions):
        self.last = self.last * 0.5
        return super().predict(actions)


class BatchMean(CopyLast):
    """Breaks batch independence: every episode gets the batch's mean last frame."""

    name = "batch-mean"

    def predict(self, actions):
        return super().predict(actions).mean(0, keepdim=True).expand(self.last.shape[0], -1, -1, -1, -1).contiguous()


class TooBright(CopyLast):
    name = "too-bright"

    def predict(self, actions):
        return super().predict(actions) * 2.0 + 0.1


class Remembers(CopyLast):
    """Breaks reset: its predictions depend on how many episodes it has seen before (caught when
    a later run of the same episodes differs from the first one)."""

    name = "remembers"
    seen = 0

    def reset(self, spec, batch_size):
        super().reset(spec, batch_size)
        self.seen += batch_size

    def predict(self, actions):
        return (0.9 * super().predict(actions) + 0.01 * min(self.seen, 10)).contiguous()


@pytest.mark.parametrize(
    "cls, check",
    [
        (Appends, "predict leaves the history unchanged"),
        (BatchMean, "results independent of batch size"),
        (TooBright, "outputs"),
        (Remembers, "results independent of batch size"),
    ],
)
def test_check_adapter_catches(registry, one_thread, cls, check):
    spec = registry.get("occlusion-recall", "smoke")
    with pytest.raises(ConformanceError) as e:
        check_adapter(cls(), spec)
    assert e.value.check.startswith(check) and f"model '{cls.name}'" in str(e.value)


class GlobalRandom(OcclusionRecall):
    """Breaks determinism: draws from numpy's global generator."""

    def generate(self, index):
        ep = super().generate(index)
        ep.frames[0, 0, 0] = np.random.randint(0, 256, 3)
        return ep


class Overlapping(OcclusionRecall):
    def generate(self, index):
        ep = super().generate(index)
        t = int(ep.memory_mask.sum((1, 2)).argmax())
        ep.novel_mask[t] |= ep.memory_mask[t]
        return ep


class WrongShape(OcclusionRecall):
    def generate(self, index):
        ep = super().generate(index)
        ep.frames = ep.frames[..., :1]
        return ep


class ItemOutside(OcclusionRecall):
    def generate(self, index):
        ep = super().generate(index)
        ep.items = dataclasses.replace(ep.items, frame=np.zeros_like(ep.items.frame))
        return ep


class WrongTruth(OcclusionRecall):
    def generate(self, index):
        ep = super().generate(index)
        ep.items = dataclasses.replace(ep.items, truth=(ep.items.truth + 1) % self.num_candidates(self.spec))
        return ep


class OtherFamily(OcclusionRecall):
    family = "something_else"


@pytest.mark.parametrize(
    "cls, check, detail",
    [
        (GlobalRandom, "determinism", "episode 0 differs in 'frames'"),
        (Overlapping, "masks", "memory-only and novel"),
        (WrongShape, "episode arrays", "'frames' has dtype uint8 and shape"),
        (ItemOutside, "memory items", "before the predicted frames"),
        (WrongTruth, "memory items", "the true candidate"),
        (OtherFamily, "registration", "declares family = 'something_else'"),
    ],
)
def test_check_generator_catches(registry, cls, check, detail):
    spec = registry.get("occlusion-recall", "smoke")
    with pytest.raises(ConformanceError, match=detail) as e:
        check_generator(cls, spec)
    assert e.value.check == check and "occlusion_recall" in str(e.value)


def test_a_family_name_must_match_its_class(registry, monkeypatch):
    from memorybench import generators

    monkeypatch.setitem(
        generators.BUILTIN_GENERATORS, "occlusion_alias", "memorybench.generators.occlusion:OcclusionRecall"
    )
    spec = registry.get("occlusion-recall", "smoke")
    with pytest.raises(ConformanceError, match="registered as 'occlusion_alias'"):
        check_generator("occlusion_alias", spec)


def test_conformance_error_is_an_assertion(registry):
    spec = registry.get("occlusion-recall", "smoke")
    with pytest.raises(AssertionError, match=r"^model 'too-bright' \(task occlusion-recall@smoke\): outputs"):
        check_adapter(TooBright(), spec)
