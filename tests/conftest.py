"""Shared fixtures: an isolated cache directory, and small task specs for fast tests."""

from __future__ import annotations

import dataclasses

import pytest

from memorybench.tasks import TaskRegistry


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(autouse=True)
def _isolated_cache(_session_cache, monkeypatch):
    """The tests share one fresh cache (never the user's): generated datasets and references are
    content-addressed and verified on every use, so sharing them between tests is safe, and
    generating each task once keeps the suite fast. Tests of the cache itself use their own."""
    monkeypatch.setenv("MEMORYBENCH_CACHE", _session_cache)
    monkeypatch.delenv("MEMORYBENCH_TASKS_DIR", raising=False)


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread is as fast, and immune to a busy machine's oversubscription."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def registry() -> TaskRegistry:
    return TaskRegistry()


@pytest.fixture(scope="session")
def smoke_specs(registry):
    return registry.select("smoke")


def shrink(spec, **changes):
    """A copy of a spec with fields (and ``params`` entries) changed, checked by its generator."""
    from memorybench.generators import get_generator

    pchanges = changes.pop("params", {})
    params = dataclasses.replace(spec.params, **pchanges)
    gen = get_generator(spec.family)
    new = dataclasses.replace(
        spec, params=params, action_space=gen.action_space(params), pose_fields=gen.pose_fields(params), **changes
    )
    gen.check(new)
    return new
