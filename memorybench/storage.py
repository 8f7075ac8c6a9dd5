"""Generated episodes on disk: a Hugging Face ``datasets`` dataset plus a manifest.

Layout of a dataset directory (one per task, tier and spec hash)::

    <cache>/<task>-<tier>-<spec hash[:12]>/
        manifest.json                 spec, spec hash, generator version, one SHA-256 per episode
        data-00000-of-0000N.arrow     one row per episode (written by ``datasets``)
        dataset_info.json, state.json

Each row holds ``episode`` (int), ``info`` (JSON text) and one ``binary`` column per array of ``episode.ARRAY_LAYOUT``:
the array's C-order bytes (masks bit-packed with ``numpy.packbits``); shapes and dtypes are fixed by
the spec and written in the manifest. Raw bytes keep the files compact (a fixed-shape ``ArrayND``
feature costs an offset per innermost row) and make reading a memory-mapped slice.

``prepare(spec)`` returns a verified store: it reuses a cache whose manifest matches the spec and
whose every episode hashes to the manifest, and regenerates (with a warning) anything missing,
truncated or altered. Writing goes to a temporary sibling directory that is renamed into place, so
an interrupted generation never leaves a half-written dataset under the final name.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from . import TASK_FORMAT_VERSION, __version__
from .episode import ARRAY_LAYOUT, Episode
from .errors import DataError, MemorybenchError
from .spec import TaskSpec

MANIFEST = "manifest.json"
PACKED = ("memory_mask", "novel_mask")


class CacheWarning(UserWarning):
    """A cached dataset was unusable and has been regenerated."""


def cache_root() -> Path:
    """``$MEMORYBENCH_CACHE`` or ``~/.cache/memorybench``."""
    return Path(os.environ.get("MEMORYBENCH_CACHE", Path.home() / ".cache" / "memorybench"))


def dataset_dir(spec: TaskSpec, root: str | Path | None = None) -> Path:
    root = Path(root) if root is not None else cache_root() / "tasks"
    return root / f"{spec.name}-{spec.tier}-{spec.hash()[:12]}"


def _shapes(spec: TaskSpec) -> dict[str, tuple[int, ...]]:
    dims = {"T": spec.frames, "H": spec.resolution[0], "W": spec.resolution[1], "3": 3,
            "A": spec.action_space.dims, "P": len(spec.pose_fields)}
    return {name: tuple(dims[s] for s in shape) for name, (_, shape) in ARRAY_LAYOUT.items()}


def encode(ep: Episode) -> dict:
    row = {"episode": ep.index, "info": ep.info_json()}
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
            raise DataError(f"episode {row.get('episode')}: array '{name}' has the wrong size for "
                            f"{shape} ({len(buf)} bytes): {e}") from None
        arrays[name] = a
    try:
        info = json.loads(row.get("info") or "{}")
    except json.JSONDecodeError as e:
        raise DataError(f"episode {row.get('episode')}: 'info' is not valid JSON: {e}") from None
    return Episode(task=spec.name, index=int(row["episode"]), info=info, **arrays)


def _features():
    from datasets import Features, Value

    return Features({"episode": Value("int64"), "info": Value("string"),
                     **{name: Value("binary") for name in ARRAY_LAYOUT}})


# ---------------------------------------------------------------------------------------------
# reading


class EpisodeStore:
    """Read-only access to a generated dataset: ``len(store)``, ``store[i]``, iteration.

    Episodes are decoded one at a time from the memory-mapped Arrow file, so iterating over a
    store never holds more than one episode in memory.
    """

    def __init__(self, path: Path, spec: TaskSpec, manifest: dict, dataset):
        self.path, self.spec, self.manifest, self._ds = path, spec, manifest, dataset

    def __len__(self) -> int:
        return len(self._ds)

    def __getitem__(self, i: int) -> Episode:
        if not 0 <= i < len(self):
            raise IndexError(f"episode {i} out of range 0..{len(self) - 1}")
        return decode(self._ds[i], self.spec)

    def __iter__(self) -> Iterator[Episode]:
        for i in range(len(self)):
            yield self[i]

    @property
    def dataset_hash(self) -> str:
        return self.manifest["dataset_sha256"]


def _read_manifest(path: Path) -> dict:
    try:
        return json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: no {MANIFEST}") from None
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}/{MANIFEST} is unreadable: {e}") from None


def verify(path: str | Path, spec: TaskSpec, deep: bool = True) -> list[str]:
    """Problems found with the dataset at ``path`` for ``spec`` (an empty list if it is sound).

    Checks the manifest against the spec, the episode count, and (``deep``) re-hashes every episode.
    """
    from datasets import load_from_disk

    path = Path(path)
    try:
        man = _read_manifest(path)
    except DataError as e:
        return [str(e)]
    problems = []
    if man.get("spec_hash") != spec.hash():
        problems.append(f"manifest spec hash {str(man.get('spec_hash'))[:12]} != task spec hash {spec.hash()[:12]}")
    if man.get("generator_version") != spec.generator_version:
        problems.append(f"generator version {man.get('generator_version')} != {spec.generator_version}")
    if problems:
        return problems
    try:
        ds = load_from_disk(str(path))
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds on a damaged directory
        return [f"dataset cannot be opened: {type(e).__name__}: {e}"]
    expected = man.get("episodes", [])
    if len(ds) != len(expected) or len(ds) != spec.episodes:
        return [f"{len(ds)} episodes on disk, manifest lists {len(expected)}, spec wants {spec.episodes}"]
    if deep:
        for i in range(len(ds)):
            try:
                ep = decode(ds[i], spec)
            except Exception as e:  # noqa: BLE001
                problems.append(f"episode {i} unreadable: {e}")
                continue
            if ep.index != expected[i]["index"] or ep.sha256() != expected[i]["sha256"]:
                problems.append(f"episode {i} does not match its SHA-256 in the manifest")
    return problems


def open_store(path: str | Path, spec: TaskSpec | None = None, deep: bool = False) -> EpisodeStore:
    """Open a generated dataset (checked against ``spec`` if given) or raise ``DataError``."""
    from datasets import load_from_disk

    from .spec import spec_from_dict

    path = Path(path)
    man = _read_manifest(path)
    if spec is None:
        spec = spec_from_dict(man["spec"], source=str(path / MANIFEST))
    problems = verify(path, spec, deep=deep)
    if problems:
        raise DataError(f"{path}: " + "; ".join(problems))
    return EpisodeStore(path, spec, man, load_from_disk(str(path)))


# ---------------------------------------------------------------------------------------------
# writing


def _generate_one(spec: TaskSpec, index: int) -> tuple[dict, str]:
    from .generators import get_generator

    ep = get_generator(spec.family)(spec).generate(index)
    ep.check(spec.frames, spec.resolution, spec.action_space.dims, len(spec.pose_fields))
    return encode(ep), ep.sha256()


def _rows(spec: TaskSpec, workers: int, hashes: dict, on_episode: Callable[[], None] | None):
    """Yield encoded episodes in index order, made by ``workers`` processes (or in-process)."""
    if workers <= 1:
        for i in range(spec.episodes):
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
        futures = {i: pool.submit(_generate_one, spec, i) for i in range(min(window, spec.episodes))}
        for i in range(spec.episodes):
            row, h = futures.pop(i).result()
            nxt = i + window
            if nxt < spec.episodes:
                futures[nxt] = pool.submit(_generate_one, spec, nxt)
            hashes[i] = h
            if on_episode:
                on_episode()
            yield row


def _combined_hash(hashes: list[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()


def write(spec: TaskSpec, path: str | Path, workers: int = 1, on_episode: Callable[[], None] | None = None) -> Path:
    """Generate every episode of ``spec`` into a new dataset at ``path`` (replacing it atomically)."""
    from datasets import Dataset, disable_progress_bars, enable_progress_bars

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    hashes: dict[int, str] = {}
    t0 = time.time()
    try:
        from datasets.exceptions import DatasetGenerationError

        disable_progress_bars()
        try:
            # a closure rather than gen_kwargs: datasets copies gen_kwargs, and ``hashes`` must be ours
            ds = Dataset.from_generator(
                lambda: _rows(spec, workers, hashes, on_episode), features=_features(),
                cache_dir=str(tmp / "build"), fingerprint=f"{spec.hash()}-{time.time_ns()}",
                writer_batch_size=4)
            ds.save_to_disk(str(tmp / "data"))
        except DatasetGenerationError as e:  # unwrap what our generator raised inside datasets
            cause = e.__cause__ or e
            if isinstance(cause, MemorybenchError):
                raise cause from None
            raise DataError(f"generating {spec.key} failed: {type(cause).__name__}: {cause}") from cause
        finally:
            enable_progress_bars()
        del ds
        ordered = [hashes[i] for i in range(spec.episodes)]
        manifest = {
            "memorybench_version": __version__,
            "task_format_version": TASK_FORMAT_VERSION,
            "task": spec.name,
            "tier": spec.tier,
            "spec_hash": spec.hash(),
            "generator": spec.family,
            "generator_version": spec.generator_version,
            "episodes": [{"index": i, "sha256": h} for i, h in enumerate(ordered)],
            "dataset_sha256": _combined_hash(ordered),
            "layout": {k: {"dtype": d, "shape": list(_shapes(spec)[k]), "packbits": k in PACKED}
                       for k, (d, _) in ARRAY_LAYOUT.items()},
            "generation_seconds": round(time.time() - t0, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "spec": spec.to_dict(),
        }
        (tmp / "data" / MANIFEST).write_text(json.dumps(manifest, indent=1))
        old = None
        if path.exists():
            old = path.with_name(path.name + f".old-{os.getpid()}")
            path.rename(old)
        (tmp / "data").rename(path)
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


def prepare(spec: TaskSpec, out: str | Path | None = None, workers: int = 1, force: bool = False,
            on_episode: Callable[[], None] | None = None, deep_verify: bool = True) -> PrepareResult:
    """A verified dataset for ``spec``: reuse the cache if sound, else (re)generate it."""
    path = Path(out) if out is not None else dataset_dir(spec)
    if out is not None:
        _check_replaceable(path)
    problems: list[str] = []
    with FileLock(path.with_name(path.name + ".lock")):
        if path.exists() and not force:
            problems = verify(path, spec, deep=deep_verify)
            if not problems:
                return PrepareResult(open_store(path, spec), True, [])
            warnings.warn(f"cached dataset {path} is unusable ({'; '.join(problems[:3])}); regenerating",
                          CacheWarning, stacklevel=2)
        write(spec, path, workers=workers, on_episode=on_episode)
        return PrepareResult(open_store(path, spec), False, problems)


def _check_replaceable(path: Path) -> None:
    """A user-chosen dataset directory may be replaced only if it is empty or a dataset (it has a
    manifest): a file or another directory given by mistake is never deleted."""
    if path.exists() and not path.is_dir():
        raise MemorybenchError(f"{path} is a file, not a dataset directory; choose another --out")
    if path.is_dir() and not (path / MANIFEST).exists() and any(path.iterdir()):
        raise MemorybenchError(f"{path} exists and is not a memorybench dataset (no {MANIFEST}); refusing to replace "
                               "it: choose another --out, or delete it yourself")


class FileLock:
    """An exclusive advisory lock on ``path`` (``fcntl.flock``), so that processes sharing a cache
    (torchrun ranks, array jobs on a shared file system) do not generate the same dataset twice.
    Where ``fcntl`` does not exist it is a no-op."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fh = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a+")
        fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self._fh is not None:
            import fcntl

            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
