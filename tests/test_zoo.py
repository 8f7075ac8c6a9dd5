"""The reference zoo: scans against their recurrences, streaming against the parallel pass,
causality, a tiny overfit, parameter parity, checkpoints and the adapter contract."""

from __future__ import annotations

import hashlib
import warnings

import pytest
import torch

from memorybench.errors import MemorybenchError
from memorybench.generators import get_generator
from memorybench.models import load_model, resolve
from memorybench.tasks import get_task
from memorybench.zoo import ZOO_MODELS
from memorybench.zoo.attention import extend_cache, frame_causal_attention, reserve_cache
from memorybench.zoo.common import save_checkpoint
from memorybench.zoo.diffusion import alpha_sigma
from memorybench.zoo.lssvwm import BlockSSM, from_blocks, to_blocks
from memorybench.zoo.s4 import S4D
from memorybench.zoo.ssd import Mamba2, SSDState, segsum, ssd_recurrence, ssd_scan

NEXT_FRAME = [m for m in ZOO_MODELS if m != "diffusion"]
TASKS = ["occlusion-recall", "scene-retrieval", "scene-reasoning"]
TINY = {"width": 32, "layers": 2, "heads": 2, "stem_channels": 8, "mlp_ratio": 2}


pytestmark = pytest.mark.usefixtures("one_thread")


def episode(task: str, frames: int, tier: str = "smoke", index: int = 0):
    """(spec, frames [1, T, 3, H, W] float32, actions [1, T, A]) of a generated episode."""
    spec = get_task(task, tier)
    ep = get_generator(spec.family)(spec).generate(index)
    f = torch.from_numpy(ep.frames[:frames]).permute(0, 3, 1, 2).float().div(255)[None]
    return spec, f, torch.from_numpy(ep.actions[:frames])[None]


def tiny(name: str, **config):
    return load_model(name, {"checkpoint": "none", **TINY, **config})


# ------------------------------------------------------------------------------------------------
# the scans


