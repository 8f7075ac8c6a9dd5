"""Pictures of an episode for people: a contact sheet (PNG/PDF) or an animation (GIF/MP4).

Each frame is shown twice, side by side: as the model sees it, and as a *mask view*: a grey copy
of the frame with the memory metadata drawn over it: memory-only pixels (seen before, not in the
last K frames: only memory predicts them) filled magenta, novel pixels (never seen: nothing
predicts them) hatched cyan. The objects are drawn in saturated hues of the whole colour wheel
(``generators.render.palette_colour``, magenta and cyan included), so the mask view is grey
everywhere else: a colour there can only be the mask. Context frames have a green label, frames
the model must predict an orange one.

``predictions_sheet`` and ``predictions_animation`` (``memorybench show``) put a run's saved
predictions beside the truth: prediction | truth | mask view | the true frame where the content
was last seen (``t - memory_gap[t]``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .episode import NEVER_SEEN, Episode

MEMORY_RGB = np.array([255, 0, 200], dtype=np.float32)
NOVEL_RGB = np.array([0, 220, 255], dtype=np.float32)
HATCH_PERIOD = 3  # novel pixels: every third diagonal is cyan
PAIR_CAPTION = "left: the frame; right: memory-only pixels (magenta) and novel pixels (cyan hatching) on a grey copy"


def overlay(ep: Episode, t: int, alpha: float = 0.6, frame: np.ndarray | None = None) -> np.ndarray:
    """The mask view of frame ``t`` (uint8 HxWx3): the frame in grey, memory-only pixels magenta,
    novel pixels hatched cyan. ``frame`` replaces the episode's frame (e.g. a prediction)."""
    f = (ep.frames[t] if frame is None else frame).astype(np.float32)
    grey = (0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]) * 0.6 + 50  # dimmed: the marks stand out
    base = np.repeat(grey[..., None], 3, axis=2)
    m = ep.memory_mask[t][..., None]
    H, W = m.shape[:2]
    yy, xx = np.mgrid[0:H, 0:W]
    hatch = (((yy + xx) % HATCH_PERIOD) == 0)[..., None]
    n = ep.novel_mask[t][..., None]
    out = np.where(m, (1 - alpha) * base + alpha * MEMORY_RGB, base)
    out = np.where(n & hatch, NOVEL_RGB, out)
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


