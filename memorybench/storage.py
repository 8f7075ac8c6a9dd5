"""Generated episodes on disk: Hugging Face ``datasets`` shards plus a manifest.

Layout of a dataset directory (one per task, tier and spec hash)::

    <cache>/tasks/<task>-<tier>-<spec hash[:12]>/
        manifest.json                 spec, spec hash, generator version, split (eval or train), seed,
                                      episode range, and for every episode present: its SHA-256,
                                      its shard and its row in the shard
        shards/<first>-<n>-<id>/      a dataset saved by ``datasets`` (data-*.arrow, ...): one row
                                      per episode, for the episodes generated together

Episodes are generated on demand: ``prepare(spec, episodes=[0, 1])`` generates (and verifies)
only episodes 0 and 1; a later request for more generates only what is missing, into a new shard.
The dataset is *complete* when every episode of the spec is present; its ``dataset_sha256`` is
then the SHA-256 over the episodes' SHA-256s in index order (``selection_hash`` gives the same
quantity for any selection of episodes: a run records it for the episodes it evaluated).
Directories written by earlier versions (one dataset at the top level, always complete) are read
as one shard.

Each row holds ``episode`` (int), ``info`` (JSON text), ``items`` (the memory items: an ``.npz``
archive without pickles, empty for families without items) and one ``binary`` column per array of ``episode.ARRAY_LAYOUT``:
the array's C-order bytes (masks bit-packed with ``numpy.packbits``); shapes and dtypes are fixed by
the spec and written in the manifest. Raw bytes keep the files compact (a fixed-shape ``ArrayND``
feature costs an offset per innermost row) and make reading a memory-mapped slice.

``prepare`` returns a verified store: it reuses the episodes whose bytes hash to the manifest and
regenerates (with a warning) anything missing, truncated or altered. A shard is written to a
temporary directory and renamed into place before the manifest (written atomically) points at
it, so an interrupted generation never leaves a half-written shard in use; leftover temporary
directories are removed by the next ``prepare`` of the same dataset.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import TASK_FORMAT_VERSION, __version__
from ._io import atomic_write_text
from .comparability import ranges_text as _ranges
from .episode import ARRAY_LAYOUT, Episode, MemoryItems
from .errors import DataError, MemorybenchError
from .generators import get_generator
from .spec import TaskSpec
from .taskfile import spec_from_dict

MANIFEST = "manifest.json"
SHARDS = "shards"
#: the shard of a dataset written before shards existed: the dataset directory itself
LEGACY_SHARD = "."
PACKED = ("memory_mask", "novel_mask")


class CacheWarning(UserWarning):
    """A cached dataset was unusable and has been regenerated."""


def cache_root() -> Path:
    """``$MEMORYBENCH_CACHE``, else ``$XDG_CACHE_HOME/memorybench``, else ``~/.cache/memorybench``
    (an empty or relative ``XDG_CACHE_HOME`` is ignored, as the XDG specification says)."""
    env = os.environ.get("MEMORYBENCH_CACHE")
    if env:
        return Path(env).expanduser()
    return user_cache_dir() / "memorybench"


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME`` when set to an absolute path, else ``~/.cache``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"


def dataset_dir(spec: TaskSpec, root: str | Path | None = None) -> Path:
    root = Path(root) if root is not None else cache_root() / "tasks"
    return root / f"{spec.name}-{spec.tier}-{spec.hash()[:12]}"


def _shapes(spec: TaskSpec) -> dict[str, tuple[int, ...]]:
    dims = {
        "T": spec.frames,
        "H": spec.resolution[0],
        "W": spec.resolution[1],
        "3": 3,
        "A": spec.action_space.dims,
        "P": len(spec.pose_fields),
    }
    return {name: tuple(dims[s] for s in shape) for name, (_, shape) in ARRAY_LAYOUT.items()}


def encode(ep: Episode) -> dict:
    row = {"episode": ep.index, "info": ep.info_json(), "items": ep.items.to_bytes() if ep.items is not None else b""}
    for name in ARRAY_LAYOUT:
        a = np.ascontiguousarray(getattr(ep, name))
        row[name] = (np.packbits(a) if name in PACKED else a).tobytes()
    return row


def decode(row: dict, spec: TaskSpec) -> Episode:
    shapes = _shapes(spec)
    arrays = {}
    for name, (dtype, _) in ARRAY_LAYOUT.items():
        buf = row[name]
        shape = shapes[name]
        n = int(np.prod(shape))
        try:
            if name in PACKED:
                a = np.unpackbits(np.frombuffer(buf, np.uint8), count=n).astype(bool).reshape(shape)
            else:
                a = np.frombuffer(buf, dtype=dtype).reshape(shape)
        except ValueError as e:
            raise DataError(
                f"episode {row.get('episode')}: array '{name}' has the wrong size for {shape} ({len(buf)} bytes): {e}"
            ) from None
        arrays[name] = a
    try:
        info = json.loads(row.get("info") or "{}")
    except json.JSONDecodeError as e:
        raise DataError(f"episode {row.get('episode')}: 'info' is not valid JSON: {e}") from None
    items = None
    if row.get("items"):
        try:
            items = MemoryItems.from_bytes(row["items"])
        except (ValueError, OSError, KeyError) as e:
            raise DataError(f"episode {row.get('episode')}: its memory items are unreadable: {e}") from None
    return Episode(task=spec.name, index=int(row["episode"]), info=info, items=items, **arrays)


def _features():
    from datasets import Features, Value

    return Features(
        {
            "episode": Value("int64"),
            "info": Value("string"),
            "items": Value("binary"),
            **{name: Value("binary") for name in ARRAY_LAYOUT},
        }
    )


# ---------------------------------------------------------------------------------------------
# reading


class EpisodeStore:
    """Read-only access to the episodes of a generated dataset: ``store[i]`` is episode ``i``.

    ``indices`` lists the episodes present (all of the spec's once the dataset is complete);
    ``len`` and iteration cover them, in index order. Episodes are decoded one at a time from the
    memory-mapped Arrow files, so iterating over a store never holds more than one in memory.
    """

    def __init__(self, path: Path, spec: TaskSpec, manifest: dict):
        self.path, self.spec, self.manifest = path, spec, manifest
        self._entries = {int(e["index"]): e for e in manifest["episodes"]}
        self._shards: dict[str, object] = {}

    @property
    def indices(self) -> list[int]:
        return sorted(self._entries)

    @property
    def complete(self) -> bool:
        return len(self._entries) == self.spec.episodes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, i: int) -> bool:
        return i in self._entries

    def _dataset(self, shard: str):
        if shard not in self._shards:
            from datasets import load_from_disk

            self._shards[shard] = load_from_disk(str(self.path / shard))
        return self._shards[shard]

    def row(self, i: int) -> dict:
        """The stored row of episode ``i`` (encoded arrays)."""
        if i not in self._entries:
            have = _ranges(self.indices) or "none"
            raise IndexError(f"episode {i} is not in {self.path} (episodes present: {have})")
        e = self._entries[i]
        return self._dataset(e["shard"])[int(e["row"])]

    def __getitem__(self, i: int) -> Episode:
        return decode(self.row(i), self.spec)

    def __iter__(self) -> Iterator[Episode]:
        for i in self.indices:
            yield self[i]

    def episode_sha256(self, i: int) -> str:
        return self._entries[i]["sha256"]

    def selection_hash(self, indices) -> str:
        """SHA-256 over the SHA-256s of episodes ``indices`` in index order: for every episode of
        the spec, the dataset's hash."""
        return _combined_hash([self.episode_sha256(i) for i in sorted(indices)])

    @property
    def dataset_hash(self) -> str:
        """``selection_hash`` of every episode present: the dataset's hash once it is complete."""
        return self.selection_hash(self.indices)


def _read_manifest(path: Path) -> dict:
    try:
        man = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: no {MANIFEST}") from None
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}/{MANIFEST} is unreadable: {e}") from None
    if not isinstance(man, dict) or not isinstance(man.get("episodes"), list):
        raise DataError(f"{path}/{MANIFEST} is unreadable: no list of episodes")
    # a directory written before shards existed is one complete shard: the directory itself
    for row, e in enumerate(man["episodes"]):
        e.setdefault("shard", LEGACY_SHARD)
        e.setdefault("row", row)
    return man


