"""Why two runs cannot share a column, be compared or be resumed into one another, in words.

Leaderboards (``leaderboard.build``), the regression gate (``compare.check_comparable``) and
``--resume`` (``results.check_same_run``) refuse to combine results that measure different
things. These functions say what differs in plain terms (the number and indices of the
episodes, the task spec's fields, the generated data, the generator, task-format and metric
versions, the protocols, the model's weights) and, where there is one, the fix.
"""

from __future__ import annotations

from collections.abc import Sequence


def ranges_text(indices: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2, 5, 7-8"``."""
    out, run = [], []
    for i in sorted(indices):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [i]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(out)


def episodes_text(indices: Sequence[int] | None) -> str:
    """``"12 episodes (0-11)"``."""
    indices = sorted(indices or [])
    n = len(indices)
    return f"{n} episode{'s' if n != 1 else ''}" + (f" ({ranges_text(indices)})" if n else "")


def selection_hint(indices: Sequence[int] | None, total: int | None = None) -> str:
    """The ``memorybench run`` option that selects exactly ``indices``, or a description."""
    indices = sorted(indices or [])
    if indices and indices == list(range(len(indices))):
        if total is not None and len(indices) == total:
            return "no --limit (every episode)"
        return f"--limit {len(indices)}"
    return f"the episodes {ranges_text(indices)} (e.g. shards merged with `memorybench merge`)"


def _flatten(d, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def spec_differences(a: dict, b: dict) -> list[str]:
    """The fields of two task specs (``TaskSpec.to_dict``) that differ: ``"frames 96 vs 640"``."""
    fa, fb = _flatten(a), _flatten(b)
    skip = {"description", "citation", "source"}
    return [
        f"{k} {fa.get(k, '(absent)')} vs {fb.get(k, '(absent)')}"
        for k in sorted(set(fa) | set(fb))
        if k not in skip and fa.get(k) != fb.get(k)
    ]


def task_differences(
    a: dict, b: dict, names: tuple[str, str] = ("one run", "the other"), protocols: tuple[list, list] | None = None
) -> list[str]:
    """What differs between two ``run.json`` task entries of one task key, in words, with the fix."""
    key = a.get("key", b.get("key"))
    out = []
    if a.get("spec_hash") != b.get("spec_hash"):
        fields = spec_differences(a.get("spec", {}), b.get("spec", {}))
        what = (
            "; ".join(fields[:6]) + (" ..." if len(fields) > 6 else "")
            if fields
            else f"spec hash {str(a.get('spec_hash'))[:12]} vs {str(b.get('spec_hash'))[:12]}"
        )
        out.append(
            f"{key}: the task spec differs ({names[0]} vs {names[1]}: {what}); runs of different task "
            "versions measure different things: evaluate both on the same task file"
        )
    ea, eb = sorted(a.get("episodes_selected") or []), sorted(b.get("episodes_selected") or [])
    if ea != eb:
        total = (a.get("spec") or {}).get("episodes")
        out.append(
            f"{key}: {names[0]} evaluates {episodes_text(ea)}, {names[1]} {episodes_text(eb)}; "
            f"to match {names[0]}, run with {selection_hint(ea, total)}"
        )
    elif a.get("spec_hash") == b.get("spec_hash") and a.get("dataset_sha256") != b.get("dataset_sha256"):
        legacy = ("episodes_sha256" in a) != ("episodes_sha256" in b)
        why = (
            "one of them was recorded by an earlier memorybench version, which hashed the whole dataset rather "
            "than the episodes evaluated: re-run it"
            if legacy
            else "the same spec generated other pixels (another generator build, or for the maze tasks another "
            "renderer or Mesa version): compare runs made on the same data"
        )
        out.append(
            f"{key}: the evaluated episodes' data differ (dataset SHA-256 {str(a.get('dataset_sha256'))[:12]} "
            f"vs {str(b.get('dataset_sha256'))[:12]}); {why}"
        )
    if protocols is not None and sorted(protocols[0]) != sorted(protocols[1]):
        out.append(f"{key}: protocols {', '.join(protocols[0])} ({names[0]}) vs {', '.join(protocols[1])} ({names[1]})")
    return out


def metrics_difference(a_meta: dict, b_meta: dict, names: tuple[str, str]) -> str | None:
    va, vb = (a_meta.get("metrics") or {}).get("version"), (b_meta.get("metrics") or {}).get("version")
    if va == vb:
        return None
    return (
        f"metric definitions v{va} ({names[0]}) vs v{vb} ({names[1]}): memorybench changed what the numbers "
        "mean; re-run the older one, or re-score it with `memorybench score` if it saved its predictions"
    )


def _weights_by_source(model: dict) -> dict[str, dict] | str:
    w = model.get("weights")
    if isinstance(w, list):
        return {e.get("source", "?"): e for e in w}
    return w if w is not None else "not recorded"


def model_differences(a: dict, b: dict, names: tuple[str, str] = ("on disk", "requested")) -> list[str]:
    """What differs between two models' ``run.json`` descriptions (identities), in words."""
    out = []
    if a.get("name") != b.get("name"):
        out.append(f"model name '{a.get('name')}' ({names[0]}) vs '{b.get('name')}' ({names[1]})")
    if a.get("class") != b.get("class"):
        out.append(f"model class {a.get('class')} vs {b.get('class')}")
    aa, ba = a.get("args") or {}, b.get("args") or {}
    for k in sorted(set(aa) | set(ba)):
        if aa.get(k) != ba.get(k):
            out.append(
                f"--model-args {k}: {aa.get(k, '(not given)')!r} ({names[0]}) vs {ba.get(k, '(not given)')!r} "
                f"({names[1]})"
            )
    wa, wb = _weights_by_source(a), _weights_by_source(b)
    if isinstance(wa, dict) and isinstance(wb, dict):
        for src in sorted(set(wa) | set(wb)):
            x, y = wa.get(src), wb.get(src)
            if x is None or y is None:
                have = names[0] if y is None else names[1]
                e = x or y
                out.append(f"weights: {src} ({e.get('type')} {e.get('path', '')}) only {have}".replace(" )", ")"))
            elif x.get("sha256") != y.get("sha256"):
                what = {
                    "file": "file",
                    "directory": "directory",
                    "modules": "state of the modules " + ", ".join(x.get("modules", [])),
                }.get(x.get("type"), x.get("type"))
                where = f" {y.get('path')}" if y.get("path") else ""
                out.append(
                    f"weights changed: {src}: {what}{where} SHA-256 {x['sha256'][:12]}... ({names[0]}) vs "
                    f"{y['sha256'][:12]}... ({names[1]})"
                )
    elif wa != wb:
        out.append(f"weights: {_weights_text(wa)} ({names[0]}) vs {_weights_text(wb)} ({names[1]})")
    if a.get("checkpoint_sha256") != b.get("checkpoint_sha256") and not any("weights" in d for d in out):
        out.append(
            f"checkpoint SHA-256 {str(a.get('checkpoint_sha256'))[:12]} vs {str(b.get('checkpoint_sha256'))[:12]}"
        )
    if a.get("parameters") != b.get("parameters") and a.get("parameters") is not None:
        out.append(f"parameters {a.get('parameters')} vs {b.get('parameters')}")
    return out


def _weights_text(w) -> str:
    if isinstance(w, dict):
        return ", ".join(f"{s}: {e.get('sha256', '')[:12]}" for s, e in w.items()) or "none"
    return str(w)
