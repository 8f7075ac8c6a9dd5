"""Generated datasets on disk: reuse, verification, repair, and determinism across processes."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from memorybench import storage
from memorybench.errors import DataError
from memorybench.generators import get_generator


@pytest.fixture
def spec(registry):
    return registry.get("occlusion-recall", "smoke")


def arrow_file(path):
    (f,) = sorted(path.rglob("data-*.arrow"))
    return f


def test_prepare_generates_then_reuses(spec, tmp_path):
    first = storage.prepare(spec, out=tmp_path / "ds")
    assert not first.reused and len(first.store) == spec.episodes
    man = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert man["spec_hash"] == spec.hash() and man["generator_version"] == spec.generator_version
    assert len(man["episodes"]) == spec.episodes
    second = storage.prepare(spec, out=tmp_path / "ds")
    assert second.reused and second.store.dataset_hash == first.store.dataset_hash
    # what is stored is exactly what the generator makes
    direct = get_generator(spec.family)(spec).generate(2)
    stored = second.store[2]
    assert stored.sha256() == direct.sha256()
    assert stored.info == direct.info


def test_workers_do_not_change_bytes(spec, tmp_path):
    one = storage.prepare(spec, out=tmp_path / "one", workers=1).store
    two = storage.prepare(spec, out=tmp_path / "two", workers=2).store
    assert one.dataset_hash == two.dataset_hash
    assert [e["sha256"] for e in one.manifest["episodes"]] == [e["sha256"] for e in two.manifest["episodes"]]


def test_truncated_cache_is_detected_and_regenerated(spec, tmp_path):
    good = storage.prepare(spec, out=tmp_path / "ds").store.dataset_hash
    f = arrow_file(tmp_path / "ds")
    with open(f, "r+b") as fh:
        fh.truncate(f.stat().st_size // 2)
    assert storage.verify(tmp_path / "ds", spec)
    with pytest.warns(storage.CacheWarning, match="unusable"):
        res = storage.prepare(spec, out=tmp_path / "ds")
    assert not res.reused and res.store.dataset_hash == good
    assert storage.verify(tmp_path / "ds", spec) == []


def test_altered_bytes_are_detected(spec, tmp_path):
    storage.prepare(spec, out=tmp_path / "ds")
    f = arrow_file(tmp_path / "ds")
    data = bytearray(f.read_bytes())
    # flip a byte in the middle of the frame data of some episode
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    problems = storage.verify(tmp_path / "ds", spec)
    assert any("SHA-256" in p or "unreadable" in p for p in problems)
    with pytest.warns(storage.CacheWarning):
        assert not storage.prepare(spec, out=tmp_path / "ds").reused


def test_manifest_of_another_spec_is_not_reused(registry, spec, tmp_path):
    storage.prepare(spec, out=tmp_path / "ds")
    other = registry.get("scene-retrieval", "smoke")
    problems = storage.verify(tmp_path / "ds", other)
    assert problems and "spec hash" in problems[0]


def test_open_store_errors_clearly(tmp_path, spec):
    with pytest.raises(DataError, match="no manifest.json"):
        storage.open_store(tmp_path)
    storage.prepare(spec, out=tmp_path / "ds")
    (tmp_path / "ds" / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="unreadable"):
        storage.open_store(tmp_path / "ds")


def test_decode_rejects_wrong_sizes(spec, tmp_path):
    store = storage.prepare(spec, out=tmp_path / "ds").store
    row = dict(store.row(0))
    row["frames"] = row["frames"][:-10]
    with pytest.raises(DataError, match="'frames' has the wrong size"):
        storage.decode(row, spec)


def test_default_location_is_the_cache(spec, tmp_path, monkeypatch):
    monkeypatch.setenv("MEMORYBENCH_CACHE", str(tmp_path / "c"))
    res = storage.prepare(spec)
    assert res.store.path == storage.dataset_dir(spec)
    assert str(res.store.path).startswith(str(tmp_path / "c"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert storage.prepare(spec).reused
    ep = res.store[0]
    assert ep.frames.dtype == np.uint8 and ep.memory_mask.dtype == bool