def _inspect(path: Path, spec: TaskSpec, wanted: list[int], deep: bool) -> tuple[dict | None, set[int], list[str]]:
    """``(manifest, sound, problems)`` for the episodes ``wanted`` of the dataset at ``path``.

    ``manifest`` is None when the directory as a whole is unusable for ``spec`` (no or another
    manifest); ``sound`` are the wanted episodes that are present and (``deep``) hash to the
    manifest; ``problems`` says what is wrong with the others (an episode merely not generated yet
    is not a problem).
    """
    from datasets import load_from_disk

    try:
        man = _read_manifest(path)
    except DataError as e:
        return None, set(), [str(e)]
    problems = []
    if man.get("spec_hash") != spec.hash():
        problems.append(f"manifest spec hash {str(man.get('spec_hash'))[:12]} != task spec hash {spec.hash()[:12]}")
    if man.get("generator_version") != spec.generator_version:
        problems.append(f"generator version {man.get('generator_version')} != {spec.generator_version}")
    if problems:
        return None, set(), problems
    entries = {}
    for e in man["episodes"]:
        entries[int(e["index"])] = e
    if len(entries) != len(man["episodes"]) or any(not 0 <= i < spec.episodes for i in entries):
        return (
            None,
            set(),
            [f"manifest lists {len(man['episodes'])} episodes that are not distinct indices in 0..{spec.episodes - 1}"],
        )
    shards: dict[str, object] = {}
    broken: dict[str, str] = {}
    sound: set[int] = set()
    for i in wanted:
        e = entries.get(i)
        if e is None:
            continue
        shard = e["shard"]
        if shard not in shards and shard not in broken:
            try:
                shards[shard] = load_from_disk(str(path / shard))
            except Exception as err:  # noqa: BLE001 - datasets raises many kinds on a damaged directory
                broken[shard] = f"dataset cannot be opened: {type(err).__name__}: {err}"
        if shard in broken:
            problems.append(f"episode {i}: shard {shard}: {broken[shard]}")
            continue
        ds = shards[shard]
        if not 0 <= int(e["row"]) < len(ds):
            problems.append(f"episode {i}: shard {shard} has {len(ds)} rows, the manifest says row {e['row']}")
            continue
        if deep:
            try:
                ep = decode(ds[int(e["row"])], spec)
            except Exception as err:  # noqa: BLE001
                problems.append(f"episode {i} unreadable: {err}")
                continue
            if ep.index != i or ep.sha256() != e["sha256"]:
                problems.append(f"episode {i} does not match its SHA-256 in the manifest")
                continue
        sound.add(i)
    return man, sound, problems


