"""The task specification: one YAML file per task in ``tasks/``, validated on load.

A task file describes a memory benchmark as data. It names a generator *family* (the code that
renders episodes), the family's parameters, and the evaluation protocol, for each *tier*::

    name: occlusion-recall
    family: occlusion_recall
    generator_version: 1
    description: ...
    protocols: [rollout, teacher-forced]
    common:                 # fields shared by every tier (a tier overrides them)
      recent_window: 4
      params: {slots: [3, 3]}
    tiers:
      smoke:    {frames: 96, context_frames: 80, resolution: [32, 32], episodes: 4, ...}
      standard: {frames: 640, context_frames: 576, resolution: [64, 64], episodes: 36, ...}

``memorybench.taskfile.load_task_file(path)`` parses and checks such a file and returns one resolved ``TaskSpec`` per
tier. Every problem is a ``TaskSpecError`` that names the file and the field (with a
"did you mean" for typos). A ``TaskSpec`` is immutable and has a stable ``hash()`` over everything
that changes the generated episodes or their scoring (not the description).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import TASK_FORMAT_VERSION
from ._io import jsonable

PROTOCOLS = ("rollout", "teacher-forced")
SUITE_TIERS = ("smoke", "standard")


@dataclass(frozen=True)
class ActionSpace:
    """Actions are integer vectors: component ``i`` takes values ``0 .. nvec[i]-1``.

    A plain discrete action space is the one-component case. ``names[i]`` says what component
    ``i`` controls and ``labels[i]`` names its values.
    """

    nvec: tuple[int, ...]
    names: tuple[str, ...]
    labels: tuple[tuple[str, ...], ...]

    def to_dict(self) -> dict:
        return {"nvec": list(self.nvec), "names": list(self.names), "labels": [list(x) for x in self.labels]}

    @classmethod
    def from_dict(cls, d: Mapping) -> ActionSpace:
        return cls(tuple(d["nvec"]), tuple(d["names"]), tuple(tuple(x) for x in d["labels"]))

    @property
    def dims(self) -> int:
        return len(self.nvec)


def param(
    default: Any, *, min: float | None = None, max: float | None = None, choices: tuple | None = None, doc: str = ""
) -> Any:
    """A generator parameter with a default, an allowed range and a description.

    A list parameter may be given empty only when its default is the empty list (meaning "unset")."""
    meta = {
        "min": min,
        "max": max,
        "choices": choices,
        "doc": doc,
        "allow_empty": isinstance(default, list) and not default,
    }
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class TaskSpec:
    """A fully resolved task at one tier. Build it with ``memorybench.taskfile.load_task_file``."""

    name: str
    family: str
    tier: str
    generator_version: int
    frames: int
    context_frames: int
    resolution: tuple[int, int]
    episodes: int
    seed: int
    recent_window: int
    protocols: tuple[str, ...]
    gap_bins: tuple[int, ...]
    params: Any  # the generator family's Params dataclass instance
    action_space: ActionSpace
    pose_fields: tuple[str, ...]
    description: str = ""
    citation: str = ""
    source: str = ""

    @property
    def predict_frames(self) -> int:
        """Frames the model must generate after observing ``context_frames``."""
        return self.frames - self.context_frames

    @property
    def key(self) -> str:
        """``name@tier``, the name used on the command line."""
        return f"{self.name}@{self.tier}"

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "family": self.family,
            "tier": self.tier,
            "generator_version": self.generator_version,
            "task_format_version": TASK_FORMAT_VERSION,
            "frames": self.frames,
            "context_frames": self.context_frames,
            "predict_frames": self.predict_frames,
            "resolution": list(self.resolution),
            "episodes": self.episodes,
            "seed": self.seed,
            "recent_window": self.recent_window,
            "protocols": list(self.protocols),
            "gap_bins": list(self.gap_bins),
            "params": jsonable(dataclasses.asdict(self.params)),
            "action_space": self.action_space.to_dict(),
            "pose_fields": list(self.pose_fields),
            "description": self.description,
            "citation": self.citation,
        }

    def hash(self) -> str:
        """SHA-256 over everything that defines the episodes and their scoring."""
        d = self.to_dict()
        for k in ("description", "citation"):
            d.pop(k)
        blob = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    def with_overrides(self, **changes) -> TaskSpec:
        """A copy with some fields changed (used by tests and by ``--episodes`` limits)."""
        return dataclasses.replace(self, **changes)


def describe_params(params_cls: type) -> list[dict]:
    """Name, type, default, range and description of each parameter (for ``tasks show``)."""
    hints = typing.get_type_hints(params_cls)
    out = []
    for f in dataclasses.fields(params_cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out.append(
            {
                "name": f.name,
                "type": getattr(hints[f.name], "__name__", str(hints[f.name])),
                "default": default,
                **{k: f.metadata.get(k) for k in ("min", "max", "choices", "doc")},
            }
        )
    return out
