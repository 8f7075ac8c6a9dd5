"""Episode generators, one module per task family.

A family is registered here by name as a lazy ``"module:Class"`` string (``memorybench.registry``),
so that importing memorybench does not import every generator. Other packages add families through
the entry-point group ``memorybench.generators`` (``name = "package.module:Class"``). Every family
subclasses ``memorybench.generators.base.Generator`` and declares ``family`` equal to the name it is
registered under.
"""

from __future__ import annotations

from typing import Any

from ..errors import RegistryError
from ..registry import Registry
from .base import Generator

BUILTIN_GENERATORS: dict[str, str] = {
    "occlusion_recall": "memorybench.generators.occlusion:OcclusionRecall",
    "scene_consistency": "memorybench.generators.scene:SceneConsistency",
    "memory_maze": "memorybench.generators.maze:MemoryMaze",
    "recorded": "memorybench.generators.recorded:Recorded",
}

ENTRY_POINT_GROUP = "memorybench.generators"


def _check(obj: Any, name: str) -> None:
    if not (isinstance(obj, type) and issubclass(obj, Generator)):
        raise RegistryError(f"generator family '{name}' is not a memorybench.generators.base.Generator subclass")
    declared = getattr(obj, "family", None)
    if declared != name:
        raise RegistryError(
            f"generator family '{name}' is registered as '{name}' but its class "
            f"{obj.__module__}:{obj.__qualname__} declares family = {declared!r}; the two must match"
        )


GENERATORS = Registry("generator family", ENTRY_POINT_GROUP, BUILTIN_GENERATORS, check=_check)


def generator_names() -> list[str]:
    return GENERATORS.names()


def get_generator(family: str) -> type[Generator]:
    """The generator class for ``family``; an ``UnknownNameError`` (with suggestions) if none."""
    return GENERATORS.load(family)
