"""Reading task files: ``tasks/<name>.yaml`` -> one checked ``TaskSpec`` per tier.

The schema (``TaskSpec``, ``ActionSpace``, ``param``) lives in ``memorybench.spec``; this module
parses a file (``yaml.safe_load``) and checks it field by field. Every problem is a
``TaskSpecError`` naming the file and the field, with a "did you mean" for typos::

    load_task_file("tasks/occlusion-recall.yaml")   # {"smoke": TaskSpec, "standard": TaskSpec, ...}

The file's format is described in ``memorybench.spec`` and in the README ("Writing a task").
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import TaskSpecError, UnknownNameError
from .generators import get_generator
from .generators.base import Generator
from .spec import PROTOCOLS, ActionSpace, TaskSpec

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")

TOP_LEVEL_KEYS = ("name", "family", "generator_version", "description", "protocols", "citation", "common", "tiers")
TIER_KEYS = ("frames", "context_frames", "resolution", "episodes", "seed", "recent_window", "gap_bins", "params")
REQUIRED_TIER_KEYS = ("frames", "context_frames", "resolution", "episodes", "seed")


# --------------------------------------------------------------------------------------------
# field checks


def _suggest(key: str, allowed) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else f" (allowed: {', '.join(allowed)})"


def _check_keys(src: str, where: str, d: Mapping, allowed) -> None:
    for k in d:
        if k not in allowed:
            raise TaskSpecError(src, f"{where}{k}", f"unknown field{_suggest(str(k), allowed)}")


def _int(src: str, fieldname: str, v, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TaskSpecError(src, fieldname, f"must be an integer, got {v!r}")
    if lo is not None and v < lo:
        raise TaskSpecError(src, fieldname, f"must be >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise TaskSpecError(src, fieldname, f"must be <= {hi}, got {v}")
    return v


def _check_value(src: str, fieldname: str, v, tp, meta: Mapping):
    """Check one generator parameter against its annotation and its min/max/choices."""
    origin = typing.get_origin(tp)
    if tp is bool:
        if not isinstance(v, bool):
            raise TaskSpecError(src, fieldname, f"must be true or false, got {v!r}")
        return v
    if tp is int:
        v = _int(src, fieldname, v)
    elif tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TaskSpecError(src, fieldname, f"must be a number, got {v!r}")
        v = float(v)
    elif tp is str:
        if not isinstance(v, str):
            raise TaskSpecError(src, fieldname, f"must be a string, got {v!r}")
    elif origin in (list, tuple):
        (inner,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
        if not isinstance(v, (list, tuple)):
            raise TaskSpecError(src, fieldname, f"must be a list, got {v!r}")
        if len(v) == 0 and not meta.get("allow_empty"):
            raise TaskSpecError(src, fieldname, "must not be empty")
        return tuple(_check_value(src, f"{fieldname}[{i}]", x, inner, meta) for i, x in enumerate(v))
    else:  # pragma: no cover - a generator declared an unsupported type
        raise TypeError(f"unsupported parameter type {tp} for {fieldname}")
    if meta.get("choices") is not None and v not in meta["choices"]:
        raise TaskSpecError(src, fieldname, f"must be one of {list(meta['choices'])}, got {v!r}")
    if meta.get("min") is not None and v < meta["min"]:
        raise TaskSpecError(src, fieldname, f"must be >= {meta['min']}, got {v}")
    if meta.get("max") is not None and v > meta["max"]:
        raise TaskSpecError(src, fieldname, f"must be <= {meta['max']}, got {v}")
    return v


def build_params(src: str, params_cls: type, raw: Mapping | None, prefix: str = "params.") -> Any:
    """Validate ``raw`` against a generator's ``Params`` dataclass and fill in the defaults."""
    raw = dict(raw or {})
    if not isinstance(raw, dict):
        raise TaskSpecError(src, prefix.rstrip("."), "must be a mapping")
    hints = typing.get_type_hints(params_cls)
    fields = {f.name: f for f in dataclasses.fields(params_cls)}
    _check_keys(src, prefix, raw, list(fields))
    values = {}
    for name, f in fields.items():
        if name in raw:
            values[name] = _check_value(src, prefix + name, raw[name], hints[name], f.metadata)
    try:
        return params_cls(**values)
    except ValueError as e:  # cross-field checks in __post_init__
        raise TaskSpecError(src, prefix.rstrip("."), str(e)) from None


