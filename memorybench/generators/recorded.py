"""recorded: bring your own episodes (e.g. the Memory Maze offline datasets) and score models on them.

This family does not render anything: episode ``i`` of a task is the ``i``-th recorded episode of
a source the user already has, cropped to the task's ``frames`` (starting at ``start_frame``).
Two kinds of source (``params.path``, ``params.format``):

* ``npz``: a directory of ``.npz`` files, one episode per file, in the layout of the Memory Maze
  offline datasets (Pasukonis et al. 2022): every array has a leading time axis ``T`` (1001 in the
  published datasets: ``image[0]`` is the observation before the first action)::

      image        [T, H, W, 3] uint8    first-person view
      action       [T, A] one-hot (float/int/bool; a row of zeros is action 0), or [T] integers:
                   ``action[t]`` is the action that led to ``image[t]`` (memorybench's convention);
                   with ``params.action_nvec`` (multi-component actions, as ``memorybench tasks
                   generate --format npz`` writes them): integers [T, len(action_nvec)],
                   component ``i`` in ``0 .. action_nvec[i] - 1``
      agent_pos    [T, 2] float          position (x, y) in maze cells        (optional)
      agent_dir    [T, 2] float          heading as a unit vector (dx, dy),    (optional)
                   or [T] float: heading angle in radians
      (reward, maze_layout, targets_pos, ... may be present and are ignored)

  Episode ``i`` is the ``i``-th file in sorted file-name order. Sub-directories are not searched.
* ``hf``: a Hugging Face ``datasets`` dataset saved with ``save_to_disk`` (a ``DatasetDict`` needs
  ``params.split``), one row per episode with the same columns (nested lists or arrays); episode
  ``i`` is row ``i``.

The array names are parameters (``image_key``, ``action_key``, ``position_key``,
``direction_key``), so other layouts work too.

Memory metadata. With poses (``position_key`` set, the default ``agent_pos``), it is derived from
them exactly as for the Memory Maze family (``memorybench.generators.poses``): a frame is a
memory frame when the agent was within ``near_distance`` and ``near_angle`` degrees of the same
pose in the context but not in the last ``recent_window`` frames; with ``direction_key: ""`` only
positions are compared. Without poses (``position_key: ""``) nothing says which frames show
something seen before: every frame is marked novel, so the memory scores of such a task are
empty and only whole-frame metrics (over all predicted frames) are meaningful; the
perfect-memory reference then copies the last observed frame. With poses, the episodes also carry
the memory items of ``recall`` (the identification tests), exactly as for the Memory Maze family:
per memory frame, the true frame among other views of the same episode (``foils``; see
``memorybench.generators.poses``); without poses there are none. This is explicit in the task file
(``position_key: ""``), never a silent fallback: a file that lacks the configured pose arrays is
an error.

Every problem with a source file is a ``DataError`` naming the file (or dataset row) and the array:
a missing key, a wrong dtype or shape, too few frames, a file that is not a readable ``.npz``.

Cache invalidation. A generated dataset is cached under the spec's hash, so the spec covers the
source files: ``source_fingerprint`` is filled in when the task file is loaded (leave it out)
with a SHA-256 over the sorted relative names, sizes and modification times of the source files
(``fingerprint_mode: content`` hashes their bytes instead: slower, but survives copying). Changing,
adding, removing or touching a source file changes the spec hash, so the cached dataset is not
reused (``verify`` reports the spec-hash mismatch and ``prepare`` regenerates). A fingerprint
written into the task file pins the source: generation fails if the files no longer match it.
Relative ``path``s are resolved against the current directory when the task file is loaded
(``~`` and ``$VARIABLES`` are expanded).
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..episode import Episode
from ..errors import DataError
from ..spec import ActionSpace, param
from .base import Generator
from .poses import (
    FOILS,
    NEAR_ANGLE,
    NEAR_DISTANCE,
    check_rollout_only,
    pose_item_candidates,
    pose_memory_items,
    pose_memory_metadata,
    unscored_metadata,
)

MEMORY_MAZE_ACTIONS = ("noop", "forward", "turn_left", "turn_right", "forward_left", "forward_right")


def _detect_format(path: Path) -> str:
    if (path / "state.json").exists() or (path / "dataset_dict.json").exists():
        return "hf"
    return "npz"


def source_files(path: Path, fmt: str) -> list[Path]:
    """The files that define the episodes: the ``.npz`` files, or every file of a saved dataset."""
    if fmt == "npz":
        return sorted(p for p in path.iterdir() if p.suffix == ".npz" and p.is_file())
    return sorted(p for p in path.rglob("*") if p.is_file())


def fingerprint(path: Path, fmt: str, mode: str = "stat") -> str:
    """SHA-256 over the source files' relative names and sizes and mtimes (``stat``) or bytes (``content``)."""
    h = hashlib.sha256(f"{fmt}\n".encode())
    for f in source_files(path, fmt):
        rel = f.relative_to(path).as_posix()
        if mode == "content":
            fh = hashlib.sha256()
            with open(f, "rb") as fp:
                for block in iter(lambda: fp.read(1 << 20), b""):
                    fh.update(block)
            h.update(f"{rel}\0{fh.hexdigest()}\n".encode())
        else:
            st = f.stat()
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class RecordedParams:
    path: str = param("", doc="directory of .npz episodes, or a Hugging Face dataset saved with save_to_disk")
    format: str = param(
        "auto", choices=("auto", "npz", "hf"), doc="source kind (auto: hf if the directory has state.json)"
    )
    split: str = param("", doc="hf: the split of a saved DatasetDict")
    start_frame: int = param(0, min=0, max=10_000_000, doc="first recorded frame of each episode to use")
    image_key: str = param("image", doc="array of frames [T, H, W, 3] uint8")
    action_key: str = param("action", doc="actions: one-hot [T, A] or integers [T]")
    position_key: str = param("agent_pos", doc="positions [T, 2]; '' if the episodes have no poses (memory unscored)")
    direction_key: str = param("agent_dir", doc="headings: unit vectors [T, 2] or radians [T]; '' for positions only")
    action_labels: tuple[str, ...] = param(
        list(MEMORY_MAZE_ACTIONS), doc="names of the discrete actions (their count is A)"
    )
    action_nvec: tuple[int, ...] = param(
        [],
        min=1,
        max=1_000_000,
        doc="multi-component integer actions [T, A]: values per component (replaces action_labels)",
    )
    near_distance: float = param(NEAR_DISTANCE, min=0.0, max=1e9, doc="same view within this distance ...")
    near_angle: float = param(NEAR_ANGLE, min=0.0, max=180.0, doc="... and this heading difference (degrees)")
    foils: int = param(
        FOILS,
        min=1,
        max=256,
        doc="memory items (with poses): other views of the episode offered "
        "beside the true frame (see memorybench.generators.poses)",
    )
    fingerprint_mode: str = param("stat", choices=("stat", "content"), doc="what the source fingerprint covers")
    source_fingerprint: str = param("", doc="filled in on load from the source files (set it to pin them)")

    def __post_init__(self):
        if not self.path:
            raise ValueError("path is required: a directory of .npz episodes or a saved Hugging Face dataset")
        p = Path(os.path.expandvars(os.path.expanduser(self.path)))
        resolved = p if p.is_absolute() else (Path.cwd() / p)
        if self.source_fingerprint:  # pinned, or read back from a manifest: the files may be elsewhere
            object.__setattr__(self, "path", str(resolved))
            if self.format == "auto" and resolved.is_dir():
                object.__setattr__(self, "format", _detect_format(resolved))
            return
        if not resolved.is_dir():
            raise ValueError(f"path {str(resolved)!r} is not a directory")
        fmt = _detect_format(resolved) if self.format == "auto" else self.format
        object.__setattr__(self, "path", str(resolved))
        object.__setattr__(self, "format", fmt)
        object.__setattr__(self, "source_fingerprint", fingerprint(resolved, fmt, self.fingerprint_mode))


