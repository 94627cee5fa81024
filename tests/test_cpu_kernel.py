"""The compiled attention-probability kernel (``peftsum.modeling.cpu_kernel``) gives PyTorch's numbers.

Against ``softmax(scores.float() + mask).to(dtype) * keep`` and its autograd gradients, with the same
dropout bits (``fast_paths.keep_bits``): fp32 to float rounding, bf16 to bf16 rounding (the kernel's
softmax backward reads the bf16 probabilities, PyTorch's the fp32 ones). Masked columns (the mask's
fp32 minimum), row lengths that are and are not multiples of the kernel's 16 lanes, masks broadcast
over the batch or not, with and without a mask gradient, NaN rows, several threads. Then the
model: peftsum's attention with the kernel gives the PyTorch path's loss and gradients under real
dropout (p = 0.1, the same draws); with ``PEFTSUM_CPU_KERNEL=0`` the kernel is off. And the
inference side of peftsum's attention (the bias mask built once per stack) decodes exactly what
transformers' SDPA attention decodes.
Runs the same on AVX2-only and AMX machines (bf16 is emulated where not native: slower only).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from peftsum.modeling import cpu_kernel
from peftsum.modeling.fast_paths import keep_bits

pytestmark = pytest.mark.skipif(cpu_kernel._compiler() is None or not sys.platform.startswith("linux"),
                                reason="the kernel is built with a C compiler on Linux; none here")

MIN = torch.finfo(torch.float32).min


def inputs(dtype, batch=3, heads=2, q_len=5, k_len=37, mask_batch=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    scores = (torch.randn(batch, heads, q_len, k_len, generator=gen) * 3).to(dtype)
    mask = torch.randn(mask_batch, heads, q_len, k_len, generator=gen)
    mask[..., k_len - 7:] = MIN  # padded keys, as T5's bias mask has them
    torch.manual_seed(seed)
    bits, threshold, _ = keep_bits(scores.shape, 0.1)
    return scores, mask, bits, threshold


def torch_path(scores, mask, bits, threshold):
    return torch.softmax(scores.float() + mask, -1).to(scores.dtype) * (bits >= threshold)


def test_kernel_is_built_and_on():
    assert cpu_kernel.status().startswith("on"), cpu_kernel.status()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("k_len", [37, 64])
@pytest.mark.parametrize("mask_batch", [1, 3])
@pytest.mark.parametrize("mask_grad", [False, True])
def test_forward_and_backward_match_pytorch(dtype, k_len, mask_batch, mask_grad):
    scores, mask, bits, threshold = inputs(dtype, k_len=k_len, mask_batch=mask_batch)
    assert cpu_kernel.applies(scores, mask)
    grad = torch.randn(scores.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    s1, m1 = scores.clone().requires_grad_(), mask.clone().requires_grad_(mask_grad)
    want = torch_path(s1, m1, bits, threshold)
    want.backward(grad)
    s2, m2 = scores.clone().requires_grad_(), mask.clone().requires_grad_(mask_grad)
    got = cpu_kernel.attention_probs(s2, m2, bits, threshold)
    got.backward(grad)
    assert got.dtype == dtype and got.shape == want.shape
    assert torch.equal(got == 0, want == 0)  # the same elements dropped (and the padded keys at 0)
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(s2.grad, s1.grad, rtol=1e-4, atol=1e-6)
        if mask_grad:
            torch.testing.assert_close(m2.grad, m1.grad, rtol=1e-4, atol=1e-6)
    else:  # at most one bf16 step apart (rounding of an fp32 value a hair from a rounding boundary)
        steps = (got.float() - want.float()).abs() / want.float().abs().clamp_min(1e-30)
        assert (steps <= 2 ** -7).all() and (got == want).float().mean() > 0.99
        rel = (s2.grad.float() - s1.grad.float()).norm() / s1.grad.float().norm()
        assert rel < 1e-2  # measured ~2.5e-3: the backward reads bf16 probabilities
        if mask_grad:
            assert m2.grad.dtype == torch.float32 and m2.grad.shape == mask.shape
            assert ((m2.grad - m1.grad).norm() / m1.grad.norm()) < 1e-2
    if not mask_grad:
        assert m2.grad is None


def test_nan_rows_stay_nan_like_pytorch():
    scores, mask, bits, threshold = inputs(torch.float32)
    scores[1, 0, 2, 4] = float("nan")
    scores[0, 1, 3, 0] = float("inf")
    got = cpu_kernel.attention_probs(scores, mask, bits, -32768)  # nothing dropped
    want = torch.softmax(scores + mask, -1)
    assert torch.isnan(got[1, 0, 2]).all() and torch.isnan(got[0, 1, 3]).all()
    assert torch.isnan(want[1, 0, 2]).all()
    finite = ~torch.isnan(want).any(-1, keepdim=True).expand_as(want)
    torch.testing.assert_close(got[finite], want[finite], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_minus_infinity_masks_give_pytorchs_softmax(dtype):
    """-inf in the mask (a common custom-mask convention) or in the scores gives 0 there, as in PyTorch;
    a row of only -inf is NaN in both; a huge negative score plus finfo.min overflows to -inf: 0 too."""
    scores, mask, bits, _ = inputs(dtype)
    mask[..., 2:6] = float("-inf")
    mask[0, 1, 3] = float("-inf")  # one whole row
    scores[1, 0, 0, 30] = -3e38  # + finfo.min -> -inf in fp32
    s1, s2 = scores.clone().requires_grad_(), scores.clone().requires_grad_()
    want = torch.softmax(s1.float() + mask, -1).to(dtype)
    got = cpu_kernel.attention_probs(s2, mask, bits, -32768)  # nothing dropped
    assert torch.isnan(got[0, 1, 3]).all() and torch.isnan(want[0, 1, 3]).all()
    finite = ~torch.isnan(want)
    assert torch.isfinite(got[finite]).all() and torch.equal(got[finite] == 0, want[finite] == 0)
    torch.testing.assert_close(got[finite].float(), want[finite].float(), rtol=1e-5 if dtype == torch.float32 else 1e-2,
                               atol=1e-7)
    grad = torch.randn(want.shape, generator=torch.Generator().manual_seed(4)).to(dtype)
    grad[0, 1, 3] = 0
    (want * finite).backward(grad)
    (got.nan_to_num() * finite).backward(grad)
    rows = finite.all(-1)
    assert torch.isfinite(s2.grad[rows]).all()
    assert ((s2.grad[rows].float() - s1.grad[rows].float()).norm() / s1.grad[rows].float().norm().clamp_min(1e-12)) < 1e-2


def test_empty_inputs_and_bad_inputs():
    """Empty tensors go through (as PyTorch's dropout); wrong dtypes and shapes get a clear error, not a crash."""
    from peftsum.modeling.fast_paths import apply_dropout, keep_bits

    assert apply_dropout(torch.randn(0, 5), 0.1).shape == (0, 5)
    assert keep_bits((2, 2, 0, 5), 0.1)[0].shape == (2, 2, 0, 5)
    assert cpu_kernel.random_words(0).shape == (0,)
    scores, mask, bits, threshold = inputs(torch.float32)
    with pytest.raises(ValueError, match="bf16/fp32 scores"):
        cpu_kernel.attention_probs(scores.half(), mask, bits, threshold)
    with pytest.raises(ValueError, match="int16 bits"):
        cpu_kernel.attention_probs(scores, mask, bits.int(), threshold)
    with pytest.raises(ValueError, match="bf16/fp32 tensor"):
        cpu_kernel.dropout(torch.ones(4, dtype=torch.float64), -26214, 1.1)
    # non-contiguous scores: made contiguous, same result
    t = scores.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not t.is_contiguous()
    assert torch.equal(cpu_kernel.attention_probs(t, mask, bits, threshold),
                       cpu_kernel.attention_probs(scores, mask, bits, threshold))


def test_dropout_kernel_higher_order_gradients_match_pytorch():
    """Dropout is linear: its backward is the same dropout, differentiable again (a gradient penalty)."""
    from peftsum.modeling.fast_paths import keep_mask, threshold_and_scale

    def second_order(kernel: bool):
        torch.manual_seed(0)
        x = torch.randn(8, requires_grad=True)
        w = torch.randn(8, requires_grad=True)
        torch.manual_seed(1)
        if kernel:
            y = cpu_kernel.dropout(x, *threshold_and_scale(0.5))
        else:
            keep, scale = keep_mask(x.shape, 0.5)
            y = (x * keep).mul_(scale)
        (gx,) = torch.autograd.grad((y * w).sum() + (x * w).sum(), x, create_graph=True)
        gx.sum().backward()
        return w.grad

    assert torch.equal(second_order(True), second_order(False))


def test_threads_split_rows_without_changing_results():
    """Above PARALLEL_MIN_ELEMENTS the rows are split among torch's threads: each row is computed alone."""
    scores, mask, bits, threshold = inputs(torch.bfloat16, batch=2, heads=4, q_len=64, k_len=1040)
    assert scores.numel() >= cpu_kernel.PARALLEL_MIN_ELEMENTS
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = cpu_kernel.attention_probs(scores, mask, bits, threshold)
        torch.set_num_threads(3)  # more threads than this machine may have: still one writer per row
        three = cpu_kernel.attention_probs(scores, mask, bits, threshold)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, three)


