"""One record per metric: what it is, how it is aggregated and shown, from which every list derives.

Aggregation (``memorybench.aggregate``), the leaderboard, ``compare``, the plots and the CLI take
their metric names, labels, directions, decimals, tolerances and chance levels from here, never
from lists of their own.

Kinds of metric (``Metric.kind``):

* ``"frame"``: a per-frame value (``FrameScorer`` or a user ``fn``), averaged over the predicted
  frames of an episode, then over episodes (bootstrap CI over episodes).
* ``"psnr"``: PSNR from the mean squared error: the per-frame MSE column ``source`` is averaged
  (frames, then episodes) and the mean converted, ``10 log10(1 / MSE)``; its CI is the bootstrap CI
  of the mean MSE, converted. A mean of per-frame PSNRs would let a few perfect frames (capped at
  100 dB) dominate.
* ``"item"``: from the memory items (``memorybench.recall``): ``recall`` and its companions.
* ``"derived"``: computed from other results (the retention index, the memory horizon).

A user metric registers through the entry-point group ``memorybench.metrics``: the entry point
names a ``Metric`` whose ``fn(pred, target, memory_mask, novel_mask) -> [N]`` scores a batch of
frames (float32 ``[N, 3, H, W]`` in [0, 1], bool masks ``[N, H, W]``); it is computed by every run
and shows up in summaries, tables, ``compare`` and ``--metrics`` without other changes.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .registry import Registry

ENTRY_POINT_GROUP = "memorybench.metrics"
KINDS = ("frame", "psnr", "item", "derived")


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    higher_is_better: bool
    kind: str = "frame"
    decimals: int = 3
    #: default tolerance of ``memorybench compare`` (worse by more than this and outside the CI fails)
    tolerance: float = 0.0
    #: the value a model without memory gets (None: no such level)
    chance: float | None = None
    #: the per-frame column aggregated into it (``kind == "psnr"``: the MSE column)
    source: str | None = None
    #: shown (and aggregated) per memory-gap bin
    by_gap: bool = False
    #: user metrics: ``fn(pred, target, memory_mask, novel_mask) -> [N]`` per frame
    fn: Callable | None = field(default=None, compare=False, repr=False)
    description: str = ""

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "label": self.label,
            "higher_is_better": self.higher_is_better,
            "kind": self.kind,
            "decimals": self.decimals,
            "tolerance": self.tolerance,
            "chance": self.chance,
            "source": self.source,
            "by_gap": self.by_gap,
            "description": self.description,
            "user": self.fn is not None,
        }


_VARIANT_LABEL = {"": "", "_known": " known", "_memory": " mem"}
_VARIANT_DOC = {
    "": "whole frame",
    "_known": "pixels seen before (not novel)",
    "_memory": "memory-only pixels (seen, but not in the recent window)",
}


def _builtins() -> list[Metric]:
    out = [
        Metric(
            "recall",
            "Recall",
            True,
            kind="item",
            tolerance=0.05,
            chance=0.0,
            by_gap=True,
            description="identification of remembered content among every candidate the task could have shown, "
            "chance-normalised: 0 = chance, 1 = perfect (memorybench.recall); the headline",
        ),
        Metric(
            "recall_acc",
            "Recall acc",
            True,
            kind="item",
            tolerance=0.05,
            by_gap=True,
            description="raw identification accuracy (mean hit); compare with recall_chance",
        ),
        Metric(
            "recall_chance",
            "Chance acc",
            True,
            kind="item",
            description="mean chance level of the items (1 / offered candidates)",
        ),
        Metric(
            "false_recall",
            "False recall",
            False,
            kind="item",
            tolerance=0.05,
            chance=0.0,
            description="fraction of items painted before they were visible (premature; no credit)",
        ),
    ]
    for v in ("", "_known", "_memory"):
        doc = _VARIANT_DOC[v]
        out.append(
            Metric(
                f"psnr{v}",
                f"PSNR{_VARIANT_LABEL[v]}",
                True,
                kind="psnr",
                decimals=2,
                tolerance=0.5,
                source=f"mse{v}",
                by_gap=v == "_memory",
                description=f"PSNR (dB) from the mean squared error over {doc}",
            )
        )
        out.append(
            Metric(
                f"ssim{v}",
                f"SSIM{_VARIANT_LABEL[v]}",
                True,
                tolerance=0.01,
                by_gap=v == "_memory",
                description=f"SSIM (scikit-image Gaussian) over {doc}"
                + ("" if not v else "; on a composite (truth outside the pixels)"),
            )
        )
        out.append(
            Metric(
                f"lpips{v}",
                f"LPIPS{_VARIANT_LABEL[v]}",
                False,
                tolerance=0.01,
                by_gap=v == "_memory",
                description=f"LPIPS v0.1 alex over {doc}"
                + ("" if not v else "; on a composite (truth outside the pixels)"),
            )
        )
    out += [
        Metric(
            "retention",
            "Retention (MSE)",
            True,
            kind="derived",
            tolerance=0.05,
            chance=0.0,
            by_gap=True,
            description="secondary: (E_copy-last - E) / (E_copy-last - E_perfect-memory) on memory-pixel MSE; "
            "rewards blur (a mean frame scores above 0): read recall for memory",
        ),
        Metric(
            "retention_lpips",
            "Retention (LPIPS)",
            True,
            kind="derived",
            tolerance=0.05,
            description="secondary: the retention index on memory-pixel LPIPS",
        ),
        Metric(
            "retention_ssim",
            "Retention (SSIM)",
            True,
            kind="derived",
            tolerance=0.05,
            description="secondary: the retention index on 1 - memory-pixel SSIM",
        ),
        Metric(
            "memory_horizon",
            "Horizon",
            True,
            kind="derived",
            decimals=0,
            description="largest memory-gap bin (its lower edge, frames) whose recall 95% CI lower bound is above "
            "0.05 (the no-memory band); 0 when none is",
        ),
    ]
    return out


def _check_plugin(obj: object, name: str) -> None:
    from .errors import RegistryError

    if not isinstance(obj, Metric):
        raise RegistryError(f"metric plugin '{name}' ({METRICS.target(name)}) is not a memorybench Metric")
    if obj.fn is None or obj.kind != "frame":
        raise RegistryError(f"metric plugin '{name}': a user metric needs kind='frame' and an fn")


#: the metric plugins (entry points of ``memorybench.metrics``; the built-ins are ``_builtins()``),
#: loaded once: every table cell asks ``all_metrics`` for labels and directions
METRICS = Registry("metric", ENTRY_POINT_GROUP, {}, check=_check_plugin, keep_loaded=True)


def _plugins() -> tuple[Metric, ...]:
    return tuple(METRICS.load(name) for name in sorted(METRICS.plugins()))


def all_metrics() -> dict[str, Metric]:
    """Every metric by name: the built-ins, then the plugins (a duplicate name is an error)."""
    from .errors import MemorybenchError

    out: dict[str, Metric] = {}
    for m in (*_builtins(), *_plugins()):
        if m.kind not in KINDS:
            raise MemorybenchError(f"metric '{m.name}' has unknown kind {m.kind!r} (one of {', '.join(KINDS)})")
        if m.name in out:
            raise METRICS.duplicate(m.name, "built in, and by a plugin" if out[m.name].fn is None else "by two plugins")
        out[m.name] = m
    return out


def get(name: str) -> Metric:
    from .errors import UnknownNameError

    table = all_metrics()
    if name not in table:
        raise UnknownNameError("metric", name, list(table))
    return table[name]


def check_names(names: str | Sequence[str], option: str = "--metrics", extra: Iterable[str] = ()) -> list[str]:
    """Metric names (a list, or comma-separated text), each checked against the registry (and
    ``extra`` names, e.g. those a run's summary holds): did-you-mean on a typo. The one place
    metric names given by a user are checked."""
    from .errors import MemorybenchError

    if isinstance(names, str):
        names = [m.strip() for m in names.split(",") if m.strip()]
    known = [*all_metrics(), *sorted(set(extra) - set(all_metrics()))]
    if not names:
        raise MemorybenchError(f"{option} names no metric (choose from {', '.join(known)})")
    for n in names:
        if n not in known:
            close = difflib.get_close_matches(n, known, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise MemorybenchError(f"{option}: unknown metric '{n}'.{hint} Known: {', '.join(known)}")
    return list(names)


def user_metrics() -> list[Metric]:
    return list(_plugins())


def higher_is_better(name: str) -> bool:
    m = all_metrics().get(name)
    return True if m is None else m.higher_is_better


def label(name: str) -> str:
    m = all_metrics().get(name)
    return name if m is None else m.label


def decimals(name: str) -> int:
    m = all_metrics().get(name)
    return 3 if m is None else m.decimals


#: the per-frame scorer's metric names (kind "frame" built-ins and the MSE sources of "psnr")
FRAME_COLUMNS = tuple(f"{b}{v}" for v in ("", "_known", "_memory") for b in ("mse", "psnr", "ssim", "lpips"))