class Recorded(Generator):
    family = "recorded"
    version = 1
    Params = RecordedParams
    has_content_ids = False
    default_protocols = ("rollout",)  # per-frame pose masks: see memorybench.generators.poses

    def __init__(self, spec):
        super().__init__(spec)
        self._checked = False
        self._ds = None

    @classmethod
    def action_space(cls, params) -> ActionSpace:
        if params.action_nvec:
            nvec = tuple(params.action_nvec)
            return ActionSpace(
                nvec=nvec,
                names=tuple(f"action_{i}" for i in range(len(nvec))),
                labels=tuple(tuple(str(v) for v in range(n)) for n in nvec),
            )
        return ActionSpace(nvec=(len(params.action_labels),), names=("action",), labels=(tuple(params.action_labels),))

    @classmethod
    def pose_fields(cls, params) -> tuple[str, ...]:
        if not params.position_key:
            return ()
        return ("x", "y") + (("dir_x", "dir_y") if params.direction_key else ())

    @classmethod
    def check(cls, spec) -> None:
        p: RecordedParams = spec.params
        if p.position_key:
            check_rollout_only(spec)
        path = Path(p.path)
        if p.format == "npz" and path.is_dir():
            n = len(source_files(path, "npz"))
            if n < spec.episodes:
                raise ValueError(f"{path} holds {n} .npz episode files, the tier asks for {spec.episodes} episodes")

    @classmethod
    def describe_gaps(cls, spec) -> str:
        if not spec.params.position_key:
            return "no poses: memory unscored"
        return f"pose revisits, bins {spec.gap_bins[0]}..{spec.gap_bins[-1]}"

    # ------------------------------------------------------------------------------------------
    def _check_source(self) -> None:
        """Once per process: the source files still match the spec's fingerprint."""
        if self._checked:
            return
        p = self.params
        path = Path(p.path)
        if not path.is_dir():
            raise DataError(f"recorded episodes: {path} is not a directory")
        fmt = p.format if p.format != "auto" else _detect_format(path)
        now = fingerprint(path, fmt, p.fingerprint_mode)
        if now != p.source_fingerprint:
            raise DataError(
                f"recorded episodes: the files in {path} changed since the task was loaded "
                f"(fingerprint {p.source_fingerprint[:12]} -> {now[:12]}); reload the task "
                f"(or update the pinned source_fingerprint)"
            )
        self._checked = True

    def _keys(self) -> list[str]:
        p = self.params
        poses = [p.position_key] + ([p.direction_key] if p.direction_key else []) if p.position_key else []
        return [p.image_key, p.action_key] + poses

    def _arrays_npz(self, index: int) -> tuple[str, str, dict]:
        p = self.params
        files = source_files(Path(p.path), "npz")
        if index >= len(files):
            raise DataError(f"recorded episodes: episode {index} asked for, but {p.path} holds {len(files)} .npz files")
        f = files[index]
        keys = self._keys()
        out = {}
        if not zipfile.is_zipfile(f):
            raise DataError(f"{f}: not a readable .npz file (not a zip archive: truncated, or not an .npz at all)")
        try:
            with np.load(f, allow_pickle=False) as z:
                for k in keys:
                    if k not in z.files:
                        hint = (
                            " (set params.position_key: '' for episodes without poses)"
                            if k == p.position_key
                            else " (set params.direction_key: '' to compare positions only)"
                            if k == p.direction_key
                            else ""
                        )
                        raise DataError(f"{f}: no array '{k}' (it has: {', '.join(sorted(z.files)) or 'none'}){hint}")
                    try:
                        out[k] = z[k]
                    except DataError:
                        raise
                    except Exception as e:  # noqa: BLE001 - a truncated member raises many kinds
                        raise DataError(f"{f}: array '{k}' is truncated or corrupt ({type(e).__name__}: {e})") from None
        except DataError:
            raise
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise DataError(f"{f}: not a readable .npz file ({type(e).__name__}: {e})") from None
        return str(f), f.name, out

    def _arrays_hf(self, index: int) -> tuple[str, str, dict]:
        p = self.params
        if self._ds is None:
            from datasets import DatasetDict, load_from_disk

            try:
                ds = load_from_disk(p.path)
            except Exception as e:  # noqa: BLE001
                raise DataError(f"{p.path}: not a readable Hugging Face dataset ({type(e).__name__}: {e})") from None
            if isinstance(ds, DatasetDict):
                if not p.split:
                    raise DataError(f"{p.path} is a DatasetDict with splits {sorted(ds)}: set params.split")
                if p.split not in ds:
                    raise DataError(f"{p.path}: no split '{p.split}' (it has: {', '.join(sorted(ds))})")
                ds = ds[p.split]
            self._ds = ds
        ds = self._ds
        where = f"{p.path} row {index}"
        if index >= len(ds):
            raise DataError(f"recorded episodes: episode {index} asked for, but {p.path} has {len(ds)} rows")
        keys = self._keys()
        for k in keys:
            if k not in ds.column_names:
                raise DataError(f"{where}: no column '{k}' (it has: {', '.join(ds.column_names)})")
        try:
            row = ds.select_columns(keys).with_format("numpy")[index]
        except Exception as e:  # noqa: BLE001
            raise DataError(f"{where}: cannot be read ({type(e).__name__}: {e})") from None
        out = {}
        for k in keys:
            v = row[k]
            if isinstance(v, np.ndarray) and v.dtype == object:
                try:
                    v = np.stack([np.asarray(x) for x in v])
                except ValueError as e:
                    raise DataError(f"{where}: column '{k}' is ragged ({e})") from None
            out[k] = np.asarray(v)
        return where, f"row {index}", out

    def _frames_of(self, where: str, key: str, a: np.ndarray, need: int) -> np.ndarray:
        if a.ndim == 0 or a.shape[0] < need:
            n = 0 if a.ndim == 0 else a.shape[0]
            raise DataError(f"{where}: array '{key}' has {n} frames, the task needs start_frame + frames = {need}")
        return a

    def generate(self, index: int) -> Episode:
        spec, p = self.spec, self.params
        self._check_source()
        fmt = p.format if p.format != "auto" else _detect_format(Path(p.path))
        where, name, arr = self._arrays_npz(index) if fmt == "npz" else self._arrays_hf(index)
        T, H, W = spec.frames, spec.resolution[0], spec.resolution[1]
        s0, need = p.start_frame, p.start_frame + spec.frames
        sl = slice(s0, need)

        img = self._frames_of(where, p.image_key, arr[p.image_key], need)
        if (
            img.dtype != np.uint8
            and np.issubdtype(img.dtype, np.integer)
            and img.ndim == 4
            and img.size
            and 0 <= img.min()
            and img.max() <= 255
        ):
            img = img.astype(np.uint8)  # e.g. a Hugging Face dataset built from lists: int64 in 0..255
        if img.dtype != np.uint8 or img.ndim != 4 or img.shape[1:] != (H, W, 3):
            raise DataError(
                f"{where}: array '{p.image_key}' has dtype {img.dtype} and shape {img.shape}, "
                f"expected uint8 [T, {H}, {W}, 3] (the task's resolution is {H}x{W})"
            )
        frames = np.ascontiguousarray(img[sl])

        act = self._frames_of(where, p.action_key, arr[p.action_key], need)
        A = len(p.action_labels)
        if p.action_nvec:
            nvec = np.array(p.action_nvec)
            if act.ndim == 1 and len(nvec) == 1:
                act = act[:, None]
            if act.ndim != 2 or act.shape[1] != len(nvec) or not np.issubdtype(act.dtype, np.integer):
                raise DataError(
                    f"{where}: array '{p.action_key}' has dtype {act.dtype} and shape {act.shape}, "
                    f"expected integers [T, {len(nvec)}] (params.action_nvec: {list(p.action_nvec)})"
                )
            actions = act[sl].astype(np.int64)
            bad = (actions < 0) | (actions >= nvec)
            if bad.any():
                t, i = (int(x) for x in np.argwhere(bad)[0])
                raise DataError(
                    f"{where}: array '{p.action_key}' has value {int(actions[t, i])} in component {i} "
                    f"at frame {s0 + t}, outside 0..{int(nvec[i]) - 1}"
                )
        elif act.ndim == 2:
            if act.shape[1] != A or not (np.issubdtype(act.dtype, np.number) or act.dtype == bool):
                raise DataError(
                    f"{where}: array '{p.action_key}' has dtype {act.dtype} and shape {act.shape}, "
                    f"expected one-hot [T, {A}] (or integers [T])"
                )
            a = act[sl]
            actions = np.where(np.any(a != 0, axis=1), np.argmax(a, axis=1), 0).astype(np.int64)[:, None]
        elif act.ndim == 1 and np.issubdtype(act.dtype, np.integer):
            actions = act[sl].astype(np.int64)[:, None]
            bad = (actions < 0) | (actions >= A)
            if bad.any():
                raise DataError(
                    f"{where}: array '{p.action_key}' has value {int(actions[bad][0])} outside 0..{A - 1} "
                    f"({A} action labels)"
                )
        else:
            raise DataError(
                f"{where}: array '{p.action_key}' has dtype {act.dtype} and shape {act.shape}, "
                f"expected one-hot [T, {A}] or integers [T]"
            )

        cols = []
        if p.position_key:
            pos = self._frames_of(where, p.position_key, arr[p.position_key], need)
            if pos.ndim != 2 or pos.shape[1] != 2 or not np.issubdtype(pos.dtype, np.number):
                raise DataError(
                    f"{where}: array '{p.position_key}' has dtype {pos.dtype} and shape {pos.shape}, "
                    f"expected numbers [T, 2]"
                )
            cols.append(pos[sl].astype(np.float64))
            if p.direction_key:
                d = self._frames_of(where, p.direction_key, arr[p.direction_key], need)
                if not np.issubdtype(d.dtype, np.number) or not (d.ndim == 1 or (d.ndim == 2 and d.shape[1] == 2)):
                    raise DataError(
                        f"{where}: array '{p.direction_key}' has dtype {d.dtype} and shape {d.shape}, "
                        f"expected unit vectors [T, 2] or angles in radians [T]"
                    )
                d = d[sl].astype(np.float64)
                if d.ndim == 1:
                    d = np.stack([np.cos(d), np.sin(d)], 1)
                cols.append(d)
        poses = np.concatenate(cols, 1) if cols else np.zeros((T, 0))
        if not np.isfinite(poses).all():
            raise DataError(f"{where}: the pose arrays contain NaN or infinite values")

        items = None
        if p.position_key:
            headings = np.arctan2(poses[:, 3], poses[:, 2]) if p.direction_key else np.zeros(T)
            angle = p.near_angle if p.direction_key else 180.0
            meta = pose_memory_metadata(
                poses[:, :2], headings, (H, W), spec.recent_window, spec.context_frames, p.near_distance, angle
            )
            items = pose_memory_items(
                frames,
                poses[:, :2],
                headings,
                meta,
                spec.context_frames,
                spec.recent_window,
                p.near_distance,
                angle,
                p.foils,
            )
        else:
            meta = unscored_metadata(T, (H, W))
        info = {"source": name, "start_frame": s0, "poses": bool(p.position_key)}
        return Episode(
            task=spec.name,
            index=index,
            frames=frames,
            actions=actions,
            poses=poses.astype(np.float32),
            memory_gap=meta.memory_gap,
            memory_gap_rollout=meta.memory_gap_rollout,
            memory_mask=meta.memory_mask,
            novel_mask=meta.novel_mask,
            items=items,
            info=info,
        )

    # -- memory items (memorybench.recall): frames of the episode, see memorybench.generators.poses
    @classmethod
    def num_candidates(cls, spec) -> int | None:
        return 1 + spec.params.foils if spec.params.position_key else None

    def item_candidates(self, episode: Episode, i: int) -> np.ndarray:
        """uint8 ``[1 + foils, H * W, 3]``: item ``i``'s candidate frames (the true frame first)."""
        return pose_item_candidates(episode, i)
