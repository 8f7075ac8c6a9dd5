"""The model registry: built-in names, ``package.module:Class`` paths, and plugins.

A model is found, in order, by

1. a built-in name (the calibration baselines and the reference zoo, below);
2. a plugin name: packages register ``name = "package.module:Class"`` in the entry-point group
   ``memorybench.models`` (no change to this repository needed);
3. an import path ``package.module:Class`` given directly on the command line.

Targets are imported only when used. Every class must subclass ``memorybench.adapter.WorldModel``.
``--model-args key=value,...`` become constructor keyword arguments (values parsed as YAML
scalars/lists: ``steps=4,name=x,sizes=[1,2]``).

A model's name (in ``run.json``, tables and the run directory's name) is the same whatever the
route: the class's declared ``name``, else the plugin name that registers the class, else what
was given on the command line (``model_name``).

A checkpoint that comes with a model card (``card.json`` next to it, as the shipped
``baselines/<name>/`` have, with ``checkpoint.file`` and ``checkpoint.sha256``) must have the
bytes the card states: a damaged or replaced file is refused before the model runs.
"""

from __future__ import annotations

import importlib
import inspect

import yaml

from ..adapter import WorldModel
from ..errors import MemorybenchError, UnknownNameError
from ..registry import Registry

BUILTIN_MODELS: dict[str, str] = {
    "copy-last": "memorybench.models.calibration:CopyLast",
    "mean-frame": "memorybench.models.calibration:MeanFrame",
    "ground-truth": "memorybench.models.calibration:GroundTruth",
    "perfect-memory": "memorybench.models.calibration:PerfectMemory",
    "context-mean-colour": "memorybench.models.nomemory:ContextMeanColour",
    "recent-mean": "memorybench.models.nomemory:RecentMean",
    "recent-median": "memorybench.models.nomemory:RecentMedian",
    "blur-last": "memorybench.models.nomemory:BlurLast",
    "shift-last": "memorybench.models.nomemory:ShiftLast",
    "inpaint-last": "memorybench.models.nomemory:InpaintLast",
    "lssvwm": "memorybench.zoo.lssvwm:LSSVWM",
    "full-attention": "memorybench.zoo.attention:FullAttention",
    "frame-local-attention": "memorybench.zoo.attention:FrameLocalAttention",
    "s4": "memorybench.zoo.s4:S4",
    "mamba": "memorybench.zoo.mamba:Mamba",
    "diffusion": "memorybench.zoo.diffusion:DiffusionForcing",
}

#: what each built-in is. ``calibration``: the non-learned scales of the score; ``reference``: the
#: privileged ones that read the true episode; ``no-memory``: every strategy without memory (the
#: validity check holds each at chance); ``zoo``: the trained reference models of memorybench.zoo.
MODEL_TAGS: dict[str, tuple[str, ...]] = {
    "copy-last": ("calibration", "no-memory"),
    "mean-frame": ("calibration",),
    "ground-truth": ("calibration", "reference"),
    "perfect-memory": ("calibration", "reference"),
    **{m: ("no-memory",) for m in ("context-mean-colour", "recent-mean", "recent-median")},
    **{m: ("no-memory",) for m in ("blur-last", "shift-last", "inpaint-last")},
    **{m: ("zoo",) for m in ("lssvwm", "full-attention", "frame-local-attention", "s4", "mamba", "diffusion")},
}

ENTRY_POINT_GROUP = "memorybench.models"


def _check(obj: object, name: str) -> None:
    if not (inspect.isclass(obj) and issubclass(obj, WorldModel)):
        target = MODELS.table().get(name, name)
        raise MemorybenchError(f"model '{name}' ({target}) is not a subclass of memorybench.adapter.WorldModel")


MODELS = Registry("model", ENTRY_POINT_GROUP, BUILTIN_MODELS, tags=MODEL_TAGS, check=_check)

#: names that stand for several models on the command line (``--model zoo``), from the tags
MODEL_GROUPS: dict[str, tuple[str, ...]] = MODELS.groups(("calibration", "no-memory", "zoo"))
CALIBRATION = MODEL_GROUPS["calibration"]
NO_MEMORY = MODEL_GROUPS["no-memory"]


def _plugins() -> dict[str, str]:
    """The plugin models by name -> ``module:Class`` target (entry points, read once)."""
    return {name: p.target for name, p in MODELS.plugins().items()}


def model_names() -> list[str]:
    return MODELS.names()


def expand_model_names(text: str) -> list[str]:
    """Comma-separated model names with the groups of ``MODEL_GROUPS`` expanded (order kept, no repeats)."""
    out: list[str] = []
    for name in (m.strip() for m in text.split(",")):
        for m in MODEL_GROUPS.get(name, (name,) if name else ()):
            if m not in out:
                out.append(m)
    return out