def verify(path: str | Path, spec: TaskSpec, deep: bool = True, episodes: Sequence[int] | None = None) -> list[str]:
    """Problems found with the dataset at ``path`` for ``spec`` (an empty list if it is sound).

    Checks the manifest against the spec and that the episodes ``episodes`` (default: every
    episode of the spec) are present and readable, and (``deep``) re-hashes each of them.
    """
    path = Path(path)
    wanted = list(range(spec.episodes)) if episodes is None else sorted(set(episodes))
    man, sound, problems = _inspect(path, spec, wanted, deep)
    if man is not None:
        present = {int(e["index"]) for e in man["episodes"]}
        absent = [i for i in wanted if i not in present]
        if absent:
            problems.append(
                f"{len(absent)} of the {len(wanted)} episodes asked for are not generated "
                f"({_ranges(absent)}); the dataset holds {len(man['episodes'])} of {spec.episodes}"
            )
    return problems


def open_store(
    path: str | Path, spec: TaskSpec | None = None, deep: bool = False, episodes: Sequence[int] | None = None
) -> EpisodeStore:
    """Open a generated dataset (checked against ``spec`` if given) or raise ``DataError``;
    ``episodes`` (default: all of the spec's) must be present."""
    path = Path(path)
    man = _read_manifest(path)
    if spec is None:
        spec = spec_from_dict(man["spec"], source=str(path / MANIFEST))
    problems = verify(path, spec, deep=deep, episodes=episodes)
    if problems:
        raise DataError(f"{path}: " + "; ".join(problems))
    return EpisodeStore(path, spec, man)