def contact_sheet(
    ep: Episode,
    context_frames: int,
    out: str | Path,
    frames: list[int] | None = None,
    columns: int = 6,
    title: str = "",
) -> Path:
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
    handles = [
        Patch(color=MEMORY_RGB / 255, label="memory-only pixels"),
        Patch(facecolor="#7f7f7f", edgecolor=NOVEL_RGB / 255, hatch="///", label="novel pixels"),
        Patch(color="#1b7f2a", label="context (observed)"),
        Patch(color="#d2691e", label="predicted"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle((title or f"{ep.task} episode {ep.index}") + f"\nin each pair, {PAIR_CAPTION}", fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)
    return out


def animation(
    ep: Episode,
    context_frames: int,
    out: str | Path,
    start: int = 0,
    stop: int | None = None,
    scale: int = 4,
    fps: int = 12,
) -> Path:
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
        draw = ImageDraw.Draw(canvas)
        draw.text(
            (2, 1),
            f"t={t} {phase} gap={'-' if g == NEVER_SEEN else g}",
            fill=(27, 127, 42) if t < context_frames else (210, 105, 30),
        )
        draw.text((img.width - 2, 1), "frame | mask", fill=(90, 90, 90), anchor="ra")
        images.append(canvas.convert("P", palette=Image.ADAPTIVE))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(out, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return out


# ------------------------------------------------------------------------------------------------
# saved predictions beside the truth (`memorybench show`)

SHOW_COLUMNS = ("prediction", "truth", "memory mask (on truth)", "last seen (truth at t - gap)")


def gap_of(ep: Episode, t: int, protocol: str = "teacher-forced") -> int:
    """Frame ``t``'s memory gap under ``protocol``: under ``rollout`` counted from what the model
    saw (``memory_gap_rollout``: the last *context* frame that showed the content), else
    ``memory_gap``."""
    if protocol == "rollout" and getattr(ep, "memory_gap_rollout", None) is not None:
        return int(ep.memory_gap_rollout[t])
    return int(ep.memory_gap[t])


def last_seen_frame(ep: Episode, t: int, protocol: str = "teacher-forced") -> int | None:
    """The frame where frame ``t``'s remembered content was last seen *by the model* under
    ``protocol``: ``t - gap`` (``None`` when nothing in it was seen before, or the gap is 0)."""
    g = gap_of(ep, t, protocol)
    if g == NEVER_SEEN or g < 1 or t - g < 0:
        return None
    return t - g


def pick_predicted_frames(ep: Episode, start: int, stop: int, count: int = 8) -> list[int]:
    """Up to ``count`` frames of ``start..stop`` worth looking at: the first one, and frames with
    memory-only pixels spread evenly over the range (so that short and long gaps both show)."""
    from .episode import MIN_MEMORY_PIXELS

    score = ep.memory_mask[start:stop].reshape(stop - start, -1).sum(1)
    cand = np.flatnonzero(score >= MIN_MEMORY_PIXELS) + start
    if len(cand) > count - 1:
        cand = cand[np.unique(np.linspace(0, len(cand) - 1, count - 1).round().astype(int))]
    return sorted({start, *cand.tolist()})[:count]


def _panels(ep: Episode, pred: np.ndarray, t: int, protocol: str = "teacher-forced") -> list[np.ndarray]:
    H, W = ep.frames.shape[1:3]
    seen = last_seen_frame(ep, t, protocol)
    past = ep.frames[seen] if seen is not None else np.full((H, W, 3), 235, np.uint8)
    return [pred, ep.frames[t], overlay(ep, t), past]


def _number(x) -> bool:
    return isinstance(x, (int, float)) and x == x  # not None, not NaN (a frame without memory pixels)


def _row_label(ep: Episode, t: int, scores: dict | None, protocol: str = "teacher-forced") -> str:
    g = gap_of(ep, t, protocol)
    gap = "never seen" if g == NEVER_SEEN else f"gap {g}"
    s = (scores or {}).get(t, {})
    metric = "".join(
        f"\n{name} {s[key]:.1f} dB"
        for key, name in (("psnr", "PSNR"), ("psnr_memory", "PSNR mem"))
        if _number(s.get(key))
    )
    return f"t={t}\n{gap}\nmemory px {int(ep.memory_mask[t].sum())}{metric}"


def predictions_sheet(
    ep: Episode,
    preds: np.ndarray,
    start: int,
    out: str | Path,
    frames: list[int] | None = None,
    title: str = "",
    scores: dict | None = None,
    protocol: str = "teacher-forced",
) -> Path:
    """A PNG/PDF grid: one row per frame ``t`` (of the predicted frames ``start..``), the columns
    of ``SHOW_COLUMNS`` (gaps and last-seen frames as the model saw them under ``protocol``). ``preds`` is uint8 [N, H, W, 3] for frames ``start .. start+N-1``;
    ``scores`` maps a frame to its records (``psnr``, ``psnr_memory``) for the row labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    stop = start + len(preds)
    frames = frames if frames is not None else pick_predicted_frames(ep, start, stop)
    fig, axes = plt.subplots(len(frames), 4, figsize=(4 * 1.7 + 0.9, len(frames) * 1.7 + 1.0), squeeze=False)
    for r, t in enumerate(frames):
        seen = last_seen_frame(ep, t, protocol)
        for c, img in enumerate(_panels(ep, preds[t - start], t, protocol)):
            ax = axes[r, c]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(SHOW_COLUMNS[c].replace(" (", "\n("), fontsize=8)
            if c == 3:
                ax.set_xlabel(f"t={seen}" if seen is not None else "nothing seen before", fontsize=7)
        axes[r, 0].set_ylabel(
            _row_label(ep, t, scores, protocol), fontsize=7, rotation=0, ha="right", va="center", color="#d2691e"
        )
    handles = [
        Patch(color=MEMORY_RGB / 255, label="memory-only pixels"),
        Patch(facecolor="#7f7f7f", edgecolor=NOVEL_RGB / 255, hatch="///", label="novel pixels"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=7, frameon=False)
    fig.suptitle(title or f"{ep.task} episode {ep.index}", fontsize=9)
    fig.tight_layout(rect=(0, 0.03, 1, 0.98))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)
    return out


def _show_frame(
    ep: Episode,
    pred: np.ndarray,
    t: int,
    context_frames: int,
    scale: int,
    scores: dict | None,
    title: str,
    protocol: str = "teacher-forced",
):
    from PIL import Image, ImageDraw

    H, W = ep.frames.shape[1:3]
    gap_px, head, caption = 4, 28, 12
    panels = [Image.fromarray(p).resize((W * scale, H * scale), Image.NEAREST) for p in _panels(ep, pred, t, protocol)]
    width = 4 * W * scale + 3 * gap_px
    canvas = Image.new("RGB", (max(width, 420), head + caption + H * scale + caption), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    g = gap_of(ep, t, protocol)
    s = (scores or {}).get(t, {})
    psnr = f"  PSNR {s['psnr']:.1f} dB" if _number(s.get("psnr")) else ""
    psnr += f"  PSNR mem {s['psnr_memory']:.1f} dB" if _number(s.get("psnr_memory")) else ""
    draw.text((2, 1), title, fill=(60, 60, 60))
    draw.text(
        (2, 14),
        f"t={t} ({'context' if t < context_frames else 'predicted'})  gap "
        f"{'-' if g == NEVER_SEEN else g}  memory px {int(ep.memory_mask[t].sum())}{psnr}",
        fill=(210, 105, 30),
    )
    names = ("prediction", "truth", "memory mask", "last seen")
    seen = last_seen_frame(ep, t, protocol)
    for c, img in enumerate(panels):
        x = c * (W * scale + gap_px)
        draw.text((x + 1, head), names[c], fill=(40, 40, 40))
        canvas.paste(img, (x, head + caption))
        if c == 3:
            draw.text(
                (x + 1, head + caption + H * scale),
                f"t={seen}" if seen is not None else "never seen",
                fill=(40, 40, 40),
            )
    return canvas


def predictions_animation(
    ep: Episode,
    preds: np.ndarray,
    start: int,
    context_frames: int,
    out: str | Path,
    frames: range | None = None,
    scale: int = 4,
    fps: int = 8,
    scores: dict | None = None,
    title: str = "",
    protocol: str = "teacher-forced",
) -> Path:
    """A GIF or MP4 of ``SHOW_COLUMNS`` side by side over time (frames ``start..`` by default).

    MP4 needs ffmpeg: the ``imageio-ffmpeg`` package, or an ``ffmpeg`` program for matplotlib's
    writer; without either it raises a ``MemorybenchError`` suggesting a GIF.
    """
    from .errors import MemorybenchError

    out = Path(out)
    frames = frames if frames is not None else range(start, start + len(preds))
    title = title or f"{ep.task} episode {ep.index}"
    suffix = out.suffix.lower()
    writer = None
    if suffix == ".mp4":
        writer = _mp4_writer()
        if writer is None:
            raise MemorybenchError(
                "writing .mp4 needs ffmpeg: `pip install imageio-ffmpeg`, or an ffmpeg program on "
                "PATH (e.g. `apt-get install ffmpeg`); or write a .gif instead"
            )
    images = [_show_frame(ep, preds[t - start], t, context_frames, scale, scores, title, protocol) for t in frames]
    out.parent.mkdir(parents=True, exist_ok=True)
    if writer is not None:
        writer(out, [np.asarray(im) for im in images], fps)
    else:
        from PIL import Image

        images = [im.convert("P", palette=Image.ADAPTIVE) for im in images]
        images[0].save(out, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return out


def _mp4_writer():
    """A function ``(path, [HxWx3 uint8], fps)`` writing an H.264 MP4, or None without ffmpeg."""
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401 - the plugin imageio needs for MP4

        def write(path, images, fps):
            even = [im[: im.shape[0] // 2 * 2, : im.shape[1] // 2 * 2] for im in images]  # yuv420p needs even sizes
            imageio.mimwrite(str(path), even, fps=fps, codec="libx264", macro_block_size=1)

        return write
    except ImportError:
        pass
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import animation

    if not animation.writers.is_available("ffmpeg"):
        return None

    def write_mpl(path, images, fps):
        import matplotlib.pyplot as plt

        h, w = images[0].shape[:2]
        h2, w2 = h // 2 * 2, w // 2 * 2
        fig = plt.figure(figsize=(w2 / 100, h2 / 100), dpi=100)
        shown = fig.figimage(images[0][:h2, :w2])
        mp4 = animation.FFMpegWriter(fps=fps, codec="libx264", extra_args=["-pix_fmt", "yuv420p"])
        with mp4.saving(fig, str(path), dpi=100):
            for im in images:
                shown.set_data(im[:h2, :w2])
                mp4.grab_frame()
        plt.close(fig)

    return write_mpl