def ssd_inputs(b=2, L=37, H=3, P=4, N=5, seed=0):
    """Random float64 inputs of the SSD scan, with decays up to exp(-3 * 8) per step."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, L, H, P, generator=g, dtype=torch.float64)
    dt = torch.rand(b, L, H, generator=g, dtype=torch.float64) * 3
    A = -torch.rand(H, generator=g, dtype=torch.float64) * 8
    B, C = (torch.randn(b, L, N, generator=g, dtype=torch.float64) for _ in range(2))
    h0 = torch.randn(b, H, P, N, generator=g, dtype=torch.float64)
    return x, dt, A, B, C, h0


def test_segsum_is_the_sum_of_each_segment():
    a = torch.tensor([-1.0, -2.0, -3.0, -4.0], dtype=torch.float64)
    s = segsum(a)
    for i in range(4):
        for j in range(4):
            assert s[i, j] == (a[j + 1 : i + 1].sum() if j <= i else -torch.inf)
    # never positive in float32 either (so exp never exceeds 1), zeros and strong decays included
    a = -torch.rand(500, 64, generator=torch.Generator().manual_seed(0)) * 20
    a[:, ::3] = 0
    assert (segsum(a) <= 0).all()


@pytest.mark.parametrize("L", [1, 5, 16, 37, 64, 130])
@pytest.mark.parametrize("carried", [False, True])
def test_ssd_scan_equals_the_recurrence(L, carried):
    """The chunked SSD scan (chunks of 1, 4, 16 and 64 steps; lengths that are and are not
    multiples of the chunk) against the step-by-step definition, in float64."""
    x, dt, A, B, C, h0 = ssd_inputs(L=L)
    h0 = h0 if carried else None
    # the definition, written out: H_t = exp(dt_t A) H_{t-1} + dt_t x_t B_t^T, y_t = H_t C_t
    h = torch.zeros(2, 3, 4, 5, dtype=torch.float64) if h0 is None else h0
    ys = []
    for t in range(L):
        h = torch.exp(dt[:, t] * A)[:, :, None, None] * h + torch.einsum("bh,bhp,bn->bhpn", dt[:, t], x[:, t], B[:, t])
        ys.append(torch.einsum("bhpn,bn->bhp", h, C[:, t]))
    y_def, h_def = torch.stack(ys, 1), h
    y_rec, h_rec = ssd_recurrence(x, dt, A, B, C, h0)
    torch.testing.assert_close(y_rec, y_def, rtol=0, atol=1e-12)
    torch.testing.assert_close(h_rec, h_def, rtol=0, atol=1e-12)
    for chunk in (1, 4, 16, 64):
        y, hL = ssd_scan(x, dt, A, B, C, h0, chunk=chunk)
        torch.testing.assert_close(y, y_def, rtol=0, atol=1e-10)
        torch.testing.assert_close(hL, h_def, rtol=0, atol=1e-10)


def test_ssd_scan_gradients_equal_the_recurrences():
    """Training differentiates the scan: its gradients are those of the recurrence."""
    inputs = [v.requires_grad_() for v in ssd_inputs(L=23)]
    w = torch.randn(2, 23, 3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def grads(fn):
        y, h = fn(*inputs)
        return torch.autograd.grad((y * w).sum() + h.square().sum(), inputs)

    for a, b in zip(grads(lambda *v: ssd_scan(*v, chunk=8)), grads(ssd_recurrence)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_ssd_scan_is_safe_with_very_strong_decays():
    """Only exponents <= 0: decays of exp(-1e4) per step give zeros, never inf or NaN."""
    x, dt, A, B, C, h0 = ssd_inputs(L=40)
    y, h = ssd_scan(x.float(), dt.float() * 1e3, A.float() - 1, B.float(), C.float(), h0.float(), chunk=16)
    assert torch.isfinite(y).all() and torch.isfinite(h).all()
    y_ref, _ = ssd_recurrence(x.float(), dt.float() * 1e3, A.float() - 1, B.float(), C.float(), h0.float())
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)


def _legacy_scan_module():
    """``benchmarks/_legacy_selective_scan.py``: the Mamba-1 scan the training benchmark times."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "_legacy_selective_scan.py"
    spec = importlib.util.spec_from_file_location("_legacy_selective_scan", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benchmarks_mamba1_scan_equals_its_recurrence():
    """The old scan kept for ``benchmarks/train_throughput.py`` still computes what it did, and its
    networks differ from the zoo's only in the scan."""
    legacy = _legacy_scan_module()
    g = torch.Generator().manual_seed(0)
    b, L, E, S = 3, 37, 5, 4
    x, B, C = (torch.randn(b, L, n, generator=g, dtype=torch.float64) for n in (E, S, S))
    dt = torch.rand(b, L, E, generator=g, dtype=torch.float64) * 3
    A = -torch.rand(E, S, generator=g, dtype=torch.float64) * 8
    D = torch.randn(E, generator=g, dtype=torch.float64)
    h0 = torch.randn(b, E, S, generator=g, dtype=torch.float64)
    h, ys = h0, []
    for t in range(L):
        y, h = legacy.selective_step(x[:, t], dt[:, t], A, B[:, t], C[:, t], D, h)
        ys.append(y)
    for chunk in (None, 4, 64):
        y, hL = legacy.selective_scan(x, dt, A, B, C, D, h0, chunk=chunk)
        torch.testing.assert_close(y, torch.stack(ys, 1), rtol=0, atol=1e-10)
        torch.testing.assert_close(hL, h, rtol=0, atol=1e-10)
    _, frames, actions = episode("scene-retrieval", 5)
    for name in ("lssvwm", "mamba"):
        old, new = legacy.legacy_net(name, TINY), resolve(name).build_net(TINY)
        swapped = {k for k in old.state_dict()} ^ {k for k in new.state_dict()}
        assert swapped and all(".ssm." in k for k in swapped)  # codec, attention, MLPs: the same modules
        assert old(frames, actions).shape == frames.shape


def test_block_order_is_time_then_row_major():
    B, T, h, w = 1, 2, 4, 4
    x = torch.arange(B * T * h * w, dtype=torch.float64).view(B, T, h, w, 1)  # value = t*16 + row*4 + col
    seq = to_blocks(x, 2, 2)
    assert seq.shape == (4, T * 4, 1)
    # block 1 (top-right): frame 0 tokens (0,2) (0,3) (1,2) (1,3), then frame 1's
    assert seq[1, :, 0].tolist() == [2, 3, 6, 7, 18, 19, 22, 23]
    assert torch.equal(from_blocks(seq, B, T, h, w, 2, 2), x)


@pytest.mark.parametrize("block", [(0, 0), (2, 2), (1, 2)])
def test_block_scan_equals_token_by_token_recurrence(block):
    torch.manual_seed(0)
    ssm = BlockSSM(8, block, d_state=4, expand=2, head_dim=4, d_conv=3).double()
    ssm.ssm.chunk = 8  # several chunks per block sequence
    x = torch.randn(2, 5, 4, 4, 8, dtype=torch.float64)
    bh, bw = ssm.block_shape(4, 4)
    seq = to_blocks(x, bh, bw)
    m = ssm.ssm
    state = SSDState(
        torch.zeros(seq.shape[0], m.inner + 2 * m.d_state, 2, dtype=torch.float64),
        torch.zeros(seq.shape[0], m.heads, m.head_dim, m.d_state, dtype=torch.float64),
    )
    with torch.no_grad():
        y, _ = ssm(x)
        outs = []
        for i in range(seq.shape[1]):  # one token at a time, through the recurrent step
            out, state = ssm.ssm(seq[:, i : i + 1], state)
            outs.append(out)
    torch.testing.assert_close(y, from_blocks(torch.cat(outs, 1), 2, 5, 4, 4, bh, bw), rtol=0, atol=1e-10)


@pytest.mark.parametrize("cuts", [(7, 8), (8, 16), (3, 4, 12, 13)])
def test_mamba2_chunks_continue_exactly(cuts):
    """A sequence fed in pieces (a carried conv and SSM state; single steps through the recurrent
    step, longer pieces through the scan, cut inside and at chunk boundaries) = fed whole."""
    torch.manual_seed(0)
    ssm = Mamba2(8, d_state=4, head_dim=4, d_conv=4, chunk=4).double()
    u = torch.randn(3, 21, 8, dtype=torch.float64)
    with torch.no_grad():
        whole, end = ssm(u)
        pieces, state = [], None
        for a, b in zip((0, *cuts), (*cuts, 21)):
            y, state = ssm(u[:, a:b], state)
            pieces.append(y)
    torch.testing.assert_close(torch.cat(pieces, 1), whole, rtol=0, atol=1e-10)
    torch.testing.assert_close(state.ssm, end.ssm, rtol=0, atol=1e-10)
    torch.testing.assert_close(state.conv, end.conv, rtol=0, atol=1e-12)


@pytest.mark.parametrize("carried", [False, True])
def test_s4d_fft_convolution_equals_the_recurrence(carried):
    torch.manual_seed(0)
    s4d = S4D(6, d_state=8).double()
    u = torch.randn(2, 6, 29, dtype=torch.float64)
    h0 = torch.randn(2, 6, 4, dtype=torch.complex128) if carried else None
    with torch.no_grad():
        y, hL = s4d(u, h0)  # Vandermonde kernel + FFT convolution (+ the carried-in state)
        h, ys = (h0 if carried else torch.zeros(2, 6, 4, dtype=torch.complex128)), []
        for t in range(29):
            yt, h = s4d(u[..., t : t + 1], h)  # the recurrence
            ys.append(yt)
    torch.testing.assert_close(y, torch.cat(ys, -1), rtol=0, atol=1e-10)
    torch.testing.assert_close(hL, h, rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
@pytest.mark.parametrize(
    "window,q_frame0,k_frame0",
    [(None, 0, 0), (3, 0, 0), (1, 0, 0), (None, 2, 0), (2, 2, 0), (4, 5, 3), (3, 5, 3), (None, 5, 3)],
)
def test_frame_causal_attention_is_the_masked_softmax(backend, window, q_frame0, k_frame0):
    """Both backends against the definition: token i of frame t_i sees token j of frame t_j
    iff t_i - window < t_j <= t_i (the keys start at frame k_frame0, the queries at q_frame0)."""
    g = torch.Generator().manual_seed(0)
    N, T = 4, 7
    q = torch.randn(2, 2, T * N, 8, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, 2, (q_frame0 - k_frame0 + T) * N, 8, generator=g, dtype=torch.float64) for _ in range(2))
    tq = q_frame0 + torch.arange(T * N) // N
    tk = k_frame0 + torch.arange((q_frame0 - k_frame0 + T) * N) // N
    allowed = (tk[None] <= tq[:, None]) & (tk[None] > tq[:, None] - (window or 10**9))
    scores = (q @ k.transpose(-1, -2) / 8**0.5).masked_fill(~allowed, float("-inf"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flex_attention warns that it runs uncompiled on the CPU
        out = frame_causal_attention(q, k, v, N, q_frame0, k_frame0, window, backend=backend)
    torch.testing.assert_close(out, scores.softmax(-1) @ v, rtol=0, atol=1e-12)
    if backend == "sdpa":  # one query frame at a time (generation) gives the same rows
        for t in range(T):
            one = frame_causal_attention(
                q[:, :, t * N : (t + 1) * N],
                k[:, :, : (q_frame0 - k_frame0 + t + 1) * N],
                v[:, :, : (q_frame0 - k_frame0 + t + 1) * N],
                N,
                q_frame0 + t,
                k_frame0,
                window,
            )
            torch.testing.assert_close(one, out[:, :, t * N : (t + 1) * N], rtol=0, atol=1e-12)


def test_unbounded_kv_cache_appends_in_place_and_grows_by_doubling():
    """Generation appends one frame at a time: an unbounded cache must keep its buffer's spare room
    (no copy of the whole cache per frame), and ``reserve_cache`` makes room ahead of time."""
    g = torch.Generator().manual_seed(0)
    frames = [(torch.randn(1, 2, 3, 4, generator=g), torch.randn(1, 2, 3, 4, generator=g)) for _ in range(6)]
    cache, capacities, pointers = None, [], []
    for k, v in frames:  # one frame of 3 tokens at a time
        keys, values, first, cache = extend_cache(cache, k, v, 1, None)
        capacities.append(cache.k.shape[2])
        pointers.append(cache.k.data_ptr())
        assert first == 0 and cache.length == keys.shape[2] == 3 * cache.frames
    assert capacities == [3, 6, 12, 12, 24, 24]
    assert pointers[2] == pointers[3] and pointers[4] == pointers[5]  # appended in place
    torch.testing.assert_close(keys, torch.cat([k for k, _ in frames], 2), rtol=0, atol=0)
    torch.testing.assert_close(values, torch.cat([v for _, v in frames], 2), rtol=0, atol=0)
    reserved = reserve_cache(cache, 30)  # room for 10 more frames: one copy now, none later
    assert reserved.k.shape[2] >= 18 + 30 and reserved.length == 18
    torch.testing.assert_close(reserved.k[:, :, :18], keys, rtol=0, atol=0)
    assert reserve_cache(reserved, 30) is reserved
    pointer = reserved.k.data_ptr()
    for k, v in frames:
        _, _, _, extended = extend_cache(reserved, k, v, 1, None)  # e.g. a sampler's denoising steps
        assert extended.k.data_ptr() == pointer


# ------------------------------------------------------------------------------------------------
# streaming generation through the adapter = the parallel, teacher-forced pass


@pytest.mark.parametrize("name", NEXT_FRAME)
def test_streaming_equals_the_parallel_pass(name):
    spec, frames, actions = episode("occlusion-recall", 14)
    model = tiny(name)
    with torch.no_grad():
        ref = model.net(frames, actions)
    model.reset(spec, 1)
    preds = [model.predict(actions[:, :1])]  # frame 0, from the BOS token
    model.observe(frames[:, :4], actions[:, :4])  # the context, in two chunks
    model.observe(frames[:, 4:7], actions[:, 4:7])
    for t in range(7, 14):
        preds.append(model.predict(actions[:, t : t + 1]))
        if t == 9:  # predicting for another action must change neither the history nor what is observed
            model.predict((actions[:, t : t + 1] + 1) % 3)
        model.observe(frames[:, t : t + 1], actions[:, t : t + 1])
    torch.testing.assert_close(preds[0], ref[:, :1], rtol=0, atol=2e-5)
    torch.testing.assert_close(torch.cat(preds[1:], 1), ref[:, 7:], rtol=0, atol=2e-5)


def test_diffusion_sampling_with_the_cache_equals_recomputation():
    """The adapter's KV-cached sampler against the sampler recomputed from scratch with the
    parallel denoiser (history clean, the frame being sampled last), for the same noise draws."""
    spec, frames, actions = episode("scene-retrieval", 11)
    model = tiny("diffusion", sampling_steps=3, sampler_seed=7)
    model.reset(spec, 1)
    model.observe(frames[:, :3], actions[:, :3])
    model.observe(frames[:, 3:6], actions[:, 3:6])
    preds = []
    for t in range(6, 11):
        preds.append(model.predict(actions[:, t : t + 1]))
        model.observe(frames[:, t : t + 1], actions[:, t : t + 1])

    # the episode's generator: seeded by sampler_seed and its first frame as 8-bit pixels
    first = (frames[0, 0] * 255).round().to(torch.uint8).numpy().tobytes()
    seed = int.from_bytes(hashlib.sha256(first + b"7").digest()[:8], "little") >> 1
    noise, net, steps, ref = torch.Generator().manual_seed(seed), model.net, 3, []
    with torch.no_grad():
        for t in range(6, 11):
            z = torch.randn(1, 1, 3, 32, 32, generator=noise)
            for i in range(steps):
                k, k_next = 1 - i / steps, 1 - (i + 1) / steps
                levels = torch.zeros(1, t + 1)
                levels[:, -1] = k
                x0 = net(torch.cat([2 * frames[:, :t] - 1, z], 1), actions[:, : t + 1], levels)[:, -1:]
                a, s = alpha_sigma(torch.tensor(k))
                a_next, s_next = alpha_sigma(torch.tensor(k_next))
                z = a_next * (2 * x0 - 1) + s_next * (z - a * (2 * x0 - 1)) / s
            ref.append(x0)
    torch.testing.assert_close(torch.cat(preds, 1), torch.cat(ref, 1), rtol=0, atol=2e-5)
    model.reset(spec, 1)  # reset re-seeds the sampler: the same predictions again
    model.observe(frames[:, :6], actions[:, :6])
    torch.testing.assert_close(model.predict(actions[:, 6:7]), preds[0], rtol=0, atol=2e-5)


def test_diffusion_samples_do_not_depend_on_the_batch():
    """An episode gets the same noise, so the same frames, alone or at row 1 of a batch."""
    spec, a_frames, a_actions = episode("scene-retrieval", 9)
    _, b_frames, b_actions = episode("scene-retrieval", 9, index=1)
    model = tiny("diffusion", sampling_steps=2)

    def rollout(frames, actions):
        model.reset(spec, frames.shape[0])
        model.observe(frames[:, :6], actions[:, :6])
        return model.predict(actions[:, 6:9])

    alone = rollout(a_frames, a_actions)
    batched = rollout(torch.cat([b_frames, a_frames]), torch.cat([b_actions, a_actions]))
    torch.testing.assert_close(batched[1:], alone, rtol=0, atol=2e-5)
    assert (batched[:1] - alone).abs().max() > 1e-3  # another episode: other noise, other frames


def _diffusion_loss_inputs(net, frames, actions, seed, shift=None):
    """(loss, levels and z the denoiser saw) of ``net.loss`` with a generator seeded ``seed``;
    ``shift(levels) -> [B, T] bool``: frames whose estimate is moved by 0.25 before the loss."""
    seen = {}

    def hook(module, args, out):
        seen["z"], _, seen["levels"] = args
        if shift is not None:
            return out + 0.25 * shift(seen["levels"])[:, :, None, None, None]

    handle = net.register_forward_hook(hook)
    try:
        with torch.no_grad():
            loss = net.loss(frames, actions, None, torch.Generator().manual_seed(seed))
    finally:
        handle.remove()
    return loss, seen["levels"], seen["z"]


def test_diffusion_long_context_training_has_no_loss_on_the_clean_prefix():
    _, frames, actions = episode("scene-retrieval", 12)
    frames, actions = frames.expand(6, -1, -1, -1, -1), actions.expand(6, -1, -1)
    net = tiny("diffusion", clean_prefix_prob=1.0).net
    loss, levels, z = _diffusion_loss_inputs(net, frames, actions, seed=3)
    prefix = levels == 0
    length = prefix.sum(1)
    assert (length > 12 // 2).all() and (length <= 11).all()  # more than half, and at least one frame left
    assert torch.equal(prefix, torch.arange(12) < length[:, None])  # a prefix: the first frames
    assert torch.equal(z[prefix], (2 * frames - 1)[prefix])  # clean there (level 0: no noise)
    # moving the estimates of the prefix frames does not change the loss; moving another frame does
    moved, _, _ = _diffusion_loss_inputs(net, frames, actions, seed=3, shift=lambda k: k == 0)
    assert moved.item() == loss.item()
    moved_rest, _, _ = _diffusion_loss_inputs(net, frames, actions, seed=3, shift=lambda k: k > 0)
    assert abs(moved_rest.item() - loss.item()) > 1e-3


def test_diffusion_long_context_training_is_deterministic_given_the_generator():
    _, frames, actions = episode("scene-retrieval", 12)
    frames, actions = frames.expand(40, -1, -1, -1, -1), actions.expand(40, -1, -1)
    net = tiny("diffusion", clean_prefix_prob=0.5).net
    a, b, c = (_diffusion_loss_inputs(net, frames, actions, seed) for seed in (5, 5, 6))
    assert a[0].item() == b[0].item() and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
    assert not torch.equal(a[1], c[1])
    with_prefix = (a[1][:, 0] == 0).float().mean().item()
    assert 0.2 < with_prefix < 0.8  # about half of the sequences (40 draws of p = 0.5)
    # off (p = 0): the draws and the loss of plain diffusion forcing, exactly
    plain = tiny("diffusion").net
    loss, levels, z = _diffusion_loss_inputs(plain, frames, actions, seed=5)
    g = torch.Generator().manual_seed(5)
    k = torch.rand(40, 12, generator=g)
    eps = torch.randn(frames.shape, generator=g)
    al, si = alpha_sigma(k[:, :, None, None, None])
    assert torch.equal(levels, k) and torch.equal(z, al * (2 * frames - 1) + si * eps)
    with pytest.raises(MemorybenchError, match="clean_prefix_prob"):
        tiny("diffusion", clean_prefix_prob=1.5)


# ------------------------------------------------------------------------------------------------
# causality


@pytest.mark.parametrize("name", NEXT_FRAME)
def test_predictions_depend_only_on_the_past(name):
    _, frames, actions = episode("scene-retrieval", 12)
    net, s = tiny(name).net, 5
    other_frame = frames.clone()
    other_frame[:, s] = 1 - other_frame[:, s]
    other_action = actions.clone()
    other_action[:, s] = (other_action[:, s] + 1) % 5
    with torch.no_grad():
        base, by_frame, by_action = net(frames, actions), net(other_frame, actions), net(frames, other_action)
    # frame s is an input of the predictions of frames > s only
    torch.testing.assert_close(by_frame[:, : s + 1], base[:, : s + 1], rtol=0, atol=1e-5)
    assert (by_frame[:, s + 1 :] - base[:, s + 1 :]).abs().max() > 1e-3
    # action s (which makes frame s) is an input of the predictions of frames >= s
    torch.testing.assert_close(by_action[:, :s], base[:, :s], rtol=0, atol=1e-5)
    assert (by_action[:, s] - base[:, s]).abs().max() > 1e-3


def test_diffusion_depends_only_on_the_past():
    spec, frames, actions = episode("scene-retrieval", 9)
    model, s = tiny("diffusion", sampling_steps=2), 4
    other = frames.clone()
    other[:, s] = 1 - other[:, s]

    def sampled(f):  # teacher-forced: the sample of frame t after observing the true frames < t
        model.reset(spec, 1)
        out = []
        for t in range(9):
            out.append(model.predict(actions[:, t : t + 1]))
            model.observe(f[:, t : t + 1], actions[:, t : t + 1])
        return torch.cat(out, 1)

    base, changed = sampled(frames), sampled(other)
    torch.testing.assert_close(changed[:, : s + 1], base[:, : s + 1], rtol=0, atol=1e-5)
    assert (changed[:, s + 1] - base[:, s + 1]).abs().max() > 1e-3
    # the denoiser itself: noisy frame s is an input of the estimates of frames >= s
    z = torch.randn(1, 9, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    levels = torch.rand(1, 9, generator=torch.Generator().manual_seed(1))
    z2 = z.clone()
    z2[:, s] += 1
    with torch.no_grad():
        a, b = model.net(z, actions, levels), model.net(z2, actions, levels)
    torch.testing.assert_close(b[:, :s], a[:, :s], rtol=0, atol=1e-5)
    assert (b[:, s] - a[:, s]).abs().max() > 1e-3


# ------------------------------------------------------------------------------------------------
# learning


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_overfits_one_short_episode(name):
    _, frames, actions = episode("scene-retrieval", 12)
    net = tiny(name).net.train()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)

    def evaluate():  # the same noise draws before and after (diffusion)
        with torch.no_grad():
            return net.loss(frames, actions, None, torch.Generator().manual_seed(0)).item()

    before = evaluate()
    for step in range(200):
        loss = net.loss(frames, actions, None, torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    # diffusion: its loss is at random per-frame noise levels, where the past frames too may be mostly
    # noise (diffusion forcing), so part of it cannot be fitted away: a 5x drop
    assert evaluate() < before / (5 if name == "diffusion" else 10)


def test_default_configs_have_matching_parameter_counts():
    import memorybench.zoo

    counts = {name: resolve(name)(checkpoint="none").num_parameters() for name in ZOO_MODELS}
    assert max(counts.values()) <= 1.06 * min(counts.values()), counts
    assert all(1.5e6 <= n <= 3.5e6 for n in counts.values()), counts  # float32 checkpoints of 6-14 MB
    table = {
        line.split()[0].strip("`"): int(line.split()[-1].replace(",", ""))
        for line in memorybench.zoo.__doc__.splitlines()
        if line.startswith("``") and line.split()[-1][0].isdigit()
    }
    assert table == counts  # the zoo's documented table is up to date


def test_frame_local_attention_has_the_window_of_lssvwm():
    """frame-local-attention isolates what lssvwm's SSM adds: the same attention window (4 frames)."""
    lssvwm, local = resolve("lssvwm").make_config(), resolve("frame-local-attention").make_config()
    assert local.window == lssvwm.window == 4


# ------------------------------------------------------------------------------------------------
# checkpoints


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_checkpoint_round_trip(name, tmp_path):
    from memorybench.adapter import file_sha256

    model = tiny(name, layers=1)
    path = save_checkpoint(model.net, name, tmp_path / "model.safetensors")
    loaded = load_model(name, {"checkpoint": str(path)})
    assert loaded.net.config == model.net.config
    assert loaded.identity()["checkpoint_sha256"] == file_sha256(path)
    _, frames, actions = episode("occlusion-recall", 6)
    with torch.no_grad():
        if name == "diffusion":
            levels = torch.rand(1, 6, generator=torch.Generator().manual_seed(0))
            a, b = model.net(2 * frames - 1, actions, levels), loaded.net(2 * frames - 1, actions, levels)
        else:
            a, b = model.net(frames, actions), loaded.net(frames, actions)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["lssvwm", "mamba"])
def test_checkpoints_of_the_mamba1_architecture_are_refused(name, tmp_path):
    """lssvwm and mamba checkpoints written before their Mamba-2 blocks (no ``architecture`` entry:
    version 1) are refused by a check that says to retrain, not by a state-dict mismatch."""
    import json

    from safetensors.torch import save

    net = tiny(name, layers=1).net
    meta = {"format": "memorybench-zoo/1", "model": name, "config": net.config.to_dict()}
    old = tmp_path / "old.safetensors"
    old.write_bytes(
        save({k: v.contiguous() for k, v in net.state_dict().items()}, metadata={"memorybench": json.dumps(meta)})
    )
    with pytest.raises(MemorybenchError, match=f"{old}.*older architecture of '{name}'.*retrain"):
        load_model(name, {"checkpoint": str(old)})
    newer = tmp_path / "newer.safetensors"
    newer.write_bytes(
        save(
            {k: v.contiguous() for k, v in net.state_dict().items()},
            metadata={"memorybench": json.dumps({**meta, "architecture": 99})},
        )
    )
    with pytest.raises(MemorybenchError, match="version 99.*upgrade memorybench"):
        load_model(name, {"checkpoint": str(newer)})
    # what the models of an unchanged architecture wrote then still loads
    s4 = tiny("s4", layers=1).net
    legacy_s4 = tmp_path / "s4.safetensors"
    legacy_s4.write_bytes(
        save(
            dict(s4.state_dict()),
            metadata={
                "memorybench": json.dumps({"format": "memorybench-zoo/1", "model": "s4", "config": s4.config.to_dict()})
            },
        )
    )
    assert load_model("s4", {"checkpoint": str(legacy_s4)}).net.config == s4.config


def test_checkpoint_config_overrides(tmp_path):
    path = save_checkpoint(tiny("diffusion", layers=1).net, "diffusion", tmp_path / "d.safetensors")
    assert load_model("diffusion", {"checkpoint": str(path), "sampling_steps": 2}).net.config.sampling_steps == 2
    with pytest.raises(MemorybenchError, match="width cannot be changed"):
        load_model("diffusion", {"checkpoint": str(path), "width": 64})
    with pytest.raises(MemorybenchError, match="unknown config field"):
        load_model("diffusion", {"checkpoint": "none", "widht": 64})


def test_bad_checkpoints_are_clear_errors(tmp_path, monkeypatch):
    import re

    path = save_checkpoint(tiny("mamba", layers=1).net, "mamba", tmp_path / "model.safetensors")
    data = path.read_bytes()
    truncated, garbage = tmp_path / "truncated.safetensors", tmp_path / "garbage.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    garbage.write_bytes(b"\xff" * 64)
    for bad in (truncated, garbage):
        with pytest.raises(MemorybenchError, match=re.escape(str(bad)) + ".*truncated or corrupt"):
            load_model("mamba", {"checkpoint": str(bad)})
    with pytest.raises(MemorybenchError, match="does not exist"):
        load_model("mamba", {"checkpoint": str(tmp_path / "absent.safetensors")})
    with pytest.raises(MemorybenchError, match="holds a 'mamba' model, not 's4'"):
        load_model("s4", {"checkpoint": str(path)})
    monkeypatch.setattr("memorybench.zoo.common.baselines_dir", lambda: tmp_path / "baselines")
    with pytest.raises(MemorybenchError, match="memorybench train lssvwm"):
        load_model("lssvwm")


# ------------------------------------------------------------------------------------------------
# the adapter contract (default configs, random weights)


def check_output(pred: torch.Tensor, shape: tuple) -> None:
    assert pred.shape == shape and pred.dtype == torch.float32 and pred.device.type == "cpu"
    assert torch.isfinite(pred).all() and pred.min() >= 0 and pred.max() <= 1


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_adapter_contract_on_the_smoke_tasks(name):
    model = load_model(name, "checkpoint=none")
    for task in TASKS:
        spec = get_task(task, "smoke")
        eps = [get_generator(spec.family)(spec).generate(i) for i in (0, 1)]
        frames = torch.stack([torch.from_numpy(e.frames[:9]).permute(0, 3, 1, 2).float() / 255 for e in eps])
        actions = torch.stack([torch.from_numpy(e.actions[:9]) for e in eps])
        model.reset(spec, 2)
        model.observe(frames[:, :6], actions[:, :6])
        for t in range(6, 9):  # the rollout protocol: the model's own prediction is observed
            pred = model.predict(actions[:, t : t + 1])
            check_output(pred, (2, 1, 3, 32, 32))
            model.observe(pred, actions[:, t : t + 1])
    check_output(model.predict(actions[:, 6:8]), (2, 2, 3, 32, 32))  # several frames at once


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_runs_at_the_standard_resolution(name):
    spec = get_task("occlusion-recall", "standard")  # 64x64: an 8x8 token grid, 9 action components
    model = load_model(name, {"checkpoint": "none", "layers": 2})
    frames = torch.rand(1, 3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    actions = torch.randint(0, 3, (1, 4, 9), generator=torch.Generator().manual_seed(0))
    model.reset(spec, 1)
    model.observe(frames, actions[:, :3])
    check_output(model.predict(actions[:, 3:]), (1, 1, 3, 64, 64))