def test_first_use_under_no_grad_and_inference_mode_builds_and_checks_it(tmp_path):
    """The library is built, loaded and self-checked (with autograd) at its first use, which may come under
    ``torch.no_grad`` or ``inference_mode`` (a training-mode forward without gradients)."""
    code = ("import torch\n"
            "from peftsum.modeling import cpu_kernel\n"
            "x = torch.ones(4, 1024, 256)\n"
            "with torch.inference_mode():\n"
            "    with torch.no_grad():\n"
            "        print(cpu_kernel.dropout_applies(x), cpu_kernel.status()[:2])\n"
            "        rate = (cpu_kernel.dropout(x, -26214, 1.1) == 0).float().mean().item()\n"
            "print(abs(rate - 0.1) < 0.01)\n")
    env = {**__import__("os").environ, "PEFTSUM_HOME": str(tmp_path)}  # a fresh build folder: built here
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "on", "True"]
    assert len(list((tmp_path / "kernels").glob("attn_probs-*.so"))) == 1


def test_a_compiler_command_with_arguments_builds(tmp_path):
    """``CC="ccache gcc"``-style values are split as a shell would split them."""
    import shutil

    code = "from peftsum.modeling import cpu_kernel; print(cpu_kernel.status()[:2])"
    env = {**__import__("os").environ, "PEFTSUM_HOME": str(tmp_path), "CC": f"{shutil.which('gcc') or 'cc'} -m64"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "on", (out.stdout, out.stderr)


def test_off_switch_and_unsupported_inputs():
    code = ("from peftsum.modeling import cpu_kernel; import torch; print(cpu_kernel.status()); "
            "print(cpu_kernel.applies(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, cpu_kernel.ENV: "0"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["off (PEFTSUM_CPU_KERNEL=0)", "False"]
    scores, mask, _, _ = inputs(torch.float32)
    assert not cpu_kernel.applies(scores.half(), mask)  # fp16 scores: PyTorch's ops
    assert cpu_kernel.applies(scores, mask.bfloat16())  # a bf16 mask: read as fp32
    assert not cpu_kernel.applies(scores, mask.half())
    assert not cpu_kernel.applies(scores.transpose(2, 3), mask)  # scores not contiguous (applies: no copy)
    assert not cpu_kernel.applies(scores, mask[:, :1])  # broadcast over heads: not taken


@pytest.mark.parametrize("bf16", [False, True])
def test_model_loss_and_gradients_with_and_without_the_kernel(tiny_model_dir, tiny_tokenizer, bf16, monkeypatch):
    """Real dropout (p = 0.1) in every attention layer of the tiny mT5, the same draws on both paths."""
    from test_fast_training import attention_dropout, batch, loss_and_grads

    from peftsum.modeling.load import load_model

    model, _ = load_model(str(tiny_model_dir))
    attention_dropout(model, 0.1)
    model.train()
    data = batch(tiny_tokenizer)
    calls = []
    real = cpu_kernel.attention_probs
    monkeypatch.setattr(cpu_kernel, "attention_probs", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(0)
    fast_loss, fast = loss_and_grads(model, data, bf16)
    layers = model.config.num_layers + 2 * model.config.num_decoder_layers
    assert len(calls) == layers  # every attention call of the forward went through the kernel
    monkeypatch.setattr(cpu_kernel, "applies", lambda *a: False)
    torch.manual_seed(0)
    plain_loss, plain = loss_and_grads(model, data, bf16)
    assert len(calls) == layers
    if not bf16:
        assert fast_loss == pytest.approx(plain_loss, rel=1e-5)
        for name, g in plain.items():
            torch.testing.assert_close(fast[name], g, rtol=1e-3, atol=1e-6, msg=name)
    else:
        assert fast_loss == pytest.approx(plain_loss, rel=1e-2)
        num = sum((fast[n] - g).pow(2).sum() for n, g in plain.items()).sqrt()
        den = sum(g.pow(2).sum() for g in plain.values()).sqrt()
        assert (num / den).item() < 0.02


def test_decoding_with_the_bias_mask_built_once_equals_sdpa(tiny_model_dir, tiny_tokenizer):
    """Inference through peftsum's attention (mask once per stack) decodes what transformers' SDPA decodes."""
    from peftsum.data.xlsum import load_split
    from peftsum.generation.decode import GenerationSettings, generate_summaries
    from peftsum.modeling.attention import NAME
    from peftsum.modeling.load import load_for_inference

    model, tok = load_for_inference(str(tiny_model_dir), "cpu")
    assert model.config._attn_implementation == NAME
    texts = [r["text"] for r in load_split("russian", "validation", "sample").rows[:6]]
    settings = GenerationSettings(num_beams=2, max_new_tokens=12)
    ours = generate_summaries(model, tok, texts, settings, max_source_length=128, progress=False)
    model.set_attn_implementation("sdpa")
    theirs = generate_summaries(model, tok, texts, settings, max_source_length=128, progress=False)
    assert ours == theirs and any(ours)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(4, 5, 33), (3, 16)])  # 660 elements (a partial last word), 48
def test_dropout_kernel_equals_the_keep_bits_path_bit_for_bit(dtype, shape):
    """Same seed, same mask: the kernel's dropout is apply_dropout's PyTorch path, forward and backward."""
    from peftsum.modeling.fast_paths import keep_mask, threshold_and_scale

    x0 = torch.randn(shape, generator=torch.Generator().manual_seed(2)).to(dtype)
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(3)).to(dtype)
    assert cpu_kernel.dropout_applies(x0)
    x1 = x0.clone().requires_grad_()
    torch.manual_seed(7)
    y1 = cpu_kernel.dropout(x1, *threshold_and_scale(0.1))
    y1.backward(grad)
    x2 = x0.clone().requires_grad_()
    torch.manual_seed(7)
    keep, scale = keep_mask(shape, 0.1)
    y2 = (x2 * keep).mul_(scale)
    y2.backward(grad)
    assert y1.dtype == dtype and torch.equal(y1, y2) and torch.equal(x1.grad, x2.grad)
    assert 0 < (y1 == 0).sum() < y1.numel() / 4  # some dropped, most kept (p = 0.1)


