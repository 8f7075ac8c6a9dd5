"""Cheap checks of command-line values, run before any heavy import (torch, pandas, datasets).

A typo must be reported in well under a second, not after ten seconds of imports or after a first
model has run for an hour. Every function here raises a ``MemorybenchError`` (with a "did you
mean" where a name is involved) and imports nothing heavy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from .errors import MemorybenchError, UnknownNameError

DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
DEVICE_NAMES = ("auto", "cpu", "cuda", "cuda:0", "mps")
FIGURE_FORMATS = ("png", "pdf", "svg")


def split_list(value: str | None) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [x.strip() for x in (value or "").split(",") if x.strip()]


def check_device_name(device: str, option: str = "--device") -> str:
    """The spelling of a device (``cpu``, ``cuda``, ``cuda:N``, ``mps``, ``auto``); whether it is
    available is checked later, by ``runner.resolve_device``, which needs torch."""
    if not DEVICE_RE.match(device):
        import difflib

        close = difflib.get_close_matches(device, DEVICE_NAMES, n=2, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise MemorybenchError(f"{option}: unknown device {device!r}.{hint} Known: cpu, cuda, cuda:N, mps, auto")
    return device


def check_at_least(value: int | float | None, minimum: int | float, option: str) -> None:
    """``value >= minimum`` (``None`` passes: the option was not given)."""
    if value is not None and value < minimum:
        raise MemorybenchError(f"{option} must be >= {minimum}, got {value}")


def check_out_dir(path: Path | None, option: str = "--out") -> None:
    """``path`` can be (or become) a directory: it is not a file, and nothing above it is a file."""
    if path is None:
        return
    if path.exists() and not path.is_dir():
        raise MemorybenchError(
            f"{option} {path} is a file, not a directory; give a directory (it is created if needed)"
        )
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise MemorybenchError(f"{option} {path}: {parent} is a file, so no directory can be made below it")
            break


def check_out_file(path: Path, option: str = "--out", suffixes: Sequence[str] = ()) -> None:
    """``path`` can be written as a file: not a directory, no file in its parents, a known suffix."""
    if path.is_dir():
        raise MemorybenchError(
            f"{option} {path} is a directory; give a file name"
            + (f" ending in {', '.join(suffixes)}" if suffixes else "")
        )
    if suffixes and path.suffix.lower() not in suffixes:
        raise MemorybenchError(f"{option} must end in {', '.join(suffixes)}, got '{path.name}'")
    check_out_dir(path.parent, option)


def check_choices(values: Iterable[str], known: Sequence[str], kind: str) -> list[str]:
    """Every value is one of ``known`` (an ``UnknownNameError`` with "did you mean" otherwise)."""
    out = list(values)
    for v in out:
        if v not in known:
            raise UnknownNameError(kind, v, list(known))
    return out


def check_figure_formats(text: str) -> list[str]:
    fmts = [f.lower().lstrip(".") for f in split_list(text)]
    if not fmts:
        raise MemorybenchError(f"--formats is empty (choose from {', '.join(FIGURE_FORMATS)})")
    return check_choices(fmts, FIGURE_FORMATS, "figure format")


def parse_frame_range(text: str, frames: int, option: str = "--frames") -> tuple[int, int]:
    """``"START:STOP"`` (either side may be empty) -> ``(start, stop)`` with ``0 <= start < stop <= frames``."""
    try:
        a, b = text.split(":")
        start, stop = int(a) if a.strip() else 0, int(b) if b.strip() else frames
    except ValueError:
        raise MemorybenchError(f"{option} must be START:STOP (e.g. 10:40), got {text!r}") from None
    if not 0 <= start < stop <= frames:
        raise MemorybenchError(f"{option} {text}: need 0 <= START < STOP <= {frames} (the episode has {frames} frames)")
    return start, stop
