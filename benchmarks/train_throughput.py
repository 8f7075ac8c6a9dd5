"""Seconds per training step of each zoo model, and the Mamba-1 scan against the Mamba-2 (SSD) one.

    python benchmarks/train_throughput.py [--quick] [--threads 1,0] [--repeats 2] [--json out.json]

A *training step* is what ``memorybench.train`` does per batch: the loss (forward, memory-weighted
MSE as in training), the backward pass, gradient clipping and an AdamW step. Two workloads:

* ``episode``: one whole standard-tier episode, batch 1 (``scene-retrieval@standard``: 768 frames
  of 64x64, an 8x8 token grid: 49,152 tokens);
* ``smoke``: the CPU recipe's smoke-tier batch (``scene-retrieval@smoke``: 2 episodes of 96 frames
  of 32x32);
* ``episode-192``: the first 192 frames of the episode (what ``--quick`` times).

Models: the six zoo models (default configs, random weights) and, beside ``lssvwm`` and ``mamba``,
the same networks with the Mamba-1 selective scan the zoo used before (``_legacy_selective_scan``:
every Mamba-2 block swapped for the old ``SelectiveSSM``, all else the same modules), marked
``(Mamba-1)``. Each setting (workload, threads) runs ``--repeats`` rounds; in every round each
model does one step, the old and the new scan of a model back to back, so that a change of machine
load affects both. Reported per model: the median and the minimum wall seconds per step and the
median process CPU seconds (with one thread, CPU time is what the step costs when the machine is
shared; wall time includes waiting for a core), and the peak resident memory of a step.

``--threads``: comma-separated thread counts; ``0`` is PyTorch's default (the number of cores).
``--grad-checkpointing auto|on|off``: recompute each layer in the backward pass (``memorybench
train --grad-checkpointing``). ``auto`` (default): on for the episode workload, where the Mamba-1
lssvwm and mamba do not fit in memory without it (their ``[L, E, S]`` scan states), and so for
every model there to compare like with like; off for the smoke batch.

After the table: where the time of one new lssvwm episode step goes (forward + backward of each
kind of module, measured one module at a time on the inputs it gets in the step), then the last
line ``ratio: N.Nx``: the median wall time of the Mamba-1 lssvwm episode step over the Mamba-2 one
(first thread setting).

``--quick``: lssvwm and mamba (old and new) only, the episode workload, one thread, one round.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _legacy_selective_scan as legacy  # noqa: E402

from memorybench.generators import get_generator  # noqa: E402
from memorybench.models import resolve  # noqa: E402
from memorybench.profile import _clear_peak_rss, _peak_rss_mb, _release_free_heap  # noqa: E402
from memorybench.tasks import get_task  # noqa: E402
from memorybench.train import BETAS, training_spec  # noqa: E402
from memorybench.zoo import ZOO_MODELS  # noqa: E402

#: workload -> (task, tier, batch size, frames: None = the whole episode)
WORKLOADS = {
    "episode": ("scene-retrieval", "standard", 1, None),
    "smoke": ("scene-retrieval", "smoke", 2, None),
    "episode-192": ("scene-retrieval", "standard", 1, 192),
}
LEGACY = " (Mamba-1)"
MEMORY_WEIGHT = 5.0


def batch(workload: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(frames [B, T, 3, H, W], actions [B, T, A], loss weight [B, T, H, W]) of training episodes."""
    task, tier, size, length = WORKLOADS[workload]
    spec = training_spec(get_task(task, tier))
    gen = get_generator(spec.family)(spec)
    eps = [gen.generate(i) for i in range(size)]
    frames = torch.stack([torch.from_numpy(e.frames[:length]) for e in eps]).permute(0, 1, 4, 2, 3).float().div(255)
    actions = torch.stack([torch.from_numpy(e.actions[:length]) for e in eps])
    memory = torch.stack([torch.from_numpy(e.memory_mask[:length]) for e in eps]).float()
    return frames, actions, 1 + (MEMORY_WEIGHT - 1) * memory