def test_dropout_kernel_statistics_and_threads():
    """p = 0.1 over 4M elements: the drop rate within 5 standard deviations; one thread or three, same result."""
    from peftsum.modeling.fast_paths import threshold_and_scale

    x = torch.ones(4, 1024, 1024)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        torch.manual_seed(0)
        one = cpu_kernel.dropout(x, *threshold_and_scale(0.1))
        torch.set_num_threads(3)
        torch.manual_seed(0)
        three = cpu_kernel.dropout(x, *threshold_and_scale(0.1))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, three)
    rate = (one == 0).double().mean().item()
    sd = (0.1 * 0.9 / x.numel()) ** 0.5
    assert abs(rate - 0.1) < 5 * sd
    assert one.max().item() == pytest.approx(1 / (1 - round(0.1 * 65536) / 65536))
    torch.manual_seed(1)
    assert not torch.equal(one, cpu_kernel.dropout(x, *threshold_and_scale(0.1)))  # another seed, another mask


def test_random_words_are_splitmix64_seeded_by_torch():
    """The words are SplitMix64's (first words for seed 0: Vigna's splitmix64.c), seeded by torch's generator."""
    lib = cpu_kernel._library()
    words = torch.empty(3, dtype=torch.int64)
    lib.peftsum_random_words(0, words.data_ptr(), 0, 3)
    assert [w & (2**64 - 1) for w in words.tolist()] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    torch.manual_seed(5)
    a = cpu_kernel.random_words(1000)
    torch.manual_seed(5)
    assert torch.equal(a, cpu_kernel.random_words(1000)) and not torch.equal(a, cpu_kernel.random_words(1000))
    bits = a.view(torch.int16).float()
    assert abs(bits.mean().item()) < 5 * 32768 / 3**0.5 / 4000**0.5  # uniform over int16: mean 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_columns_matches_pytorch(dtype, smoothing, monkeypatch):
    """The head's cross-entropy over vocab x n logits gives torch's cross_entropy (loss) and its gradient
    (left in the logits), with one thread and with the rows split among threads; a vocabulary of 50,021
    rows (not a multiple of the kernel's 32-row blocks) and logits spread wide enough that the rows'
    maxima differ by block."""
    g = torch.Generator().manual_seed(0)
    vocab, n = 50_021, 19
    logits = (torch.randn(n, vocab, generator=g) * 6).to(dtype)
    target = torch.randint(0, vocab, (n,), generator=g)
    target[3] = target[4]  # two tokens with the same label
    x = logits.float().requires_grad_()
    want = torch.nn.functional.cross_entropy(x, target, label_smoothing=smoothing)
    want.backward()
    tol = 5e-5 if dtype == torch.float32 else 8e-3  # bf16: rounded once to bf16 (2**-8); fp32: measured 1.9e-5
    results = []
    for threads in (1, 2):
        monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
        monkeypatch.setattr(cpu_kernel, "PARALLEL_MIN_ELEMENTS", 1)
        cols = logits.t().contiguous()
        nll, uniform = cpu_kernel.cross_entropy_columns(cols, target, smoothing)
        loss = nll.mean() if uniform is None else (1 - smoothing) * nll.mean() + smoothing * uniform.mean()
        assert (uniform is None) == (smoothing == 0)
        assert float(loss) == pytest.approx(float(want), rel=1e-6)
        grad = cols.t().float()
        assert ((grad - x.grad).norm() / x.grad.norm()).item() < tol
        results.append((loss, cols))
    assert torch.allclose(results[0][0], results[1][0], rtol=1e-6)
    assert torch.equal(results[0][1], results[1][1]) or dtype == torch.float32 and torch.allclose(
        results[0][1], results[1][1], rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_frozen_head_cross_entropy_matches_float64(dtype, smoothing, monkeypatch):
    """A frozen head's loss and input gradient by blocks of vocabulary rows equal the float64 cross-entropy of
    the same rounded logits: whole-vocabulary block, blocks that do not divide the 5,003 rows, one-row blocks
    at the ends of a target's range, one and two threads. The gradient is compared with float64 autograd
    (fp32: to 1e-6; bf16: within bf16's 2**-8, the whole-vocabulary kernel path's own bound)."""
    g = torch.Generator().manual_seed(0)
    vocab, n, d = 5003, 13, 24
    weight = (torch.randn(vocab, d, generator=g) * 0.8).to(dtype)
    hidden = torch.randn(n, d, generator=g).to(dtype)
    target = torch.randint(0, vocab, (n,), generator=g)
    target[:4] = torch.tensor([0, vocab - 1, 4096, 4095])  # the first and last rows, both sides of a block edge
    target[5] = target[6]
    logits = (weight.float() @ hidden.float().t()).to(dtype).double().t()  # n x vocab, rounded as the product rounds
    want = torch.nn.functional.cross_entropy(logits, target, label_smoothing=smoothing)
    aim = torch.full_like(logits, smoothing / vocab)
    aim[torch.arange(n), target] += 1 - smoothing
    want_grad = (torch.softmax(logits, dim=1) - aim) @ weight.double() / n  # d loss / d hidden, float64
    tol = 1e-6 if dtype == torch.float32 else 4e-3
    for threads in (1, 2):
        monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
        monkeypatch.setattr(cpu_kernel, "PARALLEL_MIN_ELEMENTS", 1)
        for rows in (vocab, 1000, 4096, 7, 1):
            if rows == 1 and threads == 2:
                continue  # 5,003 blocks: slow, and the one-thread pass covers it
            nll, uniform, grad = cpu_kernel.frozen_head_cross_entropy(weight, hidden, target, smoothing, rows)
            assert (uniform is None) == (smoothing == 0) and grad.dtype == torch.float32 and grad.shape == (n, d)
            loss = nll.mean() if uniform is None else (1 - smoothing) * nll.mean() + smoothing * uniform.mean()
            assert float(loss) == pytest.approx(float(want), rel=1e-6), (threads, rows)
            assert ((grad.double() - want_grad).norm() / want_grad.norm()).item() < tol, (threads, rows)


def test_frozen_head_cross_entropy_bad_inputs_and_no_tokens():
    w = torch.randn(50, 8)
    with pytest.raises(ValueError, match="must be vocab x d and n x d in one dtype"):
        cpu_kernel.frozen_head_cross_entropy(w, torch.randn(3, 8, dtype=torch.bfloat16), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="contiguous CPU bf16/fp32"):
        cpu_kernel.frozen_head_cross_entropy(torch.randn(8, 50).t(), torch.randn(3, 8), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="target has shape"):
        cpu_kernel.frozen_head_cross_entropy(w, torch.randn(3, 8), torch.zeros(4, dtype=torch.int64))
    for bad in (-1, 50):
        with pytest.raises(ValueError, match=r"label ids must lie in \[0, 50\); got"):
            cpu_kernel.frozen_head_cross_entropy(w, torch.randn(2, 8), torch.tensor([3, bad]))
    nll, uniform, grad = cpu_kernel.frozen_head_cross_entropy(w, torch.randn(0, 8), torch.zeros(0, dtype=torch.int64), 0.1)
    assert nll.shape == uniform.shape == (0,) and grad.shape == (0, 8)


def test_cross_entropy_columns_bad_inputs_and_nan():
    with pytest.raises(ValueError, match="contiguous CPU bf16/fp32 vocab x n"):
        cpu_kernel.cross_entropy_columns(torch.zeros(5, 3).t(), torch.zeros(5, dtype=torch.int64))
    with pytest.raises(ValueError, match="target has shape"):
        cpu_kernel.cross_entropy_columns(torch.zeros(5, 3), torch.zeros(4, dtype=torch.int64))
    logits = torch.randn(100, 3)
    logits[7, 1] = float("nan")
    nll, _ = cpu_kernel.cross_entropy_columns(logits, torch.tensor([0, 1, 2]))
    assert nll[1].isnan() and nll[0].isfinite() and nll[2].isfinite()  # a NaN logit: that token's loss is NaN


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.0, 0.1])
def test_gated_gelu_dropout_matches_pytorchs_three_kernels(dtype, p, monkeypatch):
    """dropout(gelu_tanh(a) * l) in one kernel: the same mask as apply_dropout after the same seed, values and
    gradients equal to PyTorch's GELUTanh, product and dropout to float rounding (bf16: each intermediate rounded
    as PyTorch's kernels round it, so almost every element is bit-equal), with one thread and with several;
    4 x 3 x 1003 elements (a partial last word of random bits)."""
    from peftsum.modeling.fast_paths import apply_dropout, threshold_and_scale

    g = torch.Generator().manual_seed(0)
    shape = (4, 3, 1003)
    a0 = (torch.randn(shape, generator=g) * 2).to(dtype)
    l0 = torch.randn(shape, generator=g).to(dtype)
    gy = torch.randn(shape, generator=g).to(dtype)

    def run(fused: bool, threads: int):
        monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
        monkeypatch.setattr(cpu_kernel, "PARALLEL_MIN_ELEMENTS", 1)
        a, l = a0.clone().requires_grad_(), l0.clone().requires_grad_()
        torch.manual_seed(5)
        if fused:
            y = cpu_kernel.gated_gelu_dropout(a, l, *threshold_and_scale(p))
        else:
            y = torch.nn.functional.gelu(a, approximate="tanh") * l
            y = apply_dropout(y, p) if p else y
        y.backward(gy)
        return y.detach(), a.grad, l.grad

    plain = run(False, 1)
    for threads in (1, 3):
        fused = run(True, threads)
        for name, got, want in zip(("output", "grad a", "grad l"), fused, plain):
            tol = 1e-5 if dtype == torch.float32 else 1e-3  # bf16: a few elements 1 ulp (2**-8) apart
            assert ((got.float() - want.float()).norm() / want.float().norm()).item() < tol, name
            if dtype == torch.bfloat16:
                assert (got == want).float().mean().item() > 0.98, name
        assert torch.equal(fused[0] == 0, plain[0] == 0)  # the same elements dropped
    assert torch.equal(run(True, 1)[0], run(True, 3)[0])
    with pytest.raises(ValueError, match="two CPU bf16/fp32 tensors of one shape"):
        cpu_kernel.gated_gelu_dropout(a0, l0[..., :5], *threshold_and_scale(p))


