"""What ``memorybench models list`` shows: every model memorybench can run, without building any.

One row per registered name (``BUILTIN_MODELS`` and the ``memorybench.models`` entry-point
plugins), with

* ``kind``: from the registry's tags: ``calibration`` (copy-last, mean-frame: non-learned
  scales), ``reference`` (privileged calibration references that read the true episode:
  ground-truth, perfect-memory), ``no-memory`` (the other strategies without memory),
  ``zoo`` (the trained reference models of ``memorybench.zoo``) or ``plugin``;
* ``parameters``: 0 for a non-learned model, the model card's count for a zoo model, ``None``
  where it is unknown without building the model (plugins);
* ``checkpoint``: for zoo models, the shipped ``baselines/<name>/model.safetensors``: its path,
  whether it is present, and the SHA-256 its model card records (``card.json``), with the card's
  ``license``;
* ``citation_keys``: the BibTeX keys of the model's ``citation``.

Classes are imported (for their citation and flags), never instantiated.
"""

from __future__ import annotations

import json
import re

from . import BUILTIN_MODELS, MODELS, _plugins, resolve

CITATION_KEY = re.compile(r"@\w+\s*\{\s*([^,\s]+)\s*,")


def citation_keys(bibtex: str) -> list[str]:
    """``"@inproceedings{po2025lssvwm, ..."`` -> ``["po2025lssvwm"]``."""
    return CITATION_KEY.findall(bibtex or "")


def _card(name: str) -> tuple[dict | None, str]:
    from ..zoo.common import baselines_dir, default_checkpoint

    path = baselines_dir() / name / "card.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")), str(default_checkpoint(name))
    except (OSError, ValueError):
        return None, str(default_checkpoint(name))


def _kind(name: str, cls: type, plugins: dict) -> str:
    """The row's kind, from the registry's tags (see the module docstring)."""
    tags = MODELS.tags(name)
    if name in plugins:
        return "plugin"
    if cls.privileged:
        return "reference"
    for tag in ("calibration", "no-memory", "zoo"):
        if tag in tags:
            return tag
    return "plugin"


def catalog() -> list[dict]:
    """One dict per registered model (see the module docstring), in registry order, plugins last."""
    from ..adapter import WorldModel

    rows = []
    plugins = _plugins()
    for name, target in [*BUILTIN_MODELS.items(), *sorted(plugins.items())]:
        row = {
            "name": name,
            "target": target,
            "kind": "plugin",
            "parameters": None,
            "checkpoint": None,
            "license": None,
            "citation_keys": [],
            "summary": "",
            "error": None,
        }
        try:
            cls = resolve(name)
        except Exception as e:  # noqa: BLE001 - a broken plugin is listed with its error, not fatal
            row["error"] = str(e)
            rows.append(row)
            continue
        doc = (cls.__doc__ or "").strip().splitlines()
        row["summary"] = doc[0].strip() if doc else ""
        row["citation_keys"] = citation_keys(cls.citation)
        row["kind"] = _kind(name, cls, plugins)
        if row["kind"] in ("calibration", "reference", "no-memory") and cls.num_parameters is WorldModel.num_parameters:
            row["parameters"] = 0
        if row["kind"] == "zoo":
            from pathlib import Path

            card, ckpt = _card(name)
            row["parameters"] = (card or {}).get("parameters")
            row["license"] = (card or {}).get("license")
            row["checkpoint"] = {
                "path": ckpt,
                "present": Path(ckpt).is_file(),
                "sha256": ((card or {}).get("checkpoint") or {}).get("sha256"),
                "card": card is not None,
            }
        rows.append(row)
    return rows