def build(name: str, grad_checkpointing: bool):
    """(network, AdamW) as ``memorybench.train`` builds them (seed 0)."""
    net = legacy.legacy_net(name.removesuffix(LEGACY)) if name.endswith(LEGACY) else resolve(name).build_net(seed=0)
    net.train()
    net.grad_checkpointing = grad_checkpointing
    opt = torch.optim.AdamW(net.param_groups(0.01), lr=1e-4, betas=BETAS)
    return net, opt


def train_step(net, opt, data) -> None:
    frames, actions, weight = data
    loss = net.loss(frames, actions, weight, torch.Generator().manual_seed(0))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()


def timed_step(net, opt, data) -> dict:
    gc.collect()
    _release_free_heap()
    _clear_peak_rss()
    wall, cpu = time.perf_counter(), time.process_time()
    train_step(net, opt, data)
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "peak_rss_mb": _peak_rss_mb()}


def run_setting(models: list[str], workload: str, threads: int, repeats: int, grad_checkpointing: bool) -> list[dict]:
    gc.collect()
    torch.set_num_threads(threads)
    data = batch(workload)
    nets = {m: build(m, grad_checkpointing) for m in models}
    for m in models:  # warm-up: every code path once, on two frames
        train_step(*nets[m], tuple(v[:, :2] for v in data))
    times: dict[str, list[dict]] = {m: [] for m in models}
    for r in range(repeats):
        for m in models:
            t = timed_step(*nets[m], data)
            times[m].append(t)
            print(
                f"  [{workload}, {threads} thread(s), round {r + 1}/{repeats}] {m:32s} {t['wall']:8.2f} s wall "
                f"{t['cpu']:8.2f} s cpu  peak {t['peak_rss_mb']:.0f} MiB",
                file=sys.stderr,
                flush=True,
            )
    rows = []
    for m in models:
        walls = [t["wall"] for t in times[m]]
        rows.append(
            {
                "model": m,
                "workload": workload,
                "threads": threads,
                "steps": len(walls),
                "grad_checkpointing": grad_checkpointing,
                "wall_median_s": statistics.median(walls),
                "wall_min_s": min(walls),
                "cpu_median_s": statistics.median(t["cpu"] for t in times[m]),
                "peak_rss_mb": max(t["peak_rss_mb"] for t in times[m]),
            }
        )
    return rows


