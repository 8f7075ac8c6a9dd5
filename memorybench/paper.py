"""Our Memory Maze results beside the LSSVWM paper's published numbers (``results/paper_comparison.md``).

The paper (Po et al., "Long-Context State-Space Video World Models", ICCV 2025, Tables 2 and 3)
evaluates 200M-parameter video world models on Memory Maze with two protocols: spatial retrieval
(400 context frames, 400 generated while the agent retraces its path) and spatial reasoning (576
context frames, 224 generated). Our ``maze-retrieval@paper`` and ``maze-reasoning@paper`` tiers
follow them (see the task files for where they differ). ``comparison_markdown(runs)`` writes the
published PSNR / SSIM / LPIPS beside ours (whole-frame metrics over every generated frame, mean
[95% bootstrap CI] over episodes, rollout protocol; and our ``recall``) for the runs it is given:
the references, and the zoo models mapped to the paper's columns by ``PAPER_MODELS``. Which of the
paper's orderings our runs reproduce is computed from the numbers, never written by hand.

Usage::

    python -m memorybench.paper results/runs/maze --out results/paper_comparison.md
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

#: the paper's columns, in its order
PAPER_COLUMNS = ("causal 192-frame context", "Mamba2", "Mamba2 + frame-local attn", "LSSVWM", "causal full context")
#: our task (paper tier) -> the paper's protocol and table
PAPER_TASKS = {
    "maze-retrieval@paper": ("spatial retrieval, 400 context -> 400 generated", "Table 2"),
    "maze-reasoning@paper": ("spatial reasoning, 576 context -> 224 generated", "Table 3"),
}
#: published (PSNR, SSIM, LPIPS) per task and column (the issue's copy of Tables 2 and 3)
PUBLISHED = {
    "maze-retrieval@paper": {
        "causal 192-frame context": (26.4, 0.829, 0.147),
        "Mamba2": (20.4, 0.747, 0.313),
        "Mamba2 + frame-local attn": (19.3, 0.735, 0.336),
        "LSSVWM": (30.8, 0.898, 0.069),
        "causal full context": (32.6, 0.914, 0.057),
    },
    "maze-reasoning@paper": {
        "causal 192-frame context": (27.1, 0.839, 0.125),
        "Mamba2": (26.4, 0.827, 0.150),
        "Mamba2 + frame-local attn": (27.5, 0.845, 0.113),
        "LSSVWM": (28.2, 0.855, 0.099),
        "causal full context": (28.8, 0.860, 0.089),
    },
}
PAPER_PARAMETERS = "about 200M"
#: our zoo model -> (the paper's column it stands for, how ours differs)
PAPER_MODELS = {
    "lssvwm": ("LSSVWM", "block-wise selective scan + frame-local attention, as the paper's"),
    "mamba": ("Mamba2", "Mamba-2 (SSD) scans over time, one per token position"),
    "full-attention": ("causal full context", "causal attention over every observed frame (KV cache)"),
    "frame-local-attention": (
        "causal 192-frame context",
        "causal attention over a window of 4 frames, not 192: the finite-window baseline",
    ),
}
METRICS = (("psnr", "PSNR", 2, "↑"), ("ssim", "SSIM", 3, "↑"), ("lpips", "LPIPS", 3, "↓"))
#: a column's better direction for the orderings (PSNR and SSIM up, LPIPS down)
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "lpips": False}


def _fmt(v: dict | None, digits: int) -> str:
    if not v or v.get("mean") is None:
        return "—"
    s = f"{v['mean']:.{digits}f}"
    if v.get("ci_low") is not None and v.get("ci_high") is not None:
        s += f" [{v['ci_low']:.{digits}f}, {v['ci_high']:.{digits}f}]"
    return s


def _ours(runs: list[dict]) -> dict:
    """``{task key: {model name: (group, meta)}}`` of the rollout groups in ``runs``."""
    out: dict = {}
    for r in runs:
        name = r["meta"]["model"]["name"]
        for key, g in (r["summary"] or {}).get("groups", {}).items():
            task, _, protocol = key.rpartition("/")
            if protocol == "rollout" and task in PAPER_TASKS:
                if name in out.setdefault(task, {}):
                    raise ValueError(f"two runs of '{name}' on {task}: pass one run directory per model")
                out[task][name] = (g, r["meta"])
    return out


def orderings(task: str, ours: dict) -> list[tuple[str, str, str, str]]:
    """For each pair of the paper's columns that both have one of our zoo models on ``task``, and
    each metric: ``(pair, metric, the paper's order, ours: "same" / "reversed" / "tied (CIs overlap)")``."""
    col_model = {col: m for m, (col, _) in PAPER_MODELS.items() if m in ours}
    rows = []
    cols = [c for c in PAPER_COLUMNS if c in col_model]
    for i, a in enumerate(cols):
        for b in cols[i + 1 :]:
            for metric, label, _, _ in METRICS:
                k = ("psnr", "ssim", "lpips").index(metric)
                pa, pb = PUBLISHED[task][a][k], PUBLISHED[task][b][k]
                up = HIGHER_IS_BETTER[metric]
                paper_better = a if (pa > pb) == up else b
                va = ours[col_model[a]][0]["metrics"].get(metric) or {}
                vb = ours[col_model[b]][0]["metrics"].get(metric) or {}
                if va.get("mean") is None or vb.get("mean") is None:
                    continue
                our_better = a if (va["mean"] > vb["mean"]) == up else b
                overlap = (
                    va.get("ci_low") is not None
                    and vb.get("ci_low") is not None
                    and va["ci_low"] <= vb["ci_high"]
                    and vb["ci_low"] <= va["ci_high"]
                )
                verdict = "tied (CIs overlap)" if overlap else ("same" if our_better == paper_better else "reversed")
                rows.append((f"{a} vs {b}", label, f"{paper_better} better", verdict))
    return rows


def _trained_on(ours: dict) -> dict[str, set[str]]:
    """``{model: the task keys its weights were trained on}`` for our models in the paper's columns,
    from each run's ``model.trained_on`` (what the checkpoint's card says)."""
    out: dict[str, set[str]] = {}
    for task_models in ours.values():
        for name, (_, meta) in task_models.items():
            if name in PAPER_MODELS:
                tasks = (meta["model"].get("trained_on") or {}).get("tasks") or []
                out.setdefault(name, set()).update(t["key"] for t in tasks)
    return out


def training_sentence(ours: dict) -> str:
    """What our paper-column models were trained on, read from the runs, and what that means for
    the comparison (one or two sentences)."""
    trained = _trained_on(ours)
    if not trained:
        return "(no run of ours in the paper's columns yet)."
    mixes = sorted({", ".join(f"`{k}`" for k in sorted(keys)) or "unknown tasks" for keys in trained.values()})
    what = "; ".join(mixes)
    on_maze = any(k.startswith("maze-") for keys in trained.values() for k in keys)
    if not on_maze:
        return (
            f"trained on {what} only, never on a maze (see README, Reference models): on these tasks they show "
            "transfer, not Memory Maze training, so neither levels nor orderings between them say much about the "
            "paper's claims."
        )
    return (
        f"trained on {what} (their train splits: training seeds, never an evaluation maze; steps, crop lengths "
        "and data hashes in each model's card, see README, Reference models): far less data, compute and "
        "context than the paper's models had, so orderings between ours say little about the "
        "paper's claims."
    )


def comparison_markdown(runs: list[dict], sources: Sequence[str] = ()) -> str:
    """The comparison table (Markdown) for run directories loaded with ``leaderboard.load_runs``."""
    from .models import NO_MEMORY

    ours = _ours(runs)
    lines = [
        "<!-- generated by `python -m memorybench.paper`; do not edit by hand -->",
        "",
        "# Memory Maze: the LSSVWM paper's numbers beside ours",
        "",
        "The paper: Po et al., *Long-Context State-Space Video World Models*, ICCV 2025, Tables 2 (spatial "
        "retrieval) and 3 (spatial reasoning): PSNR / SSIM / LPIPS of the generated frames of "
        f"{PAPER_PARAMETERS}-parameter models. Ours: `maze-retrieval@paper` and `maze-reasoning@paper` "
        "(the same context and generated lengths), rollout protocol, whole-frame PSNR / SSIM / LPIPS over every "
        "generated frame, mean [95% bootstrap CI over episodes], and `recall` (identification of the memory "
        "frames among other views of the episode; 0 = chance, 1 = perfect; the paper has no such metric).",
        "",
        "**Differences of scale.** Models: the paper's are about 200M parameters trained on large Memory Maze "
        "datasets; our zoo models are about 3M parameters, small CPU references "
        + training_sentence(ours)
        + " Data: the paper's own trajectories and "
        "simulator build; ours are scripted (explore with look-arounds, then retrace or revisit by other "
        "routes) in 9x9 mazes rendered by memory-maze 1.0.3 / dm-control 1.0.50 / MuJoCo 3 with Mesa, 64x64. "
        "Metrics: ours average PSNR from the mean squared error per episode (then over episodes), SSIM and "
        "LPIPS (v0.1, AlexNet) per frame; the paper's exact averaging may differ. Model mapping: "
        + "; ".join(f"our `{m}` stands for *{c}* ({why})" for m, (c, why) in PAPER_MODELS.items())
        + "; the paper's *Mamba2 + frame-local attn* has no counterpart in our zoo.",
        "",
    ]
    for task, (protocol, table) in PAPER_TASKS.items():
        have = ours.get(task, {})
        lines += [f"## {task}: {protocol} (paper {table})", ""]
        head = (
            ["Model", "ours: parameters"]
            + [f"paper {lab} {arr}" for _, lab, _, arr in METRICS]
            + [f"ours {lab} {arr}" for _, lab, _, arr in METRICS]
            + ["ours recall ↑"]
        )
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|---|---:|" + "---:|" * (len(head) - 2))
        by_col = {col: m for m, (col, _) in PAPER_MODELS.items()}
        for col in PAPER_COLUMNS:
            pub = PUBLISHED[task][col]
            model = by_col.get(col)
            cells = [f"{col}" + (f" (ours: `{model}`)" if model else "")]
            g = have.get(model) if model else None
            cells.append(f"{g[1]['model'].get('parameters'):,}" if g and g[1]["model"].get("parameters") else "—")
            cells += [f"{v:.{d}f}" for v, (_, _, d, _) in zip(pub, METRICS)]
            missing = "not run yet" if model else "no counterpart"
            cells += [_fmt(g[0]["metrics"].get(k), d) if g else missing for k, _, d, _ in METRICS]
            cells.append(_fmt(g[0]["metrics"].get("recall"), 3) if g else "—")
            lines.append("| " + " | ".join(cells) + " |")
        refs = [m for m in have if m not in PAPER_MODELS]
        order = {m: i for i, m in enumerate(("ground-truth", "perfect-memory", "mean-frame", *NO_MEMORY))}
        for m in sorted(refs, key=lambda m: (order.get(m, 99), m)):
            g, meta = have[m]
            kind = (
                "reference, privileged"
                if meta["model"].get("privileged")
                else ("no-memory reference" if m in NO_MEMORY else "reference")
            )
            cells = [f"*{m}* ({kind})", "—", "—", "—", "—"]
            cells += [_fmt(g["metrics"].get(k), d) for k, _, d, _ in METRICS]
            cells.append(_fmt(g["metrics"].get("recall"), 3))
            lines.append("| " + " | ".join(cells) + " |")
        episodes = sorted({g["episodes"] for g, _ in have.values()})
        incomplete = sorted(m for m, (g, _) in have.items() if not g.get("complete", True))
        lines.append("")
        if episodes:
            lines.append(
                f"Ours: {', '.join(map(str, episodes))} episodes per model"
                + (f"; incomplete runs: {', '.join(incomplete)}" if incomplete else "")
                + "."
            )
        rows = orderings(task, have)
        if rows:
            lines += [
                "",
                "Orderings of the paper reproduced by ours (`same`), reversed, or not resolved:",
                "",
                "| pair | metric | paper | ours |",
                "|---|---|---|---|",
            ]
            lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
        else:
            lines.append("No zoo model has been run on this task yet: no ordering of the paper can be compared.")
        lines.append("")
    if sources:
        lines.append("Runs: " + ", ".join(f"`{s}`" for s in sources) + ".")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    from .leaderboard import load_runs

    ap = argparse.ArgumentParser(prog="python -m memorybench.paper", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run directories (or directories of run directories)")
    ap.add_argument("--out", type=Path, help="write the Markdown here (default: print it)")
    args = ap.parse_args(argv)
    text = comparison_markdown(load_runs(args.runs), sources=args.runs)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
