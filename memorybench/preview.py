"""Pictures of an episode for people: a contact sheet (PNG/PDF) or an animation (GIF).

Each frame is shown twice, side by side: as the model sees it, and with the memory metadata
overlaid: memory-only pixels (seen before, not in the last K frames: only memory predicts them)
tinted magenta, novel pixels (never seen: nothing predicts them) tinted cyan. Context frames have
a green label, frames the model must predict an orange one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .episode import NEVER_SEEN, Episode

MEMORY_RGB = np.array([255, 0, 200], dtype=np.float32)
NOVEL_RGB = np.array([0, 220, 255], dtype=np.float32)


def overlay(ep: Episode, t: int, alpha: float = 0.6) -> np.ndarray:
    """Frame ``t`` with memory-only pixels tinted magenta and novel pixels cyan (uint8 HxWx3)."""
    f = ep.frames[t].astype(np.float32)
    m = ep.memory_mask[t][..., None]
    n = ep.novel_mask[t][..., None]
    out = np.where(m, (1 - alpha) * f + alpha * MEMORY_RGB, f)
    out = np.where(n, (1 - alpha) * f + alpha * NOVEL_RGB, out)
    return np.clip(out, 0, 255).astype(np.uint8)


def pick_frames(ep: Episode, context_frames: int, count: int = 24) -> list[int]:
    """Frames worth looking at: a few spread over the context, then those of the predicted part
    with the most memory-only pixels (and the first and last predicted frame), in time order."""
    T = ep.num_frames
    n_ctx = max(2, count // 4)
    ctx = np.unique(np.linspace(0, context_frames - 1, n_ctx).round().astype(int)).tolist()
    pred = np.arange(context_frames, T)
    score = ep.memory_mask[context_frames:].reshape(len(pred), -1).sum(1)
    best = pred[np.argsort(-score, kind="stable")][: max(0, count - len(ctx) - 2)]
    chosen = sorted(set(ctx) | set(best.tolist()) | {context_frames, T - 1})
    return chosen[:count] if len(chosen) > count else chosen


def _label(ep: Episode, t: int, context_frames: int) -> str:
    g = int(ep.memory_gap[t])
    gap = "never seen" if g == NEVER_SEEN else f"gap {g}"
    mem = int(ep.memory_mask[t].sum())
    return f"t={t} {gap}\nmemory px {mem}"


def contact_sheet(ep: Episode, context_frames: int, out: str | Path, frames: list[int] | None = None,
                  columns: int = 6, title: str = "") -> Path:
    """Save a grid of (frame, overlay) pairs to ``out`` (.png or .pdf)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    frames = frames if frames is not None else pick_frames(ep, context_frames)
    rows = int(np.ceil(len(frames) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 2.2, rows * 1.55 + 0.8), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, t in zip(axes.ravel(), frames):
        pair = np.concatenate([ep.frames[t], np.full((ep.frames.shape[1], 2, 3), 255, np.uint8), overlay(ep, t)], 1)
        ax.imshow(pair, interpolation="nearest")
        colour = "#1b7f2a" if t < context_frames else "#d2691e"
        ax.set_title(_label(ep, t, context_frames), fontsize=7, color=colour, pad=2)
    handles = [Patch(color=MEMORY_RGB / 255, label="memory-only pixels"), Patch(color=NOVEL_RGB / 255, label="novel pixels"),
               Patch(color="#1b7f2a", label="context (observed)"), Patch(color="#d2691e", label="predicted")]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(title or f"{ep.task} episode {ep.index}", fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)
    return out


def animation(ep: Episode, context_frames: int, out: str | Path, start: int = 0, stop: int | None = None,
              scale: int = 4, fps: int = 12) -> Path:
    """Save frames ``start..stop`` as an animated GIF of (frame | overlay) pairs with a caption."""
    from PIL import Image, ImageDraw

    stop = ep.num_frames if stop is None else min(stop, ep.num_frames)
    if not 0 <= start < stop:
        raise ValueError(f"empty frame range {start}:{stop}")
    H, W = ep.frames.shape[1:3]
    images = []
    for t in range(start, stop):
        pair = np.concatenate([ep.frames[t], np.full((H, 1, 3), 255, np.uint8), overlay(ep, t)], 1)
        img = Image.fromarray(pair).resize((pair.shape[1] * scale, H * scale), Image.NEAREST)
        canvas = Image.new("RGB", (img.width, img.height + 14), (255, 255, 255))
        canvas.paste(img, (0, 14))
        phase = "context" if t < context_frames else "PREDICT"
        g = int(ep.memory_gap[t])
        ImageDraw.Draw(canvas).text((2, 1), f"t={t} {phase} gap={'-' if g == NEVER_SEEN else g}",
                                    fill=(27, 127, 42) if t < context_frames else (210, 105, 30))
        images.append(canvas.convert("P", palette=Image.ADAPTIVE))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(out, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return out
