"""Results that can be published: no local paths, no host names.

A run directory records where things were on the machine that made it (``dataset_path``, the
checkpoint path, the LPIPS weights file, the command line) and which machine it was
(``environment.hostname``, each event's ``host``): useful locally, not in a committed or shared
``results/``. ``portable(obj)`` rewrites such a JSON value:

* paths under the cache (``$MEMORYBENCH_CACHE``) and the LPIPS weights directory
  (``$MEMORYBENCH_WEIGHTS_DIR``) become ``$MEMORYBENCH_CACHE/...`` and
  ``$MEMORYBENCH_WEIGHTS_DIR/...``;
* paths inside memorybench's source checkout, or else its installed package, become relative
  (``baselines/lssvwm/model.safetensors``, ``memorybench/_data/...``); paths under the current
  directory become relative to it; the home directory becomes ``~``;
* the program in ``command[0]`` becomes its name (``memorybench``);
* the keys ``hostname`` and ``host`` are removed.

``export_runs`` copies run directories in that form (``memorybench report --runs-to``);
``find_non_portable`` lists what a directory of results still gives away (used by the tests).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import MemorybenchError

HOST_KEYS = ("hostname", "host")
TEXT_SUFFIXES = (".json", ".jsonl", ".md", ".csv", ".tex", ".html", ".txt", ".svg")


def _roots() -> list[tuple[str, str]]:
    """(absolute prefix, replacement), longest prefix first."""
    from . import storage
    from .lpips_weights import weights_dir

    package = Path(__file__).resolve().parent
    source = package.parent if (package.parent / "pyproject.toml").exists() else None
    pairs = [(storage.cache_root(), "$MEMORYBENCH_CACHE"), (weights_dir(), "$MEMORYBENCH_WEIGHTS_DIR")]
    pairs += [(source, "")] if source is not None else [(package, "memorybench")]
    pairs += [(Path.cwd(), ""), (Path.home(), "~")]
    out = []
    for path, repl in pairs:
        for p in {str(Path(path).expanduser()), str(Path(path).expanduser().resolve())}:
            if len(p) > 1:  # never "/"
                out.append((p.rstrip("/"), repl))
    return sorted(set(out), key=lambda x: -len(x[0]))


def portable_text(text: str, roots: list[tuple[str, str]] | None = None) -> str:
    """``text`` with every absolute path prefix of ``_roots()`` replaced (see the module docstring)."""
    for prefix, repl in roots if roots is not None else _roots():
        if prefix not in text:
            continue
        # the prefix as a whole path component: followed by "/", or the end of a path
        pattern = re.escape(prefix) + r"(?=/|$|[\s\"'),;:])"
        if repl:
            text = re.sub(pattern, lambda m, r=repl: r, text)
        else:  # relative: drop the prefix and its slash
            text = re.sub(re.escape(prefix) + "/", "", text)
            text = re.sub(pattern, ".", text)
    return text


def portable(obj: Any, roots: list[tuple[str, str]] | None = None, _key: str | None = None) -> Any:
    """A copy of a JSON value without host names and local paths (see the module docstring)."""
    roots = _roots() if roots is None else roots
    if isinstance(obj, dict):
        return {k: portable(v, roots, k) for k, v in obj.items() if k not in HOST_KEYS}
    if isinstance(obj, list):
        out = [portable(v, roots) for v in obj]
        if _key == "command" and out and isinstance(out[0], str):
            out[0] = Path(out[0]).name  # the program, not where it was installed
        return out
    if isinstance(obj, str):
        return portable_text(obj, roots)
    return obj


def _rewrite_json(src: Path, dst: Path, roots) -> None:
    from .results import atomic_write_json

    atomic_write_json(dst, portable(json.loads(src.read_text(encoding="utf-8")), roots))


def _rewrite_jsonl(src: Path, dst: Path, roots) -> None:
    from .results import atomic_write_bytes

    lines = []
    for line in src.read_text(encoding="utf-8").splitlines():
        try:
            lines.append(json.dumps(portable(json.loads(line), roots)))
        except json.JSONDecodeError:  # a line cut short by a killed process: dropped, as read_events does
            continue
    atomic_write_bytes(dst, ("\n".join(lines) + "\n" if lines else "").encode())


def export_run(src: Path, dst: Path, roots: list[tuple[str, str]] | None = None) -> Path:
    """Copy run directory ``src`` to ``dst`` in portable form: ``run.json``, ``summary.json`` and
    ``events.jsonl`` rewritten, ``records/`` copied (they hold no paths), saved predictions left out.
    ``dst == src`` rewrites the run in place. An existing ``dst`` must be a run directory (it is
    replaced); anything else is refused."""
    from .results import EVENTS, RUN_JSON, SUMMARY

    roots = _roots() if roots is None else roots
    src, dst = Path(src), Path(dst)
    if not (src / RUN_JSON).exists():
        raise MemorybenchError(f"{src} is not a run directory (no {RUN_JSON})")
    if dst.exists() and dst.resolve() == src.resolve():
        for name, rewrite in ((RUN_JSON, _rewrite_json), (SUMMARY, _rewrite_json), (EVENTS, _rewrite_jsonl)):
            if (src / name).exists():
                rewrite(src / name, src / name, roots)
        return dst
    if dst.exists() and not (dst / RUN_JSON).exists():
        raise MemorybenchError(f"{dst} exists and is not a run directory; refusing to replace it")
    tmp = dst.with_name(f".{dst.name}.export-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name, rewrite in ((RUN_JSON, _rewrite_json), (SUMMARY, _rewrite_json), (EVENTS, _rewrite_jsonl)):
            if (src / name).exists():
                rewrite(src / name, tmp / name, roots)
        if (src / "records").is_dir():
            shutil.copytree(src / "records", tmp / "records")
        if dst.exists():
            shutil.rmtree(dst)
        tmp.rename(dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


def export_runs(runs: Iterable[Path], dest: Path) -> list[Path]:
    """``export_run`` of each run into ``dest/<run directory name>`` (names must not collide)."""
    runs = list(runs)
    names = [Path(r).name for r in runs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise MemorybenchError(f"several runs are named {', '.join(dup)}; export them to separate directories")
    roots = _roots()
    return [export_run(Path(r), Path(dest) / Path(r).name, roots) for r in runs]


def export_profile(src: Path, dst: Path) -> Path:
    """A portable copy of a ``memorybench profile`` JSON file (``dst == src``: in place)."""
    _rewrite_json(Path(src), Path(dst), _roots())
    return Path(dst)


def find_non_portable(root: Path, hostnames: Iterable[str] = ()) -> list[str]:
    """``"file: problem"`` for every text file under ``root`` that holds a home-directory path
    (``/root/``, ``/home/``, this user's home), one of ``hostnames`` as a JSON string value, or a
    ``hostname``/``host`` key. Embedded images (``data:`` URIs) are skipped."""
    home = str(Path.home())
    needles = list(dict.fromkeys(["/root/", "/home/"] + ([home + "/"] if len(home) > 1 else [])))
    hosts = [h for h in hostnames if h]
    problems = []
    for f in sorted(Path(root).rglob("*")):
        if not f.is_file() or f.suffix.lower() not in TEXT_SUFFIXES:
            continue
        text = re.sub(r"data:[a-z/+.-]+;base64,[A-Za-z0-9+/=]+", "", f.read_text(encoding="utf-8", errors="replace"))
        for n in needles:
            if n in text:
                problems.append(f"{f}: contains {n!r}")
        for h in hosts:
            if f'"{h}"' in text:
                problems.append(f"{f}: contains the host name {h!r}")
        if re.search(r'"(hostname|host)"\s*:', text):
            problems.append(f"{f}: has a host key")
    return problems