@pytest.mark.parametrize("bf16", [False, True])
def test_fused_feed_forward_gives_the_modules_loss_and_gradients(tiny_model_dir, tiny_tokenizer, bf16):
    """The tiny mT5 (gated-GELU feed-forward) with dropout 0.1 everywhere: loss and gradients with peftsum's
    fused feed-forward equal transformers' forward (GELUTanh, product, FastDropout) after the same seed."""
    from test_fast_training import batch, loss_and_grads

    from peftsum.modeling.fast_paths import fast_dropout
    from peftsum.modeling.load import load_model

    model, _ = load_model(str(tiny_model_dir))
    fast_dropout(model)
    fused = [m for m in model.modules() if type(m).__name__.startswith("Fused")
             and type(m).__name__.endswith("DenseGatedActDense")]
    assert len(fused) == model.config.num_layers + model.config.num_decoder_layers
    model.train()
    data = batch(tiny_tokenizer)
    calls = []
    real = cpu_kernel.gated_gelu_dropout
    cpu_kernel.gated_gelu_dropout = lambda *a: calls.append(1) or real(*a)
    try:
        torch.manual_seed(0)
        fast_loss, fast = loss_and_grads(model, data, bf16)
    finally:
        cpu_kernel.gated_gelu_dropout = real
    assert len(calls) == len(fused)
    against_the_modules(model, fused, data, bf16, (fast_loss, fast), loss_rel=2e-3, grad_rel=(1e-5, 1e-2))


