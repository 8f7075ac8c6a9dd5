"""One registry pattern for everything an extender adds: task families, models, metrics.

A ``Registry`` maps names to lazy ``"package.module:attr"`` targets (imported only when asked
for), merges the built-ins with the plugins that installed packages declare in an entry-point
group, refuses a name registered twice with one error (``RegistryError``), answers an unknown
name with a did-you-mean (``UnknownNameError``), checks what it loads (``check``), and carries
tags (``zoo``, ``calibration``, ...) from which command-line groups and help texts are derived::

    MODELS = Registry("model", "memorybench.models", {"copy-last": "memorybench.models.calibration:CopyLast"},
                      tags={"copy-last": ("calibration",)}, check=is_world_model)
    MODELS.names()            # built-ins and plugins, sorted
    MODELS.names("zoo")       # those tagged zoo, in registration order
    MODELS.load("copy-last")  # the class, imported now

The built-in table is the dictionary passed in (not a copy): a test may patch it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import MemorybenchError, RegistryError, UnknownNameError

__all__ = ["Registry", "RegistryError", "Plugin", "load_target"]


@dataclass(frozen=True)
class Plugin:
    """One entry point of a registry's group: ``name = "package.module:attr"`` in ``distribution``."""

    name: str
    target: str
    distribution: str | None = None


def load_target(target: str, what: str) -> Any:
    """Import ``"package.module:attr"`` (dotted attributes allowed); a clear ``MemorybenchError``
    naming ``what`` if the module or attribute is missing or the module raises on import."""
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise MemorybenchError(f"{what}: target {target!r} is not of the form package.module:attr")
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as e:
        raise MemorybenchError(f"{what}: cannot import {module}: {e}") from e
    except Exception as e:  # noqa: BLE001 - the plugin's module itself raised while being imported
        raise MemorybenchError(f"{what}: importing {module} raised {type(e).__name__}: {e}") from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise MemorybenchError(f"{what}: {module} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _entry_points(group: str) -> list[Plugin]:
    from importlib.metadata import entry_points

    found = []
    for ep in entry_points(group=group):
        dist = getattr(getattr(ep, "dist", None), "name", None)
        found.append(Plugin(ep.name, ep.value, dist))
    return found


class Registry:
    """Names -> lazy targets, built-ins first, then the entry points of ``group``.

    ``kind`` names the things registered in messages ("model", "generator family", "metric");
    ``check(obj, name)`` raises a ``MemorybenchError`` when a loaded object is not acceptable
    (wrong base class, inconsistent declared name, ...).
    """

    def __init__(
        self,
        kind: str,
        group: str,
        builtins: dict[str, str],
        *,
        tags: Mapping[str, Iterable[str]] | None = None,
        check: Callable[[Any, str], None] | None = None,
        keep_loaded: bool = False,
    ) -> None:
        self.kind = kind
        self.group = group
        self.builtins = builtins
        self._tags = {name: tuple(t) for name, t in (tags or {}).items()}
        self._check = check
        self._plugins: dict[str, Plugin] | None = None
        #: ``keep_loaded``: what ``load`` returned, by (name, target), until ``clear_cache``
        self._loaded: dict[tuple[str, str], Any] | None = {} if keep_loaded else None

    # -- discovery -------------------------------------------------------------------------

    def plugins(self) -> dict[str, Plugin]:
        """The entry points of ``group`` by name (read once); a name that a built-in or another
        plugin already has is refused."""
        if self._plugins is None:
            found: dict[str, Plugin] = {}
            for p in _entry_points(self.group):
                if p.name in self.builtins:
                    raise self.duplicate(p.name, f"built in, and plugin {p.target}")
                if p.name in found:
                    raise self.duplicate(p.name, f"plugins {found[p.name].target} and {p.target}")
                found[p.name] = p
            self._plugins = found
        return self._plugins

    def clear_cache(self) -> None:
        """Forget the entry points read and the objects kept (after installing or removing a
        plugin in-process)."""
        self._plugins = None
        if self._loaded is not None:
            self._loaded.clear()

    def duplicate(self, name: str, where: str) -> RegistryError:
        """The one error for a name registered twice."""
        return RegistryError(f"{self.kind} '{name}' is registered twice ({where}); rename one of them")

    def table(self) -> dict[str, str]:
        """Every name -> its ``module:attr`` target, built-ins first."""
        return {**self.builtins, **{n: p.target for n, p in self.plugins().items()}}

    def names(self, tag: str | None = None) -> list[str]:
        """Every registered name, sorted; with ``tag``, the built-ins so tagged in registration order."""
        if tag is None:
            return sorted(self.table())
        return [n for n in self.builtins if tag in self._tags.get(n, ())]

    def tags(self, name: str) -> tuple[str, ...]:
        return self._tags.get(name, ())

    def __contains__(self, name: object) -> bool:
        return name in self.builtins or name in self.plugins()

    # -- lookup ----------------------------------------------------------------------------

    def target(self, name: str) -> str:
        """The target of ``name`` without importing it; ``UnknownNameError`` with suggestions."""
        table = self.table()
        if name not in table:
            raise UnknownNameError(self.kind, name, sorted(table))
        return table[name]

    def load(self, name: str) -> Any:
        """The object registered as ``name``, imported now and checked (with ``keep_loaded``: once)."""
        key = (name, self.target(name))
        if self._loaded is not None and key in self._loaded:
            return self._loaded[key]
        obj = load_target(key[1], f"{self.kind} '{name}'")
        if self._check is not None:
            self._check(obj, name)
        if self._loaded is not None:
            self._loaded[key] = obj
        return obj

    def groups(self, names: Iterable[str]) -> dict[str, tuple[str, ...]]:
        """``{tag: names tagged so}`` for the given tags: what a command line may expand."""
        return {tag: tuple(self.names(tag)) for tag in names}


def subclass_check(base: type, kind: str) -> Callable[[Any, str], None]:
    """A ``check`` that accepts only subclasses of ``base``."""

    def check(obj: Any, name: str) -> None:
        if not (isinstance(obj, type) and issubclass(obj, base)):
            raise MemorybenchError(f"{kind} '{name}' is not a subclass of {base.__module__}.{base.__qualname__}")

    return check