def _merge(common: Mapping, tier: Mapping) -> dict:
    out = dict(common)
    for k, v in tier.items():
        if k == "params" and isinstance(v, Mapping) and isinstance(out.get("params"), Mapping):
            out["params"] = {**out["params"], **v}
        else:
            out[k] = v
    return out


# --------------------------------------------------------------------------------------------
# the file


@dataclass(frozen=True)
class _Header:
    """The tier-independent part of a task file, checked."""

    name: str
    family: str
    generator: type[Generator]
    version: int
    description: str
    citation: str
    protocols: tuple[str, ...]
    common: dict


def _read(src: str, path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise TaskSpecError(src, None, f"cannot read file: {e}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise TaskSpecError(src, None, f"invalid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise TaskSpecError(src, None, "a task file must be a YAML mapping")
    _check_keys(src, "", doc, TOP_LEVEL_KEYS)
    for k in ("name", "family", "generator_version", "tiers"):
        if k not in doc:
            raise TaskSpecError(src, k, "is required")
    return doc


def _generator(src: str, doc: Mapping) -> tuple[str, type[Generator], int]:
    """The family, its generator class and the version the file asks for (which must be ours)."""
    family = doc["family"]
    if not isinstance(family, str):
        raise TaskSpecError(src, "family", f"must be a string, got {family!r}")
    try:
        gen_cls = get_generator(family)
    except UnknownNameError as e:
        raise TaskSpecError(src, "family", str(e)) from None
    gv = _int(src, "generator_version", doc["generator_version"], 1)
    if gv != gen_cls.version:
        raise TaskSpecError(
            src,
            "generator_version",
            f"the file asks for version {gv} of generator '{family}', but this memorybench has version "
            f"{gen_cls.version}; regenerate the task file for the new generator (or install the matching "
            f"memorybench)",
        )
    return family, gen_cls, gv


def _protocols(src: str, doc: Mapping, gen_cls: type[Generator]) -> tuple[str, ...]:
    protocols = doc.get("protocols", list(gen_cls.default_protocols))
    if not isinstance(protocols, list) or not protocols:
        raise TaskSpecError(src, "protocols", f"must be a non-empty list drawn from {list(PROTOCOLS)}")
    for i, p in enumerate(protocols):
        if p not in PROTOCOLS:
            raise TaskSpecError(src, f"protocols[{i}]", f"unknown protocol {p!r}{_suggest(str(p), PROTOCOLS)}")
    return tuple(protocols)


def _header(src: str, doc: Mapping) -> _Header:
    name = doc["name"]
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise TaskSpecError(src, "name", f"must be lower-case letters, digits, '-', '_' or '.', got {name!r}")
    family, gen_cls, gv = _generator(src, doc)
    description = doc.get("description", "") or ""
    citation = doc.get("citation", "") or ""
    if not isinstance(description, str):
        raise TaskSpecError(src, "description", "must be a string")
    protocols = _protocols(src, doc, gen_cls)
    common = doc.get("common", {}) or {}
    if not isinstance(common, dict):
        raise TaskSpecError(src, "common", "must be a mapping")
    _check_keys(src, "common.", common, TIER_KEYS)
    return _Header(name, family, gen_cls, gv, description, citation, protocols, common)


def default_gap_bins(max_gap: int) -> tuple[int, ...]:
    """Powers of two from 1 up to the first one >= ``max_gap`` (bin i holds gaps in [b_i, b_i+1))."""
    bins = [1]
    while bins[-1] < max_gap:
        bins.append(bins[-1] * 2)
    bins.append(bins[-1] * 2)
    return tuple(bins)


def _gap_bins(src: str, pre: str, gb: Any, frames: int) -> tuple[int, ...]:
    if gb is None:
        return default_gap_bins(frames)
    if not isinstance(gb, list) or len(gb) < 2:
        raise TaskSpecError(src, pre + "gap_bins", "must be a list of at least two increasing integers")
    gap_bins = tuple(_int(src, f"{pre}gap_bins[{i}]", x, 1) for i, x in enumerate(gb))
    if any(b <= a for a, b in zip(gap_bins, gap_bins[1:])):
        raise TaskSpecError(src, pre + "gap_bins", f"must be strictly increasing, got {list(gap_bins)}")
    return gap_bins


def _sizes(src: str, tier: str, merged: Mapping) -> dict:
    """The tier's frame counts, resolution, episodes and seed, checked (the standard tier's floor too)."""
    pre = f"tiers.{tier}."
    for k in REQUIRED_TIER_KEYS:
        if k not in merged:
            raise TaskSpecError(src, pre + k, "is required (in the tier or in 'common')")
    frames = _int(src, pre + "frames", merged["frames"], 2, 1_000_000)
    context = _int(src, pre + "context_frames", merged["context_frames"], 1, frames - 1)
    res = merged["resolution"]
    if not (isinstance(res, list) and len(res) == 2):
        raise TaskSpecError(src, pre + "resolution", f"must be [height, width], got {res!r}")
    h = _int(src, pre + "resolution[0]", res[0], 16, 1024)
    w = _int(src, pre + "resolution[1]", res[1], 16, 1024)
    episodes = _int(src, pre + "episodes", merged["episodes"], 1, 1_000_000)
    seed = _int(src, pre + "seed", merged["seed"], 0, 2**63 - 1)
    recent = _int(src, pre + "recent_window", merged.get("recent_window", 4), 1, frames - 1)
    if tier == "standard":
        if frames < 512:
            raise TaskSpecError(src, pre + "frames", f"the standard tier needs at least 512 frames, got {frames}")
        if (h, w) != (64, 64):
            raise TaskSpecError(src, pre + "resolution", f"the standard tier is 64x64, got {h}x{w}")
    return dict(
        frames=frames, context_frames=context, resolution=(h, w), episodes=episodes, seed=seed, recent_window=recent
    )


def _tier_spec(src: str, head: _Header, tier: Any, tdoc: Any) -> TaskSpec:
    """One tier of the file, merged over ``common`` and checked, as a ``TaskSpec``."""
    if not isinstance(tier, str) or not _NAME_RE.match(tier):
        raise TaskSpecError(src, f"tiers.{tier}", "tier names must be lower-case identifiers")
    if not isinstance(tdoc, dict):
        raise TaskSpecError(src, f"tiers.{tier}", "must be a mapping")
    pre = f"tiers.{tier}."
    _check_keys(src, pre, tdoc, TIER_KEYS)
    merged = _merge(head.common, tdoc)
    sizes = _sizes(src, tier, merged)
    gen_cls = head.generator
    params = build_params(src, gen_cls.Params, merged.get("params"), prefix=pre + "params.")
    spec = TaskSpec(
        name=head.name,
        family=head.family,
        tier=tier,
        generator_version=head.version,
        **sizes,
        protocols=head.protocols,
        gap_bins=_gap_bins(src, pre, merged.get("gap_bins"), sizes["frames"]),
        params=params,
        action_space=gen_cls.action_space(params),
        pose_fields=tuple(gen_cls.pose_fields(params)),
        description=head.description.strip(),
        citation=head.citation,
        source=src,
    )
    try:
        gen_cls.check(spec)
    except ValueError as e:
        raise TaskSpecError(src, f"tiers.{tier}", str(e)) from None
    return spec


def load_task_file(path: str | Path) -> dict[str, TaskSpec]:
    """Parse and validate one task YAML file; return ``{tier: TaskSpec}``."""
    path = Path(path)
    src = str(path)
    doc = _read(src, path)
    head = _header(src, doc)
    tiers = doc["tiers"]
    if not isinstance(tiers, dict) or not tiers:
        raise TaskSpecError(src, "tiers", "must be a non-empty mapping of tier name to settings")
    return {tier: _tier_spec(src, head, tier, tdoc) for tier, tdoc in tiers.items()}


def spec_from_dict(d: Mapping, source: str = "<dict>") -> TaskSpec:
    """Rebuild a ``TaskSpec`` from ``TaskSpec.to_dict()`` output (e.g. from a dataset manifest)."""
    gen_cls = get_generator(d["family"])
    params = build_params(source, gen_cls.Params, d["params"])
    return TaskSpec(
        name=d["name"],
        family=d["family"],
        tier=d["tier"],
        generator_version=d["generator_version"],
        frames=d["frames"],
        context_frames=d["context_frames"],
        resolution=tuple(d["resolution"]),
        episodes=d["episodes"],
        seed=d["seed"],
        recent_window=d["recent_window"],
        protocols=tuple(d["protocols"]),
        gap_bins=tuple(d["gap_bins"]),
        params=params,
        action_space=ActionSpace.from_dict(d["action_space"]),
        pose_fields=tuple(d["pose_fields"]),
        description=d.get("description", ""),
        citation=d.get("citation", ""),
        source=source,
    )