def against_the_modules(model, fused, data, bf16, fast, loss_rel, grad_rel):
    """Undo peftsum's class swap on ``fused`` modules and compare the model's loss and gradients after the same seed
    with ``fast`` (loss, gradients): the loss to 1e-5 in fp32 and ``loss_rel`` in bf16, the gradients' relative
    distance below ``grad_rel`` (fp32, bf16)."""
    from test_fast_training import loss_and_grads

    for m in fused:
        m.__class__ = type(m).__bases__[0]
    torch.manual_seed(0)
    plain_loss, plain = loss_and_grads(model, data, bf16)
    fast_loss, fast = fast
    assert fast_loss == pytest.approx(plain_loss, rel=1e-5 if not bf16 else loss_rel)
    num = sum((fast[n] - g).pow(2).sum() for n, g in plain.items()).sqrt()
    den = sum(g.pow(2).sum() for g in plain.values()).sqrt()
    assert (num / den).item() < grad_rel[bool(bf16)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bits_drawn_in_the_kernel_and_a_key_mask_give_the_full_masks_result(dtype):
    """attention_probs without bits draws keep_bits' bits after the same seed; a (batch, kv_len) key mask on top of a
    broadcast bias gives what the full (batch, heads, q, kv) mask of their sum gives, and the bias the same
    gradient (summed over the batch)."""
    scores, bias, _, threshold = inputs(dtype, batch=3, k_len=37, mask_batch=1)
    key_mask = torch.zeros(3, 37)
    key_mask[1, 30:] = MIN  # row 1 padded
    grad = torch.randn(scores.shape, generator=torch.Generator().manual_seed(1)).to(dtype)

    def run(split: bool):
        s, b = scores.clone().requires_grad_(), bias.clone().requires_grad_()
        torch.manual_seed(7)
        if split:
            out = cpu_kernel.attention_probs(s, b, None, threshold, key_mask=key_mask)
        else:
            bits, _, _ = keep_bits(scores.shape, 0.1)
            out = cpu_kernel.attention_probs(s, b + key_mask[:, None, None, :], bits, threshold)
        out.backward(grad)
        return out.detach(), s.grad, b.grad

    for got, want in zip(run(True), run(False)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="key mask of shape"):
        cpu_kernel.attention_probs(scores, bias, None, threshold, key_mask=key_mask[:, :5])


def test_lora_input_dropout_gives_fast_dropouts_bf16_training_bit_for_bit(tiny_model_dir, tiny_tokenizer):
    """A LoRA model (lora_dropout 0.1) under bf16 autocast: LoRA's input dropouts that return bf16 directly give the
    same loss and adapter gradients, bit for bit, as FastDropout followed by autocast's cast."""
    from peft import LoraConfig, get_peft_model
    from test_fast_training import batch

    from peftsum.modeling.fast_paths import _fast_dropout_class, _lora_input_dropout_class, fast_dropout
    from peftsum.modeling.load import load_model

    model, _ = load_model(str(tiny_model_dir))
    model = get_peft_model(model, LoraConfig(task_type="SEQ_2_SEQ_LM", r=4, lora_alpha=8, lora_dropout=0.1,
                                             target_modules=["q", "v"]))
    fast_dropout(model)
    lora_drops = [m for n, m in model.named_modules() if ".lora_dropout." in n]
    assert lora_drops and all(type(m) is _lora_input_dropout_class() for m in lora_drops)
    model.train()
    data = batch(tiny_tokenizer)

    def run():
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(**data).loss
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    fast_loss, fast = run()
    for m in lora_drops:
        m.__class__ = _fast_dropout_class()
    plain_loss, plain = run()
    assert fast_loss == plain_loss and fast.keys() == plain.keys()
    for name, g in plain.items():
        assert torch.equal(fast[name], g), name


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_matches_t5_layer_norm(out_dtype, monkeypatch):
    """cpu_kernel.rms_norm gives transformers' T5LayerNorm (then the cast to out_dtype) and its gradients to float
    rounding, with the rows on one thread or split among several; 3 x 5 x 37 rows of width 50 (not a multiple of
    the kernel's 16 lanes)."""
    from transformers.models.t5.modeling_t5 import T5LayerNorm

    g = torch.Generator().manual_seed(0)
    norm = T5LayerNorm(50)
    norm.weight.data = torch.randn(50, generator=g) * 0.3 + 1
    x0 = torch.randn(3, 5, 37, 50, generator=g) * 3
    gy = torch.randn(3, 5, 37, 50, generator=g).to(out_dtype)
    x = x0.clone().requires_grad_()
    norm(x).to(out_dtype).backward(gy)
    want = (norm(x0).to(out_dtype), x.grad.clone(), norm.weight.grad.clone())
    for threads in (1, 3):
        monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
        monkeypatch.setattr(cpu_kernel, "PARALLEL_MIN_ELEMENTS", 1)
        norm.weight.grad = None
        x = x0.clone().requires_grad_()
        y = cpu_kernel.rms_norm(x, norm.weight, norm.variance_epsilon, out_dtype)
        y.backward(gy)
        assert y.dtype == out_dtype
        torch.testing.assert_close(y.float(), want[0].float(), rtol=1e-5 if out_dtype == torch.float32 else 8e-3,
                                   atol=1e-6)
        torch.testing.assert_close(x.grad, want[1], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(norm.weight.grad, want[2], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="rms_norm takes fp32 CPU x"):
        cpu_kernel.rms_norm(x0.bfloat16(), norm.weight, 1e-6)


@pytest.mark.parametrize("bf16", [False, True])
def test_fused_layer_norms_give_the_modules_loss_and_gradients(tiny_model_dir, tiny_tokenizer, bf16):
    """The tiny mT5 in training: loss and gradients with peftsum's fused layer norms (bf16 output under autocast)
    equal transformers' layer norms, to float rounding in fp32 and within bf16 rounding under autocast."""
    from test_fast_training import batch, loss_and_grads

    from peftsum.modeling.load import load_model

    model, _ = load_model(str(tiny_model_dir))
    fused = [m for m in model.modules() if type(m).__name__.startswith("Fused") and type(m).__name__.endswith("Norm")]
    assert len(fused) == 2 * model.config.num_layers + 3 * model.config.num_decoder_layers + 2
    model.train()
    data = batch(tiny_tokenizer)
    torch.manual_seed(0)
    against_the_modules(model, fused, data, bf16, loss_and_grads(model, data, bf16), loss_rel=5e-3,
                        grad_rel=(1e-4, 2e-2))
