"""Scoring throughput: the batched ``FrameScorer`` against a per-frame reference loop, and what the
identification test (``recall``) adds, on the frames of real episodes.

    python benchmarks/metric_throughput.py [--task scene-retrieval@standard] [--episodes 2] [--json out.json]

The frames are the predicted frames of the task's first ``--episodes`` episodes, with their real
memory and novel masks; the "predictions" are the truth plus noise (the cost does not depend on
the content). Both sides compute the same numbers per frame: MSE/PSNR, SSIM and LPIPS over the
whole frame, the known pixels and the memory-only pixels, masked SSIM and LPIPS on the composite
(prediction inside the mask, truth outside), as ``memorybench.metrics`` defines them.

* **batched**: ``memorybench.metrics.FrameScorer.score`` over all the frames (chunked as it chooses).
* **per-frame reference**: one frame at a time with scikit-image (``peak_signal_noise_ratio``,
  ``structural_similarity(full=True)`` on the frame and on each composite) and the ``lpips``
  package (``LPIPS(net='alex', spatial=True)`` on the frame and on each composite), the same
  AlexNet weights; an empty mask is skipped, a full one reuses the frame's values.
* **identification**: ``memorybench.recall.score_items`` on the same episodes (hits, chance, false
  recall of every memory item), reported as a share of the batched scoring time.

Timed on the CPU (``--device`` moves the batched scorer) with torch's default thread count
(printed), after a warm-up, alternating the sides so that load from other processes hits them
alike; the best of ``--repeats`` counts. The last line is ``ratio: N.Nx`` (batched over loop).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="scene-retrieval@standard", help="task whose predicted frames are scored")
    ap.add_argument("--episodes", type=int, default=2, help="episodes of the task")
    ap.add_argument("--loop-frames", type=int, default=96, help="frames timed for the per-frame loop")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats; the best is reported")
    ap.add_argument("--device", default="cpu", help="device of the batched scorer (the reference loop runs on the CPU)")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()

    import lpips
    import numpy as np
    import torch
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from memorybench.generators import get_generator
    from memorybench.lpips_weights import load_alexnet_backbone
    from memorybench.metrics import FrameScorer
    from memorybench.recall import score_items
    from memorybench.tasks import TaskRegistry

    spec = TaskRegistry().select(args.task)[0]
    gen = get_generator(spec.family)(spec)
    C = spec.context_frames
    episodes = [gen.generate(i) for i in range(args.episodes)]
    rng = np.random.default_rng(0)
    preds_u8 = [
        np.clip(ep.frames[C:].astype(np.int16) + rng.integers(-40, 41, ep.frames[C:].shape), 0, 255).astype(np.uint8)
        for ep in episodes
    ]
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float().div(255)  # noqa: E731
    pred = torch.cat([to_t(p) for p in preds_u8])
    target = torch.cat([to_t(ep.frames[C:]) for ep in episodes])
    memory = torch.from_numpy(np.concatenate([ep.memory_mask[C:] for ep in episodes]))
    novel = torch.from_numpy(np.concatenate([ep.novel_mask[C:] for ep in episodes]))
    n = pred.shape[0]

    # -- batched ---------------------------------------------------------------------------------
    scorer = FrameScorer(device=args.device)
    dev = torch.device(args.device)
    inputs = [x.to(dev) for x in (pred, target, memory, novel)]

    def batched() -> None:
        scorer.score(*inputs)  # returns CPU tensors: includes the device's synchronisation

    def identify() -> None:
        for ep, p in zip(episodes, preds_u8):
            score_items(gen, ep, p, C, "rollout")

    # -- per-frame reference -----------------------------------------------------------------------
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation warnings about `pretrained`
        ref = lpips.LPIPS(
            net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False, spatial=True
        ).eval()
    backbone, source = load_alexnet_backbone()
    for sl in (ref.net.slice1, ref.net.slice2, ref.net.slice3, ref.net.slice4, ref.net.slice5):
        for name, p in sl.named_parameters():
            p.data.copy_(backbone[f"features.{name}"])

    m = min(args.loop_frames, n)
    p_np = pred[:m].permute(0, 2, 3, 1).double().numpy()
    t_np = target[:m].permute(0, 2, 3, 1).double().numpy()
    masks_np = {"known": (~novel[:m]).numpy(), "memory": memory[:m].numpy()}

    def ssim_full(a, b):
        return structural_similarity(
            a,
            b,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=-1,
            full=True,
        )

    def loop() -> None:
        with torch.no_grad():
            for i in range(m):
                a, b = p_np[i], t_np[i]
                peak_signal_noise_ratio(b, a, data_range=1.0)
                _, smap = ssim_full(a, b)
                spatial = ref(pred[i : i + 1] * 2 - 1, target[i : i + 1] * 2 - 1)[0, 0]
                spatial.mean()
                for mask in masks_np.values():
                    mk = mask[i]
                    if not mk.any():
                        continue
                    peak_signal_noise_ratio(b[mk], a[mk], data_range=1.0)
                    if mk.all():
                        smap[mk].mean(), spatial[torch.from_numpy(mk)].mean()
                        continue
                    comp = np.where(mk[..., None], a, b)
                    ssim_full(comp, b)[1][mk].mean()
                    c = torch.from_numpy(comp).permute(2, 0, 1)[None].float()
                    ref(c * 2 - 1, target[i : i + 1] * 2 - 1)[0, 0][torch.from_numpy(mk)].mean()

    # warm-up, then alternate so that any load from other processes hits every side alike
    batched()
    loop()
    identify()
    best = {"batched": float("inf"), "loop": float("inf"), "identify": float("inf")}
    for _ in range(args.repeats):
        for name, fn in (("batched", batched), ("loop", loop), ("identify", identify)):
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    batched_fps, loop_fps = n / best["batched"], m / best["loop"]
    ratio = batched_fps / loop_fps
    share = best["identify"] / best["batched"]
    items = sum(len(ep.items) for ep in episodes)

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}")
    print(
        f"{spec.key}: {args.episodes} episodes, {n} predicted frames "
        f"({int(memory.any(dim=(1, 2)).sum())} with memory pixels, {int(novel.any(dim=(1, 2)).sum())} with novel "
        f"pixels), {items} memory items; loop: {m} frames; best of {args.repeats}"
    )
    print(f"LPIPS weights: {source}")
    print(
        f"FrameScorer.score on {args.device} (MSE/PSNR, SSIM, LPIPS x whole/known/memory, composites): "
        f"{batched_fps:9.1f} frames/s"
    )
    print(f"per-frame loop on cpu, skimage + lpips, the same numbers: {loop_fps:9.1f} frames/s")
    print(f"identification (recall items): {best['identify']:.3f} s = {100 * share:.1f}% of the batched scoring time")
    print(f"ratio: {ratio:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "machine": platform.processor() or platform.machine(),
                    "python": platform.python_version(),
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                    "task": spec.key,
                    "episodes": args.episodes,
                    "frames": n,
                    "loop_frames": m,
                    "items": items,
                    "device": args.device,
                    "batched_fps": batched_fps,
                    "loop_fps": loop_fps,
                    "ratio": ratio,
                    "identify_seconds": best["identify"],
                    "identify_share_of_scoring": share,
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
