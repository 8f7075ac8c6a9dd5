"""memorybench._io: atomic writes (whole file or the old one, fsync, permissions) and jsonable."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import pytest

from memorybench import _io
from memorybench.leaderboard import IncomparableRunsError
from memorybench.results import DifferentRunError, IncompatibleRunError


def test_atomic_write_replaces_whole_files(tmp_path, monkeypatch):
    path = tmp_path / "a" / "b.json"
    _io.atomic_write_text(path, "first\n")
    assert path.read_text() == "first\n"
    assert stat.S_IMODE(path.stat().st_mode) == _io.DEFAULT_MODE
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    _io.atomic_write_bytes(path, b"second", mode=0o600)
    assert path.read_bytes() == b"second" and synced and stat.S_IMODE(path.stat().st_mode) == 0o600

    def fail(*a):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        _io.atomic_write_bytes(path, b"third")
    assert path.read_bytes() == b"second"  # the old file, whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["b.json"]  # no temporary file left


def test_atomic_write_json_layout(tmp_path):
    _io.atomic_write_json(tmp_path / "x.json", {"b": 1, "a": [1.5, math.nan]})
    assert (tmp_path / "x.json").read_text() == '{\n "b": 1,\n "a": [\n  1.5,\n  NaN\n ]\n}\n'


def test_jsonable_keeps_or_sorts_keys():
    value = {"b": (1, 2), "a": {"y": Path("p"), "x": None}, 3: True}
    assert json.dumps(_io.jsonable(value)) == '{"b": [1, 2], "a": {"y": "p", "x": null}, "3": true}'
    assert json.dumps(_io.jsonable(value, sort_keys=True)) == '{"3": true, "a": {"x": null, "y": "p"}, "b": [1, 2]}'
    assert list(_io.jsonable({2: 0, 10: 0}, sort_keys=True)) == ["2", "10"]  # sorted as keys, then written as text


def test_run_errors_cannot_be_confused():
    assert IncompatibleRunError is DifferentRunError  # the former name still works
    assert not issubclass(DifferentRunError, IncomparableRunsError) and not issubclass(
        IncomparableRunsError, DifferentRunError
    )
