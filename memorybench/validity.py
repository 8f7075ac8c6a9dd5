"""The suite's validity check: memory scores that strategies without memory cannot game.

A benchmark of memory is credible only if every strategy that remembers nothing (copy-last, means,
blur, inpainting, shifted copies: ``memorybench.models.nomemory``) scores at chance on its headline
and a genuine memory scores near 1. ``check`` runs them on tasks and protocols and returns the
``recall`` of each model per gap bin, with the verdict:

* every **no-memory** reference: its headline ``recall`` (all items of the task and protocol) has a
  95% CI upper bound at most ``NO_MEMORY_MAX`` (0.05; ``recall`` is already chance-normalised: 0
  is chance), and in every gap bin the CI *lower* bound is at most ``NO_MEMORY_MAX``: no bin counts
  toward a memory horizon (``aggregate.memory_horizon`` uses that same band), so such a strategy's
  horizon is 0. (An upper bound per bin cannot be asked of small bins: with 75 items at a chance of
  1/64, two lucky hits lift it above 0.05. The per-bin means are in the table.)
* the **oracles** (``perfect-memory``, which puts back what it observed, and ``ground-truth``):
  ``recall`` at least ``ORACLE_MIN`` overall (``ground-truth`` must be exactly 1: a candidate that
  shows the very same pixels as the truth on an item's region is never offered, see
  ``memorybench.recall``). On families
  without per-pixel content identities (``Generator.has_content_ids = False``: Memory Maze,
  recorded episodes) the perfect-memory reference is approximate (the observed frame of the
  closest pose, not a re-rendering at the true pose): its recall is reported as the margin that
  reference reaches, not checked against ``ORACLE_MIN``.

``memorybench validity`` runs it and writes the table (``results/validity.md`` is made with it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

NO_MEMORY_MAX = 0.05
ORACLE_MIN = 0.95
ORACLES = ("perfect-memory", "ground-truth")


@dataclass
class ValidityResult:
    """``results[task_key][protocol][model]`` = the ``evaluate_recall`` summary."""

    results: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)  # (task key, reason)
    #: task keys whose perfect-memory reference is approximate (no content identities)
    approximate: list = field(default_factory=list)
    #: episodes evaluated per task key
    episodes: dict = field(default_factory=dict)

    def problems(self) -> list[str]:
        from .models import NO_MEMORY

        out = []
        for task, by_p in self.results.items():
            for protocol, by_m in by_p.items():
                for model, r in by_m.items():
                    where = f"{model} on {task} ({protocol})"
                    if model in NO_MEMORY:
                        head = r["metrics"].get("recall") or {}
                        bound = head.get("ci_high") if head.get("ci_high") is not None else head.get("mean")
                        if bound is not None and bound > NO_MEMORY_MAX:
                            out.append(
                                f"{where}: recall CI upper bound {bound:.3f} > {NO_MEMORY_MAX} ({r['items']} items)"
                            )
                        for b in r["by_gap"]:
                            low = ((b.get("metrics") or {}).get("recall") or {}).get("ci_low")
                            if low is not None and low > NO_MEMORY_MAX:
                                out.append(
                                    f"{where}, gap bin {b['label']}: recall CI lower bound {low:.3f} > "
                                    f"{NO_MEMORY_MAX} ({b['items']} items): a memory horizon without memory"
                                )
                    elif model in ORACLES:
                        if model == "perfect-memory" and task in self.approximate:
                            continue  # an approximate reference: its margin is reported, not checked
                        mean = (r["metrics"].get("recall") or {}).get("mean")
                        floor = 1.0 if model == "ground-truth" else ORACLE_MIN
                        if mean is None or mean < floor - 1e-12:
                            out.append(f"{where}: recall {mean} < {floor}")
        return out

    @classmethod
    def from_json(cls, text: str, source: str = "<json>") -> ValidityResult:
        """The result a ``to_json`` text holds (``memorybench validity --out X.md`` writes it as X.json)."""
        from .errors import DataError

        try:
            d = json.loads(text)
            return cls(
                results=dict(d["results"]),
                skipped=[tuple(x) for x in d.get("skipped", [])],
                approximate=list(d.get("approximate_perfect_memory", [])),
                episodes=dict(d.get("episodes", {})),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{source} is not a validity result written by `memorybench validity` ({e})") from None

    def merge(self, other: ValidityResult) -> ValidityResult:
        """This result with ``other``'s tasks added; a task in both takes ``other``'s sections."""
        results = {**self.results, **other.results}
        new = set(other.results) | {k for k, _ in other.skipped}
        return ValidityResult(
            results=results,
            skipped=[s for s in self.skipped if s[0] not in new] + list(other.skipped),
            approximate=[t for t in self.approximate if t not in new] + list(other.approximate),
            episodes={**{k: v for k, v in self.episodes.items() if k not in new}, **other.episodes},
        )

    def to_json(self) -> str:
        return (
            json.dumps(
                {
                    "no_memory_max": NO_MEMORY_MAX,
                    "oracle_min": ORACLE_MIN,
                    "results": self.results,
                    "skipped": self.skipped,
                    "approximate_perfect_memory": self.approximate,
                    "episodes": self.episodes,
                    "problems": self.problems(),
                },
                indent=1,
            )
            + "\n"
        )

    def to_markdown(self) -> str:
        from .models import NO_MEMORY

        lines = [
            "<!-- generated by `memorybench validity`; do not edit by hand -->",
            "",
            "# Validity of the memory score",
            "",
            f"`recall` (0 = chance, 1 = perfect identification) of every strategy without memory "
            f"(overall, their 95% CI upper bound must stay at most {NO_MEMORY_MAX}; in every gap bin, the CI "
            f"lower bound at most {NO_MEMORY_MAX}: no memory horizon) and of the "
            f"oracles (perfect-memory at least {ORACLE_MIN}, ground-truth exactly 1). Cells: mean "
            "[95% cluster-bootstrap CI, episodes resampled]; the header gives each gap bin's number of memory items "
            "(per model: the same items for every model).",
            "",
        ]
        for task, by_p in self.results.items():
            for protocol, by_m in by_p.items():
                any_model = next(iter(by_m.values()))
                bins = [b for b in any_model["by_gap"] if b["items"]]
                lines.append(f"## {task} · {protocol} · {self.episodes.get(task, '?')} episodes")
                lines.append("")
                head = ["Model", "kind", "overall"] + [f"{b['label']} ({b['items']})" for b in bins]
                lines.append("| " + " | ".join(head) + " |")
                lines.append("|---|---|" + "---:|" * (len(head) - 2))
                for model, r in by_m.items():
                    kind = "no memory" if model in NO_MEMORY else "oracle" if model in ORACLES else "other"
                    if model == "perfect-memory" and task in self.approximate:
                        kind = "oracle (approximate: closest pose)"
                    cells = [model, kind, _fmt(r["metrics"].get("recall"))]
                    by_label = {b["label"]: b for b in r["by_gap"]}
                    cells += [_fmt(((by_label.get(b["label"]) or {}).get("metrics") or {}).get("recall")) for b in bins]
                    lines.append("| " + " | ".join(cells) + " |")
                lines.append("")
        if self.approximate:
            lines += [
                f"Perfect-memory on {', '.join(self.approximate)} is approximate (it copies the observed frame "
                "of the closest pose; these families have no per-pixel content identities): its recall is the "
                f"margin it reaches, not checked against {ORACLE_MIN}.",
                "",
            ]
        problems = self.problems()
        lines.append(
            "**Verdict: "
            + (
                "valid** (every no-memory strategy at chance, every oracle near 1)."
                if not problems
                else "NOT valid**:\n\n" + "\n".join(f"- {p}" for p in problems)
            )
        )
        if self.skipped:
            lines += ["", "Not checked: " + "; ".join(f"{k} ({why})" for k, why in self.skipped) + "."]
        return "\n".join(lines) + "\n"


def _fmt(v: dict | None) -> str:
    if not v or v.get("mean") is None:
        return "—"
    if v.get("ci_low") is None:
        return f"{v['mean']:.3f}"
    return f"{v['mean']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]"


def check(
    tasks: Sequence,
    protocols: Sequence[str] = ("rollout", "teacher-forced"),
    models: Sequence[str] | None = None,
    device: str = "cpu",
    batch_size: int = 8,
    progress: Callable[[str, int, int], None] | None = None,
    limit: int | None = None,
) -> ValidityResult:
    """Run ``models`` (default: every no-memory reference and the oracles) on ``tasks`` (``TaskSpec`` s),
    on each task's first ``limit`` episodes (default: all); ``progress(what, done, total)`` is called
    before each (model, task, protocol)."""
    from .generators import get_generator
    from .models import NO_MEMORY
    from .recall import evaluate_recall

    models = list(models) if models is not None else [*NO_MEMORY, *ORACLES]
    out = ValidityResult()
    todo = []
    for spec in tasks:
        gen = get_generator(spec.family)
        if gen.num_candidates(spec) is None:
            out.skipped.append((spec.key, "its family defines no memory items yet"))
            continue
        if not gen.has_content_ids:
            out.approximate.append(spec.key)
        todo += [(spec, p, m) for p in protocols if p in spec.protocols for m in models]
    for k, (spec, protocol, model) in enumerate(todo):
        if progress:
            progress(f"{model} · {spec.key} · {protocol}", k, len(todo))
        episodes = range(spec.episodes if limit is None else min(limit, spec.episodes))
        out.episodes[spec.key] = len(episodes)
        out.results.setdefault(spec.key, {}).setdefault(protocol, {})[model] = evaluate_recall(
            model, spec, protocol, episodes=episodes, batch_size=batch_size, device=device
        )
    return out
