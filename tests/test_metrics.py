"""Per-frame PSNR, SSIM and LPIPS, whole-frame and masked, against reference implementations.

References: scikit-image (PSNR, SSIM, whole and masked), torchmetrics' functional PSNR and SSIM
(whole frame), and the ``lpips`` package (whole and spatial/masked) with the same AlexNet weights.
The LPIPS weights are loaded once per session (downloaded into ``~/.cache/memorybench/weights``,
or ``$MEMORYBENCH_WEIGHTS_DIR``, if missing).
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from memorybench import lpips_weights
from memorybench.metrics import (
    HIGHER_IS_BETTER,
    METRIC_DEFINITIONS,
    FrameScorer,
    MemoryMetrics,
    gaussian_filter_matrix,
    gaussian_taps,
)

METRIC_KEYS = [m + v for v in ("", "_known", "_memory") for m in ("mse", "psnr", "ssim", "lpips")]


# -- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def backbone():
    sd, _ = lpips_weights.load_alexnet_backbone()
    return sd


@pytest.fixture(scope="session")
def scorer(backbone):
    return FrameScorer()


@pytest.fixture(scope="session")
def scorer_nolpips():
    return FrameScorer(lpips=False)


@pytest.fixture(scope="session")
def lpips_ref(backbone):
    """The lpips package's model (whole and spatial) with our backbone in its AlexNet slices."""
    import lpips

    models = {}
    for spatial in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's deprecation warnings about `pretrained`
            m = lpips.LPIPS(
                net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False, spatial=spatial
            ).eval()
        loaded = 0
        for sl in (m.net.slice1, m.net.slice2, m.net.slice3, m.net.slice4, m.net.slice5):
            for name, p in sl.named_parameters():
                p.data.copy_(backbone[f"features.{name}"])
                loaded += 1
        assert loaded == 10
        models[spatial] = m
    return models


def make_frames(kind: str, n: int = 6, size: int = 64, seed: int = 0):
    """Pairs (pred, target) float32 [n, 3, size, size] in [0, 1] of several kinds."""
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        target = torch.rand(n, 3, size, size, generator=g)
        pred = torch.rand(n, 3, size, size, generator=g)
    elif kind == "noisy":
        target = torch.rand(n, 3, size, size, generator=g)
        pred = (target + 0.05 * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1)
    elif kind == "structured":  # smooth gradients, blocks and stripes; pred is shifted and darkened
        y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
        frames = []
        for i in range(n + 2):
            r = 0.5 + 0.5 * torch.sin(6.28 * (x * (i + 1) / 3 + y / 2))
            gg = ((x * 4 + i).floor() % 2 == (y * 4).floor() % 2).float() * 0.8 + 0.1
            b = (x + y + i / n) % 1.0
            frames.append(torch.stack([r, gg, b]))
        seq = torch.stack(frames)
        target = seq[:n]
        pred = (0.9 * torch.roll(seq[1 : n + 1], shifts=(2, -3), dims=(2, 3))).clamp(0, 1)
    else:
        raise ValueError(kind)
    return pred.contiguous(), target.contiguous()


def make_masks(n: int = 6, size: int = 64, seed: int = 1):
    """memory_mask: random blobs plus a border band (memory pixels often sit at the border);
    novel_mask: a random rectangle and scattered pixels; frame 0 has no memory pixels at all."""
    g = torch.Generator().manual_seed(seed)
    memory = torch.rand(n, size, size, generator=g) < 0.2
    memory[:, :, :4] = True
    novel = torch.rand(n, size, size, generator=g) < 0.1
    novel[:, size // 4 : size // 2, size // 3 : size // 2 + 5] = True
    memory &= ~novel
    memory[0] = False
    return memory, novel


def sk_ssim(a: np.ndarray, b: np.ndarray, full: bool = False):
    return structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1, full=full
    )


def hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).double().numpy()