def breakdown(workload: str, threads: int, grad_checkpointing: bool) -> dict[str, float]:
    """CPU seconds of forward + backward per kind of module in one new lssvwm step, each module timed
    alone on the inputs it receives in the step (captured by forward hooks; with gradient
    checkpointing, the trunk's modules with their second forward), and the rest."""
    torch.set_num_threads(threads)
    data = batch(workload)
    net, opt = build("lssvwm", grad_checkpointing)
    kinds = {"encoder": [net.encoder], "decoder": [net.decoder]}
    for layer in net.layers:
        kinds.setdefault("SSM (Mamba-2 blocks, incl. block reshapes)", []).append(layer.ssm)
        kinds.setdefault("frame-local attention", []).append(layer.attn)
        kinds.setdefault("MLP", []).append(layer.mlp)
    captured: dict[int, tuple] = {}
    hooks = [
        mod.register_forward_pre_hook(lambda mod, args: captured.__setitem__(id(mod), args))
        for mods in kinds.values()
        for mod in mods
    ]
    t = timed_step(net, opt, data)
    for h in hooks:
        h.remove()
    out = {}
    for kind, mods in kinds.items():
        total = 0.0
        for mod in mods:
            args = tuple(
                a.detach().requires_grad_(a.is_floating_point()) if isinstance(a, torch.Tensor) else a
                for a in captured[id(mod)]
            )
            gc.collect()
            start = time.process_time()
            if grad_checkpointing and kind not in ("encoder", "decoder"):
                with torch.no_grad():  # a checkpointed layer runs its forward twice
                    mod(*args)
            y = mod(*args)
            y = y[0] if isinstance(y, tuple) else y
            y.backward(torch.ones_like(y))
            total += time.process_time() - start
        out[kind] = total
    out["the rest (norms, residuals, embeddings, loss, optimizer)"] = max(0.0, t["cpu"] - sum(out.values()))
    out["whole step"] = t["cpu"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="lssvwm and mamba (old and new), episode, 1 thread, 1 round")
    ap.add_argument("--threads", default="1,0", help="thread counts to run, comma-separated (0: the default)")
    ap.add_argument("--repeats", type=int, default=2, help="timed rounds per setting")
    ap.add_argument("--workloads", default="episode,smoke")
    ap.add_argument("--models", default=None, help="comma-separated (default: all, with the Mamba-1 variants)")
    ap.add_argument("--grad-checkpointing", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--no-breakdown", action="store_true")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()

    default_threads = torch.get_num_threads()
    all_models = [m for name in ZOO_MODELS for m in ([name + LEGACY, name] if name in ("lssvwm", "mamba") else [name])]
    models = args.models.split(",") if args.models else all_models
    threads = [int(t) or default_threads for t in args.threads.split(",")]
    workloads, repeats = args.workloads.split(","), args.repeats
    if args.quick:
        models = ["lssvwm" + LEGACY, "lssvwm", "mamba" + LEGACY, "mamba"]
        threads, workloads, repeats = threads[:1], ["episode-192"], 1
    unknown = sorted(set(models) - set(all_models))
    if unknown or set(workloads) - set(WORKLOADS):
        ap.error(f"unknown model(s) or workload(s): {unknown or sorted(set(workloads) - set(WORKLOADS))}")

    def checkpointing(workload: str) -> bool:
        return workload.startswith("episode") if args.grad_checkpointing == "auto" else args.grad_checkpointing == "on"

    rows = []
    for workload in workloads:
        for n in threads:
            rows += run_setting(models, workload, n, repeats, checkpointing(workload))

    print(
        f"seconds per training step (forward, backward, AdamW), median [min] of {repeats} round(s); "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    )
    print(f"{'model':26s} {'workload':8s} {'ckpt':>4s} {'threads':>7s} {'wall s':>18s} {'cpu s':>8s} {'peak MiB':>9s}")
    for r in rows:
        print(
            f"{r['model']:26s} {r['workload']:8s} {'on' if r['grad_checkpointing'] else 'off':>4s} {r['threads']:7d} "
            f"{r['wall_median_s']:8.2f} [{r['wall_min_s']:7.2f}] {r['cpu_median_s']:8.2f} {r['peak_rss_mb']:9.0f}"
        )

    def ratio(name, workload, n, key="wall_median_s"):
        old = [r[key] for r in rows if (r["model"], r["workload"], r["threads"]) == (name + LEGACY, workload, n)]
        new = [r[key] for r in rows if (r["model"], r["workload"], r["threads"]) == (name, workload, n)]
        return old[0] / new[0] if old and new else None

    print("\nMamba-1 scan / Mamba-2 (SSD) scan, same network otherwise (wall median; cpu median):")
    for workload in workloads:
        for n in threads:
            for name in ("lssvwm", "mamba"):
                w, c = ratio(name, workload, n), ratio(name, workload, n, "cpu_median_s")
                if w is not None:
                    print(f"  {name:8s} {workload:8s} {n} thread(s): {w:5.1f}x  ({c:.1f}x cpu)")

    main_workload = next((w for w in ("episode", "episode-192") if w in workloads), None)
    parts = None
    if not args.no_breakdown and "lssvwm" in models and main_workload:
        parts = breakdown(main_workload, threads[0], checkpointing(main_workload))
        print(
            f"\nwhere one lssvwm {main_workload} step goes ({threads[0]} thread(s); forward + backward, CPU seconds"
            f"{', grad checkpointing' if checkpointing(main_workload) else ''}):"
        )
        for kind, s in parts.items():
            print(f"  {kind:58s} {s:8.2f}  ({100 * s / parts['whole step']:4.1f} %)")

    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "machine": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(),
                    "torch": torch.__version__,
                    "rows": rows,
                    "lssvwm_breakdown": parts,
                },
                indent=1,
            )
            + "\n"
        )
    headline = ratio("lssvwm", main_workload, threads[0]) if main_workload else None
    if headline is not None:
        if main_workload != "episode":
            print("(--quick: the ratio below is of the first 192 frames of the episode, not the whole episode)")
        print(f"ratio: {headline:.1f}x")


if __name__ == "__main__":
    main()
