"""Checksums of files and directories (weights, checkpoints): SHA-256, read in chunks.

``tree_sha256(directory)`` is deterministic: the SHA-256 over, for every regular file below the
directory in sorted order of its relative POSIX path, ``"<path>\\0<size>\\0<file SHA-256>\\n"``;
so it changes when a file is added, removed, renamed or edited, and not with modification times
or the order a file system lists entries in. Symbolic links are followed (a Hugging Face cache
stores weights as links into ``blobs/``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# (resolved path, size, mtime_ns, inode) -> SHA-256: a file is hashed once per process
_CACHE: dict[tuple, str] = {}


def cached_sha256(path: str | Path) -> str:
    """``file_sha256``, remembered for the life of the process while the file's size, modification
    time and inode stay the same."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _CACHE:
        _CACHE[key] = file_sha256(p)
    return _CACHE[key]


def tree_files(directory: str | Path) -> list[tuple[str, Path]]:
    """``(relative POSIX path, path)`` of every regular file below ``directory``, sorted."""
    root = Path(directory)
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for name in filenames:
            p = Path(dirpath) / name
            if p.is_file():
                out.append((p.relative_to(root).as_posix(), p))
    return sorted(out)


def tree_sha256(directory: str | Path) -> tuple[str, int, int]:
    """``(SHA-256, number of files, total bytes)`` of a directory's files (see the module doc)."""
    h = hashlib.sha256()
    n = size = 0
    for rel, p in tree_files(directory):
        st = p.stat()
        h.update(f"{rel}\0{st.st_size}\0{cached_sha256(p)}\n".encode())
        n += 1
        size += st.st_size
    return h.hexdigest(), n, size