def composite(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[H, W, 3]: the prediction on the mask, the truth elsewhere."""
    return np.where(mask[..., None], pred, target)


# -- PSNR and SSIM against scikit-image ----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["random", "noisy", "structured"])
@pytest.mark.parametrize("size", [32, 64])
def test_psnr_and_ssim_match_skimage(scorer, kind, size):
    pred, target = make_frames(kind, size=size)
    memory, novel = make_masks(size=size)
    r = scorer.score(pred, target, memory, novel)
    for i in range(pred.shape[0]):
        a, b = hwc(pred[i]), hwc(target[i])
        assert r["psnr"][i].item() == pytest.approx(peak_signal_noise_ratio(b, a, data_range=1.0), rel=1e-12)
        whole, smap = sk_ssim(a, b, full=True)  # smap: the full [H, W, 3] map (no crop)
        assert r["ssim"][i].item() == pytest.approx(whole, rel=1e-9, abs=1e-12)
        for suffix, mask in (("_known", ~novel[i]), ("_memory", memory[i])):
            m = mask.numpy()
            if not m.any():
                assert math.isnan(r["psnr" + suffix][i]) and math.isnan(r["ssim" + suffix][i])
                continue
            # masked PSNR = skimage's PSNR of the masked pixels (all 3 channels)
            assert r["psnr" + suffix][i].item() == pytest.approx(
                peak_signal_noise_ratio(b[m], a[m], data_range=1.0), rel=1e-12
            )
            # masked SSIM = skimage's full map of the composite (prediction inside the mask, truth
            # outside) against the truth, averaged over channels and the masked pixels
            _, cmap = sk_ssim(composite(a, b, m), b, full=True)
            assert r["ssim" + suffix][i].item() == pytest.approx(cmap[m].mean(), rel=1e-9, abs=1e-12)
        assert r["memory_pixels"][i] == memory[i].sum() and r["novel_pixels"][i] == novel[i].sum()


def test_masked_ssim_uses_the_border(scorer_nolpips):
    """Memory pixels at the border count with their own (uncropped) SSIM values."""
    pred, target = make_frames("noisy", n=2)
    border = torch.zeros(2, 64, 64, dtype=torch.bool)
    border[:, :, :3] = True  # entirely inside skimage's 5-pixel crop
    r = scorer_nolpips.score(pred, target, border, torch.zeros_like(border))
    for i in range(2):
        m = border[i].numpy()
        _, smap = sk_ssim(composite(hwc(pred[i]), hwc(target[i]), m), hwc(target[i]), full=True)
        assert r["ssim_memory"][i].item() == pytest.approx(smap[:, :3].mean(), rel=1e-9)
        assert r["ssim_memory"][i].item() != pytest.approx(r["ssim"][i].item(), abs=1e-6)


def test_masked_metrics_read_only_the_masked_content(scorer):
    """On the composite, errors outside the mask do not leak into the masked SSIM and LPIPS: a
    prediction exact inside the mask and wrong around it is perfect there; the converse is not."""
    _, target = make_frames("structured", n=2)
    memory = torch.zeros(2, 64, 64, dtype=torch.bool)
    memory[:, 20:36, 24:40] = True
    noise = torch.rand(target.shape, generator=torch.Generator().manual_seed(5))
    outside_wrong = torch.where(memory[:, None], target, noise)
    inside_wrong = torch.where(memory[:, None], noise, target)
    novel = torch.zeros_like(memory)
    good = scorer.score(outside_wrong, target, memory, novel)
    bad = scorer.score(inside_wrong, target, memory, novel)
    torch.testing.assert_close(good["ssim_memory"], torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(good["lpips_memory"], torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-6)
    assert (good["psnr_memory"] == 100).all() and (good["psnr"] < 20).all()
    assert (bad["ssim_memory"] < 0.5).all() and (bad["lpips_memory"] > 0.1).all()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(h=st.integers(11, 40), w=st.integers(11, 40), seed=st.integers(0, 2**31 - 1), density=st.floats(0.0, 1.0))
def test_psnr_ssim_property_any_size_and_mask(scorer_nolpips, h, w, seed, density):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(2, 3, h, w, generator=g)
    pred = (target + 0.2 * torch.randn(2, 3, h, w, generator=g)).clamp(0, 1)
    memory = torch.rand(2, h, w, generator=g) < density
    novel = torch.zeros(2, h, w, dtype=torch.bool)
    r = scorer_nolpips.score(pred, target, memory, novel)
    for i in range(2):
        a, b = hwc(pred[i]), hwc(target[i])
        whole, smap = sk_ssim(a, b, full=True)
        assert r["ssim"][i].item() == pytest.approx(whole, rel=1e-9, abs=1e-12)
        m = memory[i].numpy()
        if m.any():
            _, cmap = sk_ssim(composite(a, b, m), b, full=True)
            assert r["ssim_memory"][i].item() == pytest.approx(cmap[m].mean(), rel=1e-9, abs=1e-12)
            assert r["psnr_memory"][i].item() == pytest.approx(peak_signal_noise_ratio(b[m], a[m], data_range=1.0))
        else:
            assert math.isnan(r["ssim_memory"][i]) and math.isnan(r["psnr_memory"][i])


def test_gaussian_filter_matrix_is_scipy_reflect():
    from scipy.ndimage import gaussian_filter1d

    v = np.random.default_rng(0).random(23)
    g = gaussian_filter_matrix(23, gaussian_taps())
    ref = gaussian_filter1d(v, 1.5, truncate=3.5, mode="reflect")
    np.testing.assert_allclose((g @ torch.from_numpy(v)).numpy(), ref, rtol=0, atol=1e-15)
    assert gaussian_taps().numel() == 11


# -- whole-frame PSNR and SSIM against torchmetrics ----------------------------------------------------
@pytest.mark.parametrize("kind", ["random", "structured"])
def test_whole_frame_matches_torchmetrics(scorer_nolpips, kind):
    from torchmetrics.functional.image import peak_signal_noise_ratio as tm_psnr
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    pred, target = make_frames(kind)
    memory, novel = make_masks()
    r = scorer_nolpips.score(pred, target, memory, novel)
    p64, t64 = pred.double(), target.double()
    # per-frame PSNR (dim over C, H, W; no pooling). torchmetrics converts ln to log10 with a float32
    # constant, hence a relative tolerance of 1e-6 rather than 1e-12.
    psnr = tm_psnr(p64, t64, data_range=1.0, reduction="none", dim=(1, 2, 3))
    torch.testing.assert_close(r["psnr"], psnr, rtol=1e-6, atol=0)
    # torchmetrics 1.9 averages the *uncropped* map, padded with torch's 'reflect' (= scipy's 'mirror'):
    # another definition. Its interior (5 pixels from the border) does not depend on the padding, so
    # the mean of its cropped map must equal skimage's value, which is ours.
    for i in range(pred.shape[0]):
        _, full = tm_ssim(
            p64[i : i + 1],
            t64[i : i + 1],
            gaussian_kernel=True,
            sigma=1.5,
            kernel_size=11,
            data_range=1.0,
            return_full_image=True,
        )
        assert r["ssim"][i].item() == pytest.approx(full[..., 5:-5, 5:-5].mean().item(), rel=1e-9)


# -- LPIPS against the lpips package --------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["random", "noisy", "structured"])
@pytest.mark.parametrize("size", [32, 64])
def test_lpips_matches_lpips_package(scorer, lpips_ref, kind, size):
    pred, target = make_frames(kind, size=size)
    memory, novel = make_masks(size=size)
    r = scorer.score(pred, target, memory, novel)
    with torch.no_grad():
        whole = lpips_ref[False](pred * 2 - 1, target * 2 - 1).flatten().double()
        spatial = lpips_ref[True](pred * 2 - 1, target * 2 - 1)[:, 0].double()  # [N, H, W]
    torch.testing.assert_close(r["lpips"], whole, rtol=1e-5, atol=1e-6)
    for suffix, mask in (("_known", ~novel), ("_memory", memory)):
        comp = torch.where(mask[:, None], pred, target)
        with torch.no_grad():
            cspatial = lpips_ref[True](comp * 2 - 1, target * 2 - 1)[:, 0].double()
        for i in range(pred.shape[0]):
            if not mask[i].any():
                assert math.isnan(r["lpips" + suffix][i])
                continue
            ref = (spatial if mask[i].all() else cspatial)[i][mask[i]].mean().item()
            assert r["lpips" + suffix][i].item() == pytest.approx(ref, rel=1e-5, abs=1e-6)
    assert (r["lpips"] > 0).all()


def test_lpips_orders_distortions(scorer):
    """A sanity check that the weights are real: more noise, larger LPIPS; a tiny shift, small LPIPS."""
    _, target = make_frames("structured", n=4)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(target.shape, generator=g)
    none = torch.zeros(4, 64, 64, dtype=torch.bool)
    vals = [scorer.score((target + s * noise).clamp(0, 1), target, none, none)["lpips"] for s in (0.02, 0.1, 0.3)]
    assert (vals[0] < vals[1]).all() and (vals[1] < vals[2]).all()


# -- edge cases -----------------------------------------------------------------------------------------
def test_identical_images(scorer):
    _, target = make_frames("structured", n=3)
    memory, novel = make_masks(n=3)
    r = scorer.score(target, target.clone(), memory, novel)
    for v in ("", "_known"):
        assert (r["psnr" + v] == 100.0).all()
        torch.testing.assert_close(r["ssim" + v], torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-12)
        assert (r["lpips" + v] == 0).all()
    # frame 0 has no memory pixels: NaN; the others are perfect
    assert torch.isnan(r["psnr_memory"][0]) and torch.isnan(r["ssim_memory"][0]) and torch.isnan(r["lpips_memory"][0])
    assert (r["psnr_memory"][1:] == 100.0).all() and (r["lpips_memory"][1:] == 0).all()


def test_psnr_cap_is_continuous(scorer_nolpips):
    target = torch.full((3, 3, 16, 16), 0.5)
    # per-pixel errors giving MSE = 1e-10 exactly at the cap, and just above it
    pred = target.clone()
    none = torch.zeros(3, 16, 16, dtype=torch.bool)
    pred[1] += 2**-12  # MSE = 2^-24 ~ 6e-8: 72.2 dB
    r = scorer_nolpips.score(pred, target, none, none)
    assert r["psnr"][0] == 100.0
    assert r["psnr"][1].item() == pytest.approx(10 * math.log10(2**24))


def test_empty_and_full_masks(scorer):
    pred, target = make_frames("noisy", n=3)
    empty = torch.zeros(3, 64, 64, dtype=torch.bool)
    r = scorer.score(pred, target, empty, ~empty)  # everything novel, nothing memory
    for k in ("psnr_known", "ssim_known", "lpips_known", "psnr_memory", "ssim_memory", "lpips_memory"):
        assert torch.isnan(r[k]).all(), k
    assert torch.isfinite(r["psnr"]).all() and torch.isfinite(r["ssim"]).all() and torch.isfinite(r["lpips"]).all()
    assert (r["memory_pixels"] == 0).all() and (r["novel_pixels"] == 64 * 64).all()
    full = scorer.score(pred, target, ~empty, empty)
    torch.testing.assert_close(full["psnr_known"], full["psnr"], rtol=1e-12, atol=0)
    torch.testing.assert_close(full["psnr_memory"], full["psnr"], rtol=1e-12, atol=0)


def test_no_frames(scorer):
    z = torch.zeros(0, 3, 64, 64)
    m = torch.zeros(0, 64, 64, dtype=torch.bool)
    r = scorer.score(z, z, m, m)
    assert set(r) == set(METRIC_KEYS) | {"memory_pixels", "novel_pixels"}
    assert all(v.numel() == 0 for v in r.values())


def _inputs(n=2, size=32):
    pred, target = make_frames("noisy", n=n, size=size)
    memory, novel = make_masks(n=n, size=size)
    return pred, target, memory, novel


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda p, t, m, n: (p.double(), t, m, n), "pred must be float32"),
        (lambda p, t, m, n: (p, (t * 255).to(torch.uint8), m, n), "target must be float32"),
        (lambda p, t, m, n: (p[0], t[0], m, n), r"shape \[N, 3, H, W\]"),
        (lambda p, t, m, n: (p[:, :2], t[:, :2], m, n), r"shape \[N, 3, H, W\]"),
        (lambda p, t, m, n: (p, t[:1], m, n), "pred and target shapes differ"),
        (lambda p, t, m, n: (p, t, m.float(), n), "memory_mask must be a bool"),
        (lambda p, t, m, n: (p, t, m, n[:, :-1]), r"novel_mask must have shape \[N, H, W\]"),
        (lambda p, t, m, n: (p, t, m[:1], n), "memory_mask must have shape"),
        (lambda p, t, m, n: (p * 2, t, m, n), r"outside \[0, 1\]"),
        (lambda p, t, m, n: (p, t.masked_fill(m[:, None].expand_as(t), float("nan")), m, n), "NaN"),
        (lambda p, t, m, n: (p.numpy(), t, m, n), "must be a torch.Tensor"),
        (lambda p, t, m, n: (p[..., :16, :16], t[..., :16, :16], m[..., :16, :16], n[..., :16, :16]), "too small"),
    ],
)
def test_invalid_inputs_raise_clear_errors(scorer, mutate, match):
    with pytest.raises(ValueError, match=match):
        scorer.score(*mutate(*_inputs()))


def test_small_frames_without_lpips(scorer_nolpips):
    pred, target = make_frames("noisy", n=2, size=16)
    memory, novel = make_masks(n=2, size=16)
    r = scorer_nolpips.score(pred, target, memory, novel)
    assert "lpips" not in r and torch.isfinite(r["ssim"]).all()
    with pytest.raises(ValueError, match="at least 11x11"):
        scorer_nolpips.score(pred[..., :10, :10], target[..., :10, :10], memory[..., :10, :10], novel[..., :10, :10])


# -- batching does not change results -------------------------------------------------------------------
def test_results_do_not_depend_on_batching(backbone):
    pred, target = make_frames("noisy", n=20, seed=5)
    memory, novel = make_masks(n=20, seed=6)
    at_once = FrameScorer().score(pred, target, memory, novel)  # default chunk: 256 frames of 64x64
    for chunk in (1, 7):
        chunked = FrameScorer(chunk_size=chunk).score(pred, target, memory, novel)
        for k in at_once:
            # PSNR and SSIM come out bit-identical here; LPIPS differs in the last float32 bits
            # (~1e-9), because oneDNN picks its convolution kernel by batch size, which changes the
            # order of the float32 sums. Hence a tolerance rather than equality.
            torch.testing.assert_close(chunked[k], at_once[k], rtol=1e-6, atol=1e-6, equal_nan=True, msg=k)
    # scoring the frames one call at a time, in reverse order, gives the same per-frame values
    one = FrameScorer()
    rev = [
        one.score(pred[i : i + 1], target[i : i + 1], memory[i : i + 1], novel[i : i + 1]) for i in reversed(range(20))
    ]
    for k in at_once:
        torch.testing.assert_close(
            torch.cat([r[k] for r in rev]).flip(0), at_once[k], rtol=1e-6, atol=1e-6, equal_nan=True, msg=k
        )


def test_output_types(scorer):
    r = scorer.score(*_inputs())
    for k in METRIC_KEYS:
        assert r[k].dtype == torch.float64 and r[k].device.type == "cpu" and r[k].shape == (2,)
    assert r["memory_pixels"].dtype == torch.int64 and r["novel_pixels"].dtype == torch.int64


# -- MemoryMetrics ---------------------------------------------------------------------------------------
def test_memory_metrics_accumulates_per_frame(backbone, scorer):
    pred, target = make_frames("noisy", n=10, seed=7)
    memory, novel = make_masks(n=10, seed=8)
    memory[:3] = False  # three frames without memory pixels: NaN, left out of the memory means
    metric = MemoryMetrics()
    metric.update(pred[:4], target[:4], memory[:4], novel[:4])
    metric.update(pred[4:], target[4:], memory[4:], novel[4:])
    out = metric.compute()
    ref = scorer.score(pred, target, memory, novel)
    for k in METRIC_KEYS:
        src = k.replace("psnr", "mse")  # PSNR of the mean MSE, not a mean of PSNRs
        want = ref[src][~torch.isnan(ref[src])].mean()
        if k.startswith("psnr"):
            want = 10 * torch.log10(1 / want)
        torch.testing.assert_close(out[k], want, rtol=1e-6, atol=1e-9, msg=k)
    assert not torch.isnan(out["psnr_memory"])
    assert out["frames"] == 10 and out["frames_with_memory"] == 7
    per = metric.per_frame()
    torch.testing.assert_close(per["psnr"], ref["psnr"])
    assert torch.equal(per["memory_pixels"], ref["memory_pixels"])
    metric.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics warns about compute() before update()
        empty = metric.compute()
    assert empty["frames"] == 0 and torch.isnan(empty["psnr"])


def test_memory_metrics_all_nan_gives_nan(backbone):
    pred, target = make_frames("noisy", n=3)
    none = torch.zeros(3, 64, 64, dtype=torch.bool)
    metric = MemoryMetrics(lpips=False)
    metric.update(pred, target, none, none)
    out = metric.compute()
    assert torch.isnan(out["psnr_memory"]) and torch.isfinite(out["psnr_known"]) and "lpips" not in out


# -- definitions -----------------------------------------------------------------------------------------
def test_definitions_are_complete_and_serialisable(scorer):
    d = scorer.definitions()
    json.dumps(d)
    json.dumps(METRIC_DEFINITIONS)
    for lib in ("torch", "torchmetrics", "lpips", "scikit-image"):
        assert d["libraries"][lib], lib
    assert d["lpips_weights"]["backbone_content_sha256"] == lpips_weights.BACKBONE_CONTENT_SHA256
    assert d["lpips_weights"]["linear_content_sha256"] == lpips_weights.LINEAR_CONTENT_SHA256
    assert d["lpips_weights"]["loaded_from"] and len(d["lpips_weights"]["loaded_backbone_content_sha256"]) == 64
    assert "loaded_from" not in METRIC_DEFINITIONS["lpips_weights"]  # the module constant is not mutated
    assert set(HIGHER_IS_BETTER) == set(METRIC_KEYS)
    assert HIGHER_IS_BETTER["psnr_memory"] and HIGHER_IS_BETTER["ssim_known"] and not HIGHER_IS_BETTER["lpips"]


# -- GPU (runs only where CUDA is available) --------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(scorer, backbone):
    pred, target = make_frames("noisy", n=12, seed=9)
    memory, novel = make_masks(n=12, seed=10)
    cpu = scorer.score(pred, target, memory, novel)
    gpu_scorer = FrameScorer(device="cuda", chunk_size=5)
    gpu = gpu_scorer.score(pred.cuda(), target.cuda(), memory.cuda(), novel.cuda())
    for k in cpu:
        assert gpu[k].device.type == "cpu"
        # LPIPS in full float32 on both (TF32 is disabled while scoring): agreement to float32 rounding
        torch.testing.assert_close(gpu[k], cpu[k], rtol=1e-5, atol=1e-6, equal_nan=True, msg=k)
    metric = MemoryMetrics().to("cuda")
    metric.update(pred.cuda(), target.cuda(), memory.cuda(), novel.cuda())
    out = metric.compute()
    assert out["psnr"].device.type == "cuda"
    torch.testing.assert_close(out["lpips"].cpu(), cpu["lpips"].mean(), rtol=1e-5, atol=1e-6)


def test_chunk_size_must_be_positive():
    with pytest.raises(ValueError, match="chunk_size"):
        FrameScorer(lpips=False, chunk_size=0)


def test_smallest_lpips_size(scorer):
    pred, target, memory, novel = _inputs(size=31)
    assert torch.isfinite(scorer.score(pred, target, memory, novel)["lpips"]).all()
    with pytest.raises(ValueError, match="at least 31x31"):
        scorer.score(pred[..., :30], target[..., :30], memory[..., :30], novel[..., :30])
