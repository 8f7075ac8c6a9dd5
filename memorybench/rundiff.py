"""What differs between two runs, in words: for refusals of ``--resume`` and ``merge``.

``explain(on_disk, requested)`` compares two ``run.json`` dicts on what makes them the same
experiment (``results.comparable_keys``: the model identity, each task's spec, dataset and
episodes, the protocols, the metric version, the shard) and returns one sentence per difference,
e.g. ``"task occlusion-recall@smoke: episodes: 4 (0-3) on disk, 2 (0-1) requested"``, instead of
lists of hashes.
"""

from __future__ import annotations

import json

_MODEL_SKIP = {"identity_hash", "parameters", "citation", "privileged", "checkpoint"}  # not identity, or a path


def _short(v, width: int = 60) -> str:
    if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
        return v[:12] + "…"  # a SHA-256
    text = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    return text if len(text) <= width else text[: width - 1] + "…"


def _flat(d, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _dict_diff(a: dict, b: dict, what: str) -> list[str]:
    fa, fb = _flat(a), _flat(b)
    out = []
    for k in sorted(set(fa) | set(fb)):
        if fa.get(k) != fb.get(k):
            da = "absent" if k not in fa else _short(fa[k])
            db = "absent" if k not in fb else _short(fb[k])
            out.append(f"{what}{k}: {da} on disk, {db} requested")
    return out


def episodes_text(idx) -> str:
    """``[0, 1, 2, 3]`` -> ``"4 (0-3)"``; ``[0, 3, 6]`` -> ``"3 (0, 3, 6)"``."""
    idx = sorted(idx or [])
    if not idx:
        return "none"
    if idx == list(range(idx[0], idx[-1] + 1)):
        return f"{len(idx)} ({idx[0]}-{idx[-1]})" if len(idx) > 1 else f"1 ({idx[0]})"
    shown = ", ".join(map(str, idx[:6])) + (", …" if len(idx) > 6 else "")
    return f"{len(idx)} ({shown})"


def explain(on_disk: dict, requested: dict) -> list[str]:
    """One sentence per difference between two run.json dicts (empty if none is found)."""
    from .results import task_protocols

    out: list[str] = []
    ma, mb = on_disk.get("model", {}), requested.get("model", {})
    if ma.get("identity_hash") != mb.get("identity_hash"):
        keys = (set(ma) | set(mb)) - _MODEL_SKIP
        found = _dict_diff({k: ma.get(k) for k in keys if k in ma}, {k: mb.get(k) for k in keys if k in mb}, "model ")
        out += found or [f"model identity: {_short(ma.get('identity_hash'))} on disk, "
                         f"{_short(mb.get('identity_hash'))} requested"]
    ta = {t["key"]: t for t in on_disk.get("tasks", [])}
    tb = {t["key"]: t for t in requested.get("tasks", [])}
    for key in sorted(set(ta) - set(tb)):
        out.append(f"task {key}: in the run on disk, not requested")
    for key in sorted(set(tb) - set(ta)):
        out.append(f"task {key}: requested, not in the run on disk")
    for key in sorted(set(ta) & set(tb)):
        a, b = ta[key], tb[key]
        if a.get("spec_hash") != b.get("spec_hash"):
            out += _dict_diff(a.get("spec", {}), b.get("spec", {}), f"task {key}: spec ") or [
                f"task {key}: spec hash {_short(a.get('spec_hash'))} on disk, {_short(b.get('spec_hash'))} requested"]
        elif a.get("dataset_sha256") != b.get("dataset_sha256"):
            out.append(f"task {key}: same spec but another dataset (sha256 {_short(a.get('dataset_sha256'))} on disk, "
                       f"{_short(b.get('dataset_sha256'))} requested): it was generated differently")
        if sorted(a.get("episodes_selected") or []) != sorted(b.get("episodes_selected") or []):
            out.append(f"task {key}: episodes {episodes_text(a.get('episodes_selected'))} on disk, "
                       f"{episodes_text(b.get('episodes_selected'))} requested (--limit / --shard)")
        pa, pb = task_protocols(a, on_disk), task_protocols(b, requested)
        if pa != pb and on_disk.get("protocols") == requested.get("protocols"):
            out.append(f"task {key}: protocols {', '.join(pa)} on disk, {', '.join(pb)} requested")
    if on_disk.get("protocols") != requested.get("protocols"):
        out.append(f"protocols: {', '.join(on_disk.get('protocols', []))} on disk, "
                   f"{', '.join(requested.get('protocols', []))} requested")
    va = on_disk.get("metrics", {}).get("version")
    vb = requested.get("metrics", {}).get("version")
    if va != vb:
        out.append(f"metric definitions: version {va} on disk, {vb} requested (re-score with `memorybench score`)")
    sa, sb = on_disk.get("run", {}).get("shard"), requested.get("run", {}).get("shard")
    if sa != sb:
        fmt = lambda s: "none" if not s else f"{s[0]}/{s[1]}"  # noqa: E731
        out.append(f"shard: {fmt(sa)} on disk, {fmt(sb)} requested")
    return out
