"""Metric throughput (frames per second) of ``FrameScorer.score`` versus a per-frame reference loop.

    python benchmarks/metric_throughput.py [--frames 512] [--batch 64] [--size 64] [--json out.json]

* **batched**: ``memorybench.metrics.FrameScorer(chunk_size=--batch).score`` on all frames at once:
  PSNR, SSIM and LPIPS, each whole-frame, ``known`` and ``memory`` (9 numbers per frame).
* **per-frame reference**: one frame at a time, scikit-image's ``peak_signal_noise_ratio`` and
  ``structural_similarity`` (Gaussian, sigma 1.5, as pinned) and the ``lpips`` package's
  ``LPIPS(net='alex')`` with the same AlexNet weights: whole-frame only (3 numbers per frame).

Both run on the CPU (``--device`` moves the batched scorer elsewhere) in this process with torch's
default thread count (printed), after a warm-up, on random frames (the cost does not depend on
content), alternating the two so that load from other processes hits both alike; the best of
``--repeats`` counts. The figure of merit is the ratio.
LPIPS weights come from ``memorybench.lpips_weights`` (downloaded once if needed).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=512, help="frames timed for the batched scorer")
    ap.add_argument("--loop-frames", type=int, default=128, help="frames timed for the per-frame loop")
    ap.add_argument("--batch", type=int, default=64, help="FrameScorer chunk size")
    ap.add_argument("--size", type=int, default=64, help="frame height and width")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats; the best is reported")
    ap.add_argument("--device", default="cpu", help="device of the batched scorer (the reference loop runs on the CPU)")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()

    import lpips
    import numpy as np
    import torch
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from memorybench.lpips_weights import load_alexnet_backbone
    from memorybench.metrics import FrameScorer

    torch.manual_seed(0)
    n, s = args.frames, args.size
    target = torch.rand(n, 3, s, s)
    pred = (target + 0.1 * torch.randn_like(target)).clamp(0, 1)
    memory_mask = torch.rand(n, s, s) < 0.3
    novel_mask = torch.rand(n, s, s) < 0.2

    # -- batched ---------------------------------------------------------------------------------
    scorer = FrameScorer(device=args.device, chunk_size=args.batch)
    dev = torch.device(args.device)
    inputs = [x.to(dev) for x in (pred, target, memory_mask, novel_mask)]

    def batched() -> None:
        scorer.score(*inputs)  # returns CPU tensors: includes the device's synchronisation

    # -- per-frame reference -----------------------------------------------------------------------
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation warnings about `pretrained`
        ref = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False).eval()
    backbone, source = load_alexnet_backbone()
    for sl in (ref.net.slice1, ref.net.slice2, ref.net.slice3, ref.net.slice4, ref.net.slice5):
        for name, p in sl.named_parameters():
            p.data.copy_(backbone[f"features.{name}"])

    m = min(args.loop_frames, n)
    preds_np = pred[:m].permute(0, 2, 3, 1).numpy()
    targets_np = target[:m].permute(0, 2, 3, 1).numpy()

    def loop() -> None:
        with torch.no_grad():
            for i in range(m):
                a, b = preds_np[i], targets_np[i]
                peak_signal_noise_ratio(b, a, data_range=1.0)
                structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                      data_range=1.0, channel_axis=-1)
                ref(pred[i:i + 1] * 2 - 1, target[i:i + 1] * 2 - 1)

    # warm-up, then alternate the two so that any load from other processes hits both alike;
    # the best repeat of each counts
    batched()
    loop()
    best_b = best_l = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        batched()
        best_b = min(best_b, time.perf_counter() - t0)
        t0 = time.perf_counter()
        loop()
        best_l = min(best_l, time.perf_counter() - t0)
    batched_fps, loop_fps = n / best_b, m / best_l

    ratio = batched_fps / loop_fps
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}")
    print(f"frames {s}x{s}; batched: {n} frames in chunks of {args.batch}; loop: {m} frames; best of {args.repeats}")
    print(f"LPIPS weights: {source}")
    print(f"FrameScorer.score on {args.device} (PSNR+SSIM+LPIPS, whole+known+memory): {batched_fps:9.1f} frames/s")
    print(f"per-frame loop on cpu, skimage PSNR+SSIM + lpips (whole frame only): {loop_fps:9.1f} frames/s")
    print(f"ratio: {ratio:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
                       "torch": torch.__version__, "threads": torch.get_num_threads(), "size": s, "device": args.device,
                       "batch": args.batch, "frames": n, "loop_frames": m, "numpy": np.__version__,
                       "batched_fps": batched_fps, "loop_fps": loop_fps, "ratio": ratio}, f, indent=1)


if __name__ == "__main__":
    main()