def model_name(name: str, cls: type[WorldModel] | None = None) -> str:
    """The name a model goes by, whatever the route it was given by: the class's declared
    ``name``; else the registry or plugin name of its target (a ``module:Class`` path that a
    plugin registers gets the plugin's name); else ``name`` as given."""
    if name in BUILTIN_MODELS and cls is None:
        return name  # built-in classes declare their registry name (a test holds this)
    cls = cls or resolve(name)
    if cls.name:
        return cls.name
    table = MODELS.table()
    if name in table:
        return name
    target = f"{cls.__module__}:{cls.__qualname__}"
    for registered, value in sorted(table.items()):
        if value in (name, target):
            return registered
    return name


class ModelLoadError(MemorybenchError):
    """A model's module cannot be imported, or its constructor raised. The message is one line;
    the original exception is chained (``MEMORYBENCH_DEBUG=1`` prints its traceback)."""


def target_of(name: str) -> str:
    """The ``module:Class`` string a model name stands for, without importing anything.

    A registry or plugin name maps to its entry; anything with a ``:`` is taken as a path, whose
    module must at least be findable. Unknown names get a "did you mean".
    """
    table = MODELS.table()
    target = table.get(name)
    if target is not None:
        return target
    if ":" not in name:
        raise UnknownNameError("model", name, sorted(table))
    module, _, attr = name.partition(":")
    if not module or not attr.isidentifier():
        raise MemorybenchError(f"model '{name}': a model path is package.module:Class")
    import importlib.util

    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError) as e:  # a parent package is missing or broken
        raise ModelLoadError(f"cannot find the module of model '{name}': {type(e).__name__}: {e}") from e
    except Exception as e:  # noqa: BLE001 - a parent package raised while being imported
        raise ModelLoadError(
            f"model '{name}': importing a parent package of {module} raised {type(e).__name__}: {e}"
        ) from e
    if found is None:
        raise ModelLoadError(
            f"cannot find the module '{module}' of model '{name}' (is it installed, or on PYTHONPATH?)"
        )
    return name


def resolve(name: str) -> type[WorldModel]:
    """The adapter class for a registry name or a ``module:Class`` path."""
    target = target_of(name)
    module, _, attr = target.partition(":")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ModelLoadError(f"cannot load model '{name}' from {target}: {e}") from e
    except Exception as e:  # noqa: BLE001 - the model's module itself raised while being imported
        raise ModelLoadError(f"cannot load model '{name}': importing {module} raised {type(e).__name__}: {e}") from e
    _check(obj, name)
    return obj


def _split_top_level(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def parse_model_args(text: str | None) -> dict:
    """``"a=1,b=x,c=[1,2]"`` -> ``{"a": 1, "b": "x", "c": [1, 2]}``."""
    if not text:
        return {}
    out = {}
    for part in _split_top_level(text):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise MemorybenchError(f"--model-args expects key=value pairs separated by commas, got {part!r}")
        try:
            out[key] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key] = value
    return out


def check_model_args(name: str, args: dict | str | None = None) -> tuple[type[WorldModel], dict]:
    """The class and keyword arguments of a model, checked against its constructor's signature
    (imports the model's module, builds nothing)."""
    cls = resolve(name)
    kwargs = parse_model_args(args) if isinstance(args, str) or args is None else dict(args)
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as e:
        raise MemorybenchError(f"bad --model-args for '{name}': {e}") from None
    return cls, kwargs


def load_model(name: str, args: dict | str | None = None) -> WorldModel:
    """Build a model from its name (or path) and constructor arguments."""
    cls, kwargs = check_model_args(name, args)
    try:
        model = cls(**kwargs)
    except MemorybenchError:
        raise
    except Exception as e:  # noqa: BLE001 - a user's constructor failing is a user-facing error
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "no arguments"
        raise ModelLoadError(
            f"model '{name}' could not be built ({args}): its constructor raised {type(e).__name__}: {e}"
        ) from e
    model._init_args = kwargs
    if not model.name:
        model.name = model_name(name, cls)
    verify_model_card(model)
    return model


def verify_model_card(model: WorldModel) -> None:
    """Refuse a checkpoint whose bytes differ from the SHA-256 its model card states (``card.json``
    beside it naming it in ``checkpoint.file``); a checkpoint without a card is not checked here."""
    import json

    from ..hashing import cached_sha256

    ckpt = model.checkpoint_path()
    if ckpt is None:
        return
    card_path = ckpt.parent / "card.json"
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
        stated = card["checkpoint"]
        if stated.get("file") != ckpt.name:
            return
        expected = stated["sha256"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return  # no card for this file
    actual = cached_sha256(ckpt)
    if actual != expected:
        raise MemorybenchError(
            f"checkpoint {ckpt} does not match its model card {card_path}: SHA-256 {actual[:16]}... but the card "
            f"says {str(expected)[:16]}...; the file is damaged or was replaced. Restore it (for a shipped "
            "checkpoint: `git checkout -- baselines/` or reinstall memorybench), or pass checkpoint=PATH for other weights"
        )
