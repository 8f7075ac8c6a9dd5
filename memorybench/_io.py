"""File helpers shared by every module that writes results, datasets or weights.

* ``atomic_write_bytes`` / ``atomic_write_text`` / ``atomic_write_json``: readers see the old
  file or the whole new one, never a part: the data go to a temporary file in the same directory,
  are flushed and ``fsync``-ed, and the file is renamed over the target (``os.replace``, atomic
  on POSIX and Windows). A failure removes the temporary file and leaves the target as it was.
* ``jsonable``: a value turned into what ``json.dumps`` writes (dict keys as strings, tuples as
  lists, anything else unknown as its ``str``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()
#: the permissions of a file written by these helpers unless told otherwise: what ``open`` would
#: create (``mkstemp`` creates 0600 files; results and datasets are for sharing)
DEFAULT_MODE = 0o666 & ~_UMASK


def atomic_write_bytes(path: str | Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically (see the module docstring); the parent directories
    are created. ``mode``: the file's permissions (default ``DEFAULT_MODE``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, DEFAULT_MODE if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8", mode: int | None = None) -> None:
    """``atomic_write_bytes`` of ``text`` encoded (UTF-8 by default)."""
    atomic_write_bytes(path, text.encode(encoding), mode=mode)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """``obj`` as indented JSON (one space, keys in their order, NaN allowed) and a newline: the
    layout of every ``run.json``, ``summary.json`` and reference manifest."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=False, allow_nan=True) + "\n").encode())


def jsonable(x: Any, sort_keys: bool = False) -> Any:
    """``x`` with every dict's keys as strings (``sort_keys``: in sorted order, else as they
    come), tuples and lists as lists, ``str``, ``int``, ``float``, ``bool`` and ``None`` as they
    are, and anything else as its ``str``."""
    if isinstance(x, dict):
        items = list(x.items())
        if sort_keys:
            try:
                items.sort(key=lambda kv: kv[0])
            except TypeError:  # keys of mixed types: by their text
                items.sort(key=lambda kv: str(kv[0]))
        return {str(k): jsonable(v, sort_keys) for k, v in items}
    if isinstance(x, (list, tuple)):
        return [jsonable(v, sort_keys) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)