# ---------------------------------------------------------------------------------------------
# writing


def _generate_one(spec: TaskSpec, index: int) -> tuple[dict, str]:
    ep = get_generator(spec.family)(spec).generate(index)
    ep.check(spec.frames, spec.resolution, spec.action_space.dims, len(spec.pose_fields))
    return encode(ep), ep.sha256()


def _rows(spec: TaskSpec, indices: list[int], workers: int, hashes: dict, on_episode: Callable[[], None] | None):
    """Yield the encoded episodes ``indices`` in that order, made by ``workers`` processes (or in-process)."""
    if workers <= 1:
        for i in indices:
            row, h = _generate_one(spec, i)
            hashes[i] = h
            if on_episode:
                on_episode()
            yield row
        return
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        # a bounded window of in-flight episodes keeps memory flat for large tiers
        window = 2 * workers
        futures = {k: pool.submit(_generate_one, spec, indices[k]) for k in range(min(window, len(indices)))}
        for k, i in enumerate(indices):
            row, h = futures.pop(k).result()
            nxt = k + window
            if nxt < len(indices):
                futures[nxt] = pool.submit(_generate_one, spec, indices[nxt])
            hashes[i] = h
            if on_episode:
                on_episode()
            yield row


def _combined_hash(hashes: list[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()


def _new_manifest(spec: TaskSpec, split: str = "eval") -> dict:
    return {
        "memorybench_version": __version__,
        "task_format_version": TASK_FORMAT_VERSION,
        "task": spec.name,
        "tier": spec.tier,
        "spec_hash": spec.hash(),
        "generator": spec.family,
        "generator_version": spec.generator_version,
        "split": split,
        "seed": spec.seed,
        "episode_range": [0, spec.episodes],
        "episodes_total": spec.episodes,
        "episodes": [],
        "complete": False,
        "dataset_sha256": None,
        "layout": {
            k: {"dtype": d, "shape": list(_shapes(spec)[k]), "packbits": k in PACKED}
            for k, (d, _) in ARRAY_LAYOUT.items()
        },
        "generation_seconds": 0.0,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "spec": spec.to_dict(),
    }


def _write_manifest(path: Path, man: dict) -> None:
    atomic_write_text(path / MANIFEST, json.dumps(man, indent=1))


def _add_shard(
    spec: TaskSpec, path: Path, man: dict, indices: list[int], workers: int, on_episode: Callable[[], None] | None
) -> None:
    """Generate episodes ``indices`` into a new shard of the dataset at ``path`` and point the
    manifest (updated in ``man`` and on disk) at them; shards no longer referenced are removed."""
    from datasets import Dataset, disable_progress_bars, enable_progress_bars
    from datasets.exceptions import DatasetGenerationError

    path.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=path))
    hashes: dict[int, str] = {}
    t0 = time.time()
    try:
        disable_progress_bars()
        try:
            # a closure rather than gen_kwargs: datasets copies gen_kwargs, and ``hashes`` must be ours
            ds = Dataset.from_generator(
                lambda: _rows(spec, indices, workers, hashes, on_episode),
                features=_features(),
                cache_dir=str(tmp / "build"),
                fingerprint=f"{spec.hash()}-{time.time_ns()}",
                writer_batch_size=4,
            )
            ds.save_to_disk(str(tmp / "data"))
        except DatasetGenerationError as e:  # unwrap what our generator raised inside datasets
            cause = e.__cause__ or e
            if isinstance(cause, MemorybenchError):
                raise cause from None
            raise DataError(f"generating {spec.key} failed: {type(cause).__name__}: {cause}") from cause
        finally:
            enable_progress_bars()
        del ds
        name = f"{SHARDS}/{indices[0]:06d}-{len(indices)}-{uuid.uuid4().hex[:8]}"
        (path / SHARDS).mkdir(exist_ok=True)
        (tmp / "data").rename(path / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    entries = {int(e["index"]): e for e in man["episodes"]}
    for row, i in enumerate(indices):
        entries[i] = {"index": i, "sha256": hashes[i], "shard": name, "row": row}
    man["episodes"] = [entries[i] for i in sorted(entries)]
    man["complete"] = len(entries) == spec.episodes
    man["dataset_sha256"] = _combined_hash([e["sha256"] for e in man["episodes"]]) if man["complete"] else None
    man["generation_seconds"] = round(float(man.get("generation_seconds") or 0) + time.time() - t0, 3)
    man["memorybench_version"] = __version__
    _write_manifest(path, man)
    _remove_unused_shards(path, man)


def _remove_unused_shards(path: Path, man: dict) -> None:
    used = {e["shard"] for e in man["episodes"]}
    if (path / SHARDS).is_dir():
        for d in (path / SHARDS).iterdir():
            if f"{SHARDS}/{d.name}" not in used:
                shutil.rmtree(d, ignore_errors=True)
    if LEGACY_SHARD not in used:  # the files of a dataset written before shards existed
        for f in list(path.glob("data-*.arrow")) + [path / "dataset_info.json", path / "state.json"]:
            if f.is_file():
                f.unlink()


def _remove_stale_temporaries(path: Path) -> None:
    """Temporary directories left by a killed generation (call with the dataset's lock held)."""
    if path.is_dir():
        for d in path.glob(".tmp-*"):
            shutil.rmtree(d, ignore_errors=True)
    if path.parent.is_dir():
        for d in list(path.parent.glob(f".{path.name}.tmp-*")) + list(path.parent.glob(f"{path.name}.old-*")):
            shutil.rmtree(d, ignore_errors=True)


def write(
    spec: TaskSpec,
    path: str | Path,
    workers: int = 1,
    on_episode: Callable[[], None] | None = None,
    episodes: Sequence[int] | None = None,
    split: str = "eval",
) -> Path:
    """Generate episodes ``episodes`` (default: every episode) of ``spec`` into a new dataset at
    ``path``, replacing whatever was there atomically. ``split`` (``eval``, or ``train`` for a
    training split: ``memorybench.splits``) is written into the manifest with the seed and the
    episode range."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    indices = list(range(spec.episodes)) if episodes is None else sorted(set(episodes))
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        man = _new_manifest(spec, split)
        _write_manifest(tmp, man)
        if indices:
            _add_shard(spec, tmp, man, indices, workers, on_episode)
        old = None
        if path.exists():
            old = path.with_name(path.name + f".old-{os.getpid()}")
            path.rename(old)
        tmp.rename(path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


@dataclass
class PrepareResult:
    store: EpisodeStore
    reused: bool
    problems: list[str]
    #: episodes generated by this call
    generated: list[int] = field(default_factory=list)


def _selection(spec: TaskSpec, episodes) -> list[int]:
    if episodes is None:
        return list(range(spec.episodes))
    wanted = sorted({int(i) for i in episodes})
    bad = [i for i in wanted if not 0 <= i < spec.episodes]
    if bad:
        raise MemorybenchError(f"{spec.key} has episodes 0..{spec.episodes - 1}; asked for {_ranges(bad)}")
    return wanted


def prepare(
    spec: TaskSpec,
    out: str | Path | None = None,
    workers: int = 1,
    force: bool = False,
    on_episode: Callable[[], None] | None = None,
    deep_verify: bool = True,
    episodes: Sequence[int] | None = None,
    on_generate: Callable[[int], None] | None = None,
    split: str = "eval",
) -> PrepareResult:
    """A verified dataset holding episodes ``episodes`` of ``spec`` (default: all of them).

    Sound cached episodes are reused; missing ones are generated, and damaged ones regenerated
    with a ``CacheWarning``. ``on_generate(n)`` is called before ``n`` episodes are generated,
    ``on_episode()`` after each.
    """
    path = Path(out) if out is not None else dataset_dir(spec)
    if out is not None:
        _check_replaceable(path)
    wanted = _selection(spec, episodes)
    problems: list[str] = []
    with FileLock(path.with_name(path.name + ".lock")):
        _remove_stale_temporaries(path)
        man, sound = None, set()
        if path.exists() and not force:
            man, sound, problems = _inspect(path, spec, wanted, deep_verify)
        missing = [i for i in wanted if i not in sound]
        if problems:
            what = "" if man is None else f"; regenerating {len(missing)} episode(s)"
            warnings.warn(
                f"cached dataset {path} is unusable ({'; '.join(problems[:3])}){what}", CacheWarning, stacklevel=2
            )
        if missing:
            if on_generate:
                on_generate(len(missing))
            if man is None:  # nothing reusable: a new dataset, swapped in atomically
                write(spec, path, workers=workers, on_episode=on_episode, episodes=missing, split=split)
                man = _read_manifest(path)
            else:
                _add_shard(spec, path, man, missing, workers, on_episode)
        elif man is None:
            write(spec, path, episodes=[], split=split)
            man = _read_manifest(path)
        return PrepareResult(EpisodeStore(path, spec, man), not missing, problems, missing)


class LockedError(MemorybenchError):
    """Another process holds the lock (only raised for a non-blocking lock)."""


def _check_replaceable(path: Path) -> None:
    """A user-chosen dataset directory may be replaced only if it is empty or a dataset (it has a
    manifest): a file or another directory given by mistake is never deleted."""
    if path.exists() and not path.is_dir():
        raise MemorybenchError(f"{path} is a file, not a dataset directory; choose another --out")
    if path.is_dir() and not (path / MANIFEST).exists() and any(path.iterdir()):
        raise MemorybenchError(
            f"{path} exists and is not a memorybench dataset (no {MANIFEST}); refusing to replace "
            "it: choose another --out, or delete it yourself"
        )


class FileLock:
    """An exclusive advisory lock on ``path`` (``fcntl.flock``), so that processes sharing a cache
    (torchrun ranks, array jobs on a shared file system) do not generate the same dataset twice.
    Where ``fcntl`` does not exist it is a no-op.

    ``blocking=False``: raise ``LockedError`` (with ``holder``: what the holder wrote into the
    lock file, e.g. its host and pid) instead of waiting.
    """

    def __init__(self, path: str | Path, blocking: bool = True, note: str = ""):
        self.path = Path(path)
        self.blocking, self.note = blocking, note
        self._fh = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a+")
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            self._fh.seek(0)
            holder = self._fh.read().strip()
            self._fh.close()
            self._fh = None
            err = LockedError(f"{self.path} is locked by another process ({holder or 'unknown'})")
            err.holder = holder
            raise err from None
        if self.note:
            self._fh.seek(0)
            self._fh.truncate()
            self._fh.write(self.note)
            self._fh.flush()
        return self

    def __exit__(self, *exc):
        if self._fh is not None:
            import fcntl

            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
