"""``memorybench show``: a run's saved predictions beside the truth, as a picture or an animation."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..console import console
from ..errors import MemorybenchError
from .common import app


@app.command("show")
def show_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory made with --save-predictions."),
    task: Optional[str] = typer.Option(
        None, "--task", "-t", help="Task of the run (NAME or NAME@TIER; default: its only task)."
    ),
    episode: int = typer.Option(..., "--episode", "-e", help="Episode index."),
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        help="Output file: .png/.pdf (a sheet of selected frames), .gif or .mp4 (an animation; mp4 needs ffmpeg).",
    ),
    protocol: Optional[str] = typer.Option(
        None, "--protocol", "-p", help="Protocol (default: the first one with saved predictions)."
    ),
    frames: Optional[str] = typer.Option(
        None, "--frames", help="Frame range START:STOP (default: every predicted frame; for a sheet a selection)."
    ),
    fps: int = typer.Option(8, "--fps", help="Frames per second of an animation."),
) -> None:
    """A model's saved predictions beside the truth, the memory mask and the frame where the
    content was last seen by the model (t - gap; under rollout the gap counts from the context), as a picture
    or an animation."""
    from ..validation import check_at_least, check_out_file, parse_frame_range

    check_out_file(out, suffixes=(".png", ".pdf", ".gif", ".mp4"))
    check_at_least(fps, 1, "--fps")
    from ..results import RunDir, load_run_json
    from ..taskfile import spec_from_dict

    meta = load_run_json(run_dir)
    entry = _task_entry(meta, task, run_dir)
    if not meta["run"].get("save_predictions"):
        raise MemorybenchError(
            f"{run_dir} was run without --save-predictions: there are no frames to show "
            "(run again with --save-predictions)"
        )
    run = RunDir(run_dir)
    protocol = _saved_protocol(run, meta, entry, protocol, episode)
    preds, start = run.read_predictions(entry["key"], protocol, episode)
    spec = spec_from_dict(entry["spec"], source=f"{run_dir}/run.json")
    sel = parse_frame_range(frames, spec.frames) if frames else None
    if sel is not None and (sel[0] < start or sel[1] > start + len(preds)):
        raise MemorybenchError(f"--frames {frames}: predictions exist for frames {start}:{start + len(preds)}")
    title = f"{meta['model']['name']} · {entry['key']} · {protocol} · episode {episode}"
    path = _draw_predictions(run, spec, entry, protocol, episode, preds, start, sel, out, fps, title)
    console.print(f"[green]✓[/] wrote {path}")


def _task_entry(meta: dict, task: Optional[str], run_dir: Path) -> dict:
    """The entry of ``--task`` (NAME or NAME@TIER; default: the run's only task) in the run's run.json."""
    keys = [t["key"] for t in meta["tasks"]]
    if task is None:
        if len(keys) > 1:
            raise MemorybenchError(f"--task: the run has several tasks; choose one of {', '.join(keys)}")
        task = keys[0]
    matches = [t for t in meta["tasks"] if t["key"] == task or t["key"].split("@")[0] == task]
    if len(matches) != 1:
        from ..errors import UnknownNameError

        raise (
            UnknownNameError(f"task of {run_dir}", task, keys)
            if not matches
            else MemorybenchError(f"--task {task} is ambiguous in this run: {', '.join(t['key'] for t in matches)}")
        )
    return matches[0]


def _saved_protocol(run, meta: dict, entry: dict, protocol: Optional[str], episode: int) -> str:
    """``--protocol`` (default: the first one with saved predictions), checked to hold ``episode``."""
    from ..results import task_protocols

    have = {
        p: sorted(int(f.stem[3:]) for f in run.predictions_dir(entry["key"], p).glob("ep-*.npz"))
        for p in task_protocols(entry, meta)
    }
    if protocol is None:
        protocol = next((p for p, eps in have.items() if eps), next(iter(have)))
    elif protocol not in have:
        from ..validation import check_choices

        check_choices([protocol], list(have), f"protocol of {entry['key']} in this run")
    if episode not in have[protocol]:
        listing = ", ".join(map(str, have[protocol][:20])) + (" ..." if len(have[protocol]) > 20 else "")
        raise MemorybenchError(
            f"--episode {episode}: no saved predictions of {entry['key']} ({protocol}) for it; "
            f"saved: {listing or 'none'}"
        )
    return protocol


def _draw_predictions(
    run, spec, entry: dict, protocol: str, episode: int, preds, start: int, sel, out: Path, fps: int, title: str
) -> Path:
    """The sheet (.png/.pdf) or the animation (.gif/.mp4) of the predictions beside the episode."""
    from .. import preview

    ep = _episode_of(spec, entry, episode)
    scores = {r["frame"]: r for r in run.iter_records(entry["key"], protocol) if r["episode"] == episode}
    if out.suffix.lower() in (".png", ".pdf"):
        pick = None if sel is None else preview.pick_predicted_frames(ep, *sel)
        return preview.predictions_sheet(
            ep, preds, start, out, frames=pick, title=title, scores=scores, protocol=protocol
        )
    return preview.predictions_animation(
        ep,
        preds,
        start,
        spec.context_frames,
        out,
        fps=fps,
        scores=scores,
        frames=None if sel is None else range(*sel),
        title=title,
        protocol=protocol,
    )


def _episode_of(spec, entry: dict, index: int):
    """Episode ``index`` of a run's task: from the cached dataset when it is the one the run used,
    else generated again (deterministic: the same episode)."""
    from .. import storage
    from ..errors import DataError
    from ..generators import get_generator

    try:
        store = storage.open_store(storage.dataset_dir(spec), spec)
        if store.dataset_hash == entry["dataset_sha256"]:
            return store[index]
    except (DataError, OSError):
        pass
    return get_generator(spec.family)(spec).generate(index)
