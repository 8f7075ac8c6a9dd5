"""Episode generators, one module per task family.

A family is registered here by name as a lazy ``"module:Class"`` string, so that importing
memorybench does not import every generator. Other packages add families through the entry-point
group ``memorybench.generators`` (``name = "package.module:Class"``). Every family subclasses
``memorybench.generators.base.Generator``.
"""

from __future__ import annotations

import importlib
from functools import cache

from ..errors import UnknownNameError
from .base import Generator

BUILTIN_GENERATORS: dict[str, str] = {
    "occlusion_recall": "memorybench.generators.occlusion:OcclusionRecall",
    "scene_consistency": "memorybench.generators.scene:SceneConsistency",
    "memory_maze": "memorybench.generators.maze:MemoryMaze",
    "recorded": "memorybench.generators.recorded:Recorded",
}

ENTRY_POINT_GROUP = "memorybench.generators"


def _load(target: str) -> type:
    module, _, attr = target.partition(":")
    obj = getattr(importlib.import_module(module), attr)
    if not (isinstance(obj, type) and issubclass(obj, Generator)):
        raise TypeError(f"{target} is not a memorybench Generator subclass")
    return obj


@cache
def _entry_points() -> dict[str, str]:
    from importlib.metadata import entry_points

    found: dict[str, str] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in BUILTIN_GENERATORS or ep.name in found:
            raise ValueError(f"generator family '{ep.name}' registered twice (entry point {ep.value})")
        found[ep.name] = ep.value
    return found


def generator_names() -> list[str]:
    return sorted({**BUILTIN_GENERATORS, **_entry_points()})


def get_generator(family: str) -> type[Generator]:
    """The generator class for ``family``; an ``UnknownNameError`` (with suggestions) if none."""
    table = {**_entry_points(), **BUILTIN_GENERATORS}
    if family not in table:
        raise UnknownNameError("generator family", family, sorted(table))
    return _load(table[family])
