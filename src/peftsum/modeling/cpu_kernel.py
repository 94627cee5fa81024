"""peftsum's compiled CPU kernels (``kernels/attn_probs.c``): T5 attention probabilities with dropout, and more.

One C library, built and self-checked at first use, holds: the attention-probability softmax +
dropout (:func:`attention_probs`, below), dropout in one pass each way with an optional cast
(:func:`dropout`), SplitMix64 random words (:func:`random_words`), the output head's cross-entropy
over vocab x tokens logits (:func:`cross_entropy_columns`), the gated feed-forward's core
(:func:`gated_gelu_dropout`) and T5's layer norm (:func:`rms_norm`). Each has an ``*_applies`` check;
where it says no (no compiler, other devices or dtypes, ``PEFTSUM_CPU_KERNEL=0``) the callers use
PyTorch's ops. Their effects are measured in ``benchmarks/README.md`` (sessions 8 and 9).

Profiling a bf16 training step of mT5-small on CPU (``benchmarks/steps.py train --profile``) puts
the attention-probability path first among the non-matmul work: per encoder layer the scores
(4 x 6 x 512 x 512 for the benchmark batch) go through a cast to fp32, the mask add, softmax, a cast
back, the dropout comparison and multiply, and as many kernels again in backward, each a full pass
over memory: ~27 ms forward + backward per layer on the 2-core AMX machine. The kernel does the
forward in one pass (read scores, mask and the dropout bits; write the probabilities and the dropped
probabilities) and the backward in one (``benchmarks/README.md``, levers: ~5 ms).

Same mathematics as ``softmax(scores.float() + mask).to(scores.dtype) * keep``; the differences are
rounding: the exponential (Cephes' polynomial, relative error < 1e-7, PyTorch's ~6e-8), the order of
the row sums, and for bf16 scores the softmax backward from the bf16 probabilities (PyTorch's
autograd keeps them in fp32 as well, 2x the memory): a relative gradient difference of ~2.5e-3, below
bf16's own 2**-8 (against fp64, the scores' gradient is 2.2-2.5e-3 off, PyTorch's 1.5-1.8e-3; the fp32
mask's, i.e. the position bias's, 1.4-1.9e-3, PyTorch's ~1e-7). ``tests/test_cpu_kernel.py`` checks
both precisions against PyTorch. Its random words are other draws than ``torch.randint``'s for the
same seed: a run is reproducible on one machine, not bit for bit between a machine with the kernel
and one without.

The C source is compiled at first use with the system's C compiler (``$CC``, else ``gcc`` or ``cc``;
``-O3 -march=native``, about 0.3 s) into ``$PEFTSUM_HOME/kernels`` (default ``~/.cache/peftsum``),
named by a hash of the source, the flags and the CPU's feature flags, and loaded with ``ctypes``
(no Python headers, no PyTorch extension build); a self-check against PyTorch must pass before it is
used. Where there is no compiler, the build fails, or ``PEFTSUM_CPU_KERNEL=0`` is set, peftsum's
attention keeps its PyTorch path (same results up to the rounding above). Rows are split among
``torch.get_num_threads()`` threads (``ctypes`` releases the GIL during the call).
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import sys
from pathlib import Path

ENV = "PEFTSUM_CPU_KERNEL"
"""Set to 0 to keep the PyTorch path (the kernel is neither built nor used)."""

SOURCE = "attn_probs.c"
FLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-fno-strict-aliasing", "-fno-math-errno", "-std=gnu99",
         "-shared", "-fPIC") + (("-mprefer-vector-width=512",) if platform.machine().lower() in ("x86_64", "amd64")
                                else ())
"""Compiler flags: FMA contraction, no errno for sqrt, and on x86-64 512-bit vectors where the CPU has them
(GCC's x86 option; other architectures build without it)."""
PARALLEL_MIN_ELEMENTS = 1 << 18
"""Below this many score elements one thread does the work (a thread hand-off costs ~50 us)."""

SPLITMIX64_SEED0 = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
"""The first three words of SplitMix64 seeded with 0 (Vigna's reference ``splitmix64.c``): the self-check's."""

_STATUS: dict[str, str] = {}


def kernel_dir() -> Path:
    """Where compiled kernels are kept: ``$PEFTSUM_HOME/kernels`` (default ``~/.cache/peftsum/kernels``)."""
    from peftsum.runtime import peftsum_home

    return peftsum_home() / "kernels"


def available() -> bool:
    """Whether the kernel library is built, checked and in use (builds it first if that was not tried yet)."""
    return _library() is not None


def status() -> str:
    """Why the kernel is or is not in use, one line (builds it first if that was not tried yet)."""
    _library()
    return _STATUS.get("status", "not tried")


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        return ""


def _compiler() -> list[str] | None:
    """The C compiler's command: ``$CC`` (split as a shell would: ``ccache gcc`` works), else gcc or cc."""
    import shlex
    import shutil

    if os.environ.get("CC", "").strip():
        return shlex.split(os.environ["CC"])
    found = shutil.which("gcc") or shutil.which("cc")
    return [found] if found else None


def _build(source: Path, cc: list[str]) -> Path:
    """Compile ``source`` into the kernel folder (atomically: a temporary name, then ``os.replace``)."""
    import subprocess
    import tempfile

    digest = hashlib.sha256(b"\0".join([source.read_bytes(), " ".join(FLAGS).encode(), " ".join(cc).encode(),
                                        _cpu_flags().encode(), sys.platform.encode()])).hexdigest()[:16]
    out = kernel_dir() / f"attn_probs-{digest}.so"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        done = subprocess.run([*cc, *FLAGS, "-o", tmp, str(source)], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise OSError(f"{' '.join(cc)} failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _declare(lib):
    import ctypes

    i64, i32, ptr = ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p
    for suffix in ("bf16", "f32"):
        getattr(lib, f"peftsum_attn_probs_fwd_{suffix}").argtypes = [ptr, ptr, ptr, ptr, ctypes.c_uint64, i32, ptr,
                                                                    ptr, i64, i64, i64, i64, i64, i64]
        getattr(lib, f"peftsum_attn_probs_bwd_{suffix}").argtypes = [ptr, ptr, ptr, ptr, ptr, i64, i64, i64, i32,
                                                                    i64, i64]
        getattr(lib, f"peftsum_attn_probs_fwd_{suffix}").restype = ctypes.c_int
        getattr(lib, f"peftsum_attn_probs_bwd_{suffix}").restype = ctypes.c_int
    lib.peftsum_random_words.argtypes = [ctypes.c_uint64, ptr, i64, i64]
    lib.peftsum_random_words.restype = None
    for suffix in ("bf16", "f32", "f32_bf16", "bf16_f32"):
        getattr(lib, f"peftsum_dropout_{suffix}").argtypes = [ptr, ptr, ctypes.c_uint64, i32, ctypes.c_float, i64,
                                                             i64, i64]
        getattr(lib, f"peftsum_dropout_{suffix}").restype = None
    for suffix in ("bf16", "f32"):
        getattr(lib, f"peftsum_xent_cols_stats_{suffix}").argtypes = [ptr, i64, i64, i64, ptr, ptr, ptr]
        getattr(lib, f"peftsum_xent_cols_stats_{suffix}").restype = ctypes.c_int
        getattr(lib, f"peftsum_xent_cols_grad_{suffix}").argtypes = [ptr, i64, i64, i64, ptr, ctypes.c_float,
                                                                    ctypes.c_float]
        getattr(lib, f"peftsum_xent_cols_grad_{suffix}").restype = None
        getattr(lib, f"peftsum_gated_gelu_fwd_{suffix}").argtypes = [ptr, ptr, ptr, ctypes.c_uint64, i32,
                                                                    ctypes.c_float, i64, i64, i64]
        getattr(lib, f"peftsum_gated_gelu_fwd_{suffix}").restype = None
        getattr(lib, f"peftsum_gated_gelu_bwd_{suffix}").argtypes = [ptr, ptr, ptr, ptr, ptr, ctypes.c_uint64, i32,
                                                                    ctypes.c_float, i64, i64, i64]
        getattr(lib, f"peftsum_gated_gelu_bwd_{suffix}").restype = None
        getattr(lib, f"peftsum_rms_norm_fwd_{suffix}").argtypes = [ptr, ptr, ptr, ptr, i64, ctypes.c_float, i64, i64]
        getattr(lib, f"peftsum_rms_norm_fwd_{suffix}").restype = None
        getattr(lib, f"peftsum_rms_norm_bwd_{suffix}").argtypes = [ptr, ptr, ptr, ptr, ptr, ptr, i64, i64, i64]
        getattr(lib, f"peftsum_rms_norm_bwd_{suffix}").restype = None
    return lib


@functools.cache
def _library():
    """The loaded kernel library, or None (the reason goes to :func:`status`)."""
    import ctypes

    if os.environ.get(ENV, "").strip().lower() in ("0", "false", "no", "off"):
        _STATUS["status"] = f"off ({ENV}=0)"
        return None
    if not sys.platform.startswith("linux"):
        _STATUS["status"] = f"off (built on Linux only; this is {sys.platform})"
        return None
    cc = _compiler()
    if cc is None:
        _STATUS["status"] = "off (no C compiler: set CC or install gcc)"
        return None
    from importlib.resources import as_file, files

    try:
        with as_file(files("peftsum.modeling") / "kernels" / SOURCE) as src:
            path = _build(Path(src), cc)
        lib = _declare(ctypes.CDLL(str(path)))
    except Exception as exc:  # any build or load failure: keep PyTorch's path
        _STATUS["status"] = f"off (build failed: {str(exc).strip()[:200]})"
        return None
    try:
        import torch

        with torch.inference_mode(False), torch.enable_grad():  # the first call may come under no_grad
            problem = _self_check(lib)
    except Exception as exc:  # noqa: BLE001 - a self-check that cannot run is a failed one
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        _STATUS["status"] = f"off (self-check failed: {problem})"
        return None
    _STATUS["status"] = f"on ({path})"
    return lib


def _self_check(lib) -> str:
    """Run the kernel forward and backward on small inputs against PyTorch; what differs ('' when all agree).

    Guards against a compiler that vectorizes the loops wrongly (it happened: see the C source).
    """
    import torch

    words = torch.empty(3, dtype=torch.int64, device="cpu")
    lib.peftsum_random_words(0, words.data_ptr(), 0, 3)
    if [w & U64 for w in words.tolist()] != SPLITMIX64_SEED0:
        return "random words differ from SplitMix64's"
    gen = torch.Generator().manual_seed(0)
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 1e-2)):
        scores = (torch.randn(2, 3, 5, 37, generator=gen) * 4).to(dtype)
        mask = torch.randn(1, 3, 5, 37, generator=gen)
        mask[..., 30:] = torch.finfo(torch.float32).min
        bits = torch.randint(-(2**15), 2**15, scores.shape, generator=gen, dtype=torch.int16)
        grad = torch.randn(scores.shape, generator=gen).to(dtype)
        probs, dropped = _forward(lib, scores, mask, bits, -26214)
        grad_scores, grad_mask = _backward(lib, grad, probs, dropped, tuple(mask.shape), True)
        s, m = scores.float().requires_grad_(), mask.clone().requires_grad_()
        want = torch.softmax(s + m, -1)
        (want * (bits >= -26214)).backward(grad.float())
        if not torch.allclose(probs.float(), want.detach(), rtol=tol, atol=1e-6):
            return f"{dtype} probabilities differ by {(probs.float() - want).abs().max().item():.3g}"
        if not torch.equal(dropped, torch.where(bits >= -26214, probs, torch.zeros((), dtype=dtype))):
            return f"{dtype} dropout mask differs"
        for name, got, ref in (("scores", grad_scores.float(), s.grad), ("mask", grad_mask, m.grad)):
            if ((got - ref).norm() / ref.norm()).item() > tol:
                return f"{dtype} gradient of the {name} differs by {((got - ref).norm() / ref.norm()).item():.3g}"
        # bits drawn inside the kernel = the stream's words; a key mask = the same added to the full mask
        words = torch.empty((scores.numel() + 3) // 4, dtype=torch.int64, device="cpu")
        lib.peftsum_random_words(12345, words.data_ptr(), 0, words.numel())
        stream = words.view(torch.int16)[:scores.numel()].view(scores.shape)
        key_mask = torch.zeros(scores.shape[0], scores.shape[3], device="cpu")
        key_mask[0, 3:9] = torch.finfo(torch.float32).min
        full_probs, full = _forward(lib, scores, mask + key_mask[:, None, None, :], stream, -26214)
        seeded_probs, seeded = _forward(lib, scores, mask, None, -26214, key_mask, 12345)
        if not torch.equal(full, seeded) or not torch.equal(full_probs, seeded_probs):
            return f"{dtype} in-kernel dropout bits or key mask differ"
    return ""


def _split(rows: int, elements: int):
    """``[start, end)`` ranges covering ``rows``, one per thread (one range below PARALLEL_MIN_ELEMENTS; none for 0)."""
    import torch

    if rows <= 0:
        return []
    threads = torch.get_num_threads() if elements >= PARALLEL_MIN_ELEMENTS else 1
    step = -(-rows // max(1, threads))
    return [(r, min(rows, r + step)) for r in range(0, rows, step)]


@functools.cache
def _pool(threads: int, pid: int):
    """A thread pool per size and process (a forked child has none of its parent's threads; note that
    PyTorch's own OpenMP work hangs in a child forked after the parent ran some: spawn, don't fork)."""
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(threads, thread_name_prefix="peftsum-kernel")


def _run(fn, ranges) -> None:
    """``fn(start, end)`` for each range: the first on this thread, the others on the pool's.

    Raises:
        MemoryError: a kernel could not allocate its scratch row (its C function returned non-zero).
    """
    if len(ranges) <= 1:
        codes = [fn(*r) for r in ranges]
    else:
        futures = [_pool(len(ranges) - 1, os.getpid()).submit(fn, *r) for r in ranges[1:]]
        codes = [fn(*ranges[0])] + [f.result() for f in futures]
    if any(codes):
        raise MemoryError("peftsum's CPU kernel could not allocate its scratch buffer (the machine is out of memory)")


def _run_parts(fn, ranges) -> None:
    """:func:`_run` of ``fn(i, start, end)``, ``i`` the range's index (the row of a per-range partial-result buffer)."""
    index = {r: i for i, r in enumerate(ranges)}
    _run(lambda r0, r1: fn(index[(r0, r1)], r0, r1), ranges)


def _suffix(dtype) -> str:
    import torch

    return "bf16" if dtype == torch.bfloat16 else "f32"


def _forward(lib, scores, mask, bits, threshold: int, key_mask=None, seed: int = 0):
    import torch

    batch, heads, q_len, k_len = scores.shape
    rows = heads * q_len
    probs, dropped = torch.empty_like(scores), torch.empty_like(scores)
    fn = getattr(lib, f"peftsum_attn_probs_fwd_{_suffix(scores.dtype)}")
    mask_stride = 0 if mask.shape[0] == 1 else rows * k_len
    _run(lambda r0, r1: fn(scores.data_ptr(), mask.data_ptr(), key_mask.data_ptr() if key_mask is not None else None,
                           bits.data_ptr() if bits is not None else None, seed & U64, threshold, probs.data_ptr(),
                           dropped.data_ptr(), batch, rows, k_len, mask_stride, r0, r1),
         _split(rows, scores.numel()))
    return probs, dropped


def _backward(lib, grad, probs, dropped, mask_shape, mask_grad: bool):
    import torch

    batch, heads, q_len, k_len = probs.shape
    rows = heads * q_len
    grad = grad.to(probs.dtype).contiguous()
    grad_scores = torch.empty_like(probs)
    grad_mask = torch.empty(mask_shape, dtype=torch.float32, device="cpu") if mask_grad else None
    fn = getattr(lib, f"peftsum_attn_probs_bwd_{_suffix(probs.dtype)}")
    _run(lambda r0, r1: fn(grad.data_ptr(), probs.data_ptr(), dropped.data_ptr(), grad_scores.data_ptr(),
                           grad_mask.data_ptr() if grad_mask is not None else None, batch, rows, k_len,
                           int(mask_shape[0] != 1), r0, r1),
         _split(rows, probs.numel()))
    return grad_scores, grad_mask


@functools.cache
def _function():
    import torch
    from torch.autograd.function import once_differentiable

    class AttentionProbs(torch.autograd.Function):
        """``softmax(scores + mask)`` with the dropout mask of ``bits >= threshold`` applied (not scaled)."""

        @staticmethod
        def forward(ctx, scores, mask, bits, threshold, key_mask, seed):
            probs, dropped = _forward(_library(), scores, mask, bits, threshold, key_mask, seed)
            ctx.save_for_backward(probs, dropped)
            ctx.mask_shape = tuple(mask.shape)
            return dropped

        @staticmethod
        @once_differentiable
        def backward(ctx, grad):
            probs, dropped = ctx.saved_tensors
            grad_scores, grad_mask = _backward(_library(), grad, probs, dropped, ctx.mask_shape,
                                               ctx.needs_input_grad[1])
            return grad_scores, grad_mask, None, None, None, None

    return AttentionProbs


def _seed() -> int:
    """A 64-bit seed from torch's global CPU generator (one draw, as ``torch.randint`` of one word).

    Signed (an int64: autograd's ``apply`` passes it through C++ under some modes); the kernel
    reads it as unsigned (:data:`U64`).
    """
    import torch

    return int(torch.randint(-(2**63), 2**63 - 1, (1,), dtype=torch.int64).item())


U64 = 2**64 - 1
"""Mask that turns a signed 64-bit seed into the unsigned one the C functions take."""


def random_words(n: int):
    """``n`` random 64-bit words (an ``int64`` CPU tensor), or None where the kernel is not available.

    SplitMix64 words (Steele, Lea & Flood, OOPSLA 2014) from a seed drawn from torch's global CPU
    generator, so ``torch.manual_seed`` and activation checkpointing's RNG-state restore reproduce
    them; 0.5 ns per word on one core of the AMX machine against torch.randint's 3.6 ns
    (``benchmarks/README.md``). The words depend on (seed, position) only: the split among threads
    changes nothing.
    """
    import torch

    lib = _library()
    if lib is None:
        return None
    seed = _seed()
    out = torch.empty(n, dtype=torch.int64, device="cpu")
    _run(lambda r0, r1: lib.peftsum_random_words(seed & U64, out.data_ptr(), r0, r1), _split(n, n * 4))
    return out


def _dropout_run(x, seed: int, threshold: int, scale: float, out_dtype=None):
    import torch

    out = torch.empty_like(x, dtype=out_dtype or x.dtype)
    words = -(-x.numel() // 4)
    suffix = _suffix(x.dtype) if out.dtype == x.dtype else f"{_suffix(x.dtype)}_{_suffix(out.dtype)}"
    fn = getattr(_library(), f"peftsum_dropout_{suffix}")
    _run(lambda w0, w1: fn(x.data_ptr(), out.data_ptr(), seed & U64, threshold, scale, x.numel(), w0, w1),
         _split(words, x.numel()))
    return out


@functools.cache
def _dropout_function():
    import torch

    class Dropout(torch.autograd.Function):
        """Inverted dropout in one pass each way; the mask is drawn again from its seed in backward."""

        @staticmethod
        def forward(ctx, x, seed, threshold, scale, out_dtype=None):
            ctx.args = (seed, threshold, scale)
            ctx.in_dtype = x.dtype
            return _dropout_run(x.contiguous(), seed, threshold, scale, out_dtype)

        @staticmethod
        def backward(ctx, grad):
            # dropout is linear and its own adjoint: the gradient is the same dropout of the gradient (cast back to
            # the input's dtype), applied through this Function so that it is differentiable again
            return Dropout.apply(grad, *ctx.args, ctx.in_dtype), None, None, None, None

    return Dropout


def dropout_applies(x) -> bool:
    """Whether :func:`dropout` takes ``x``: a CPU tensor in bf16 or fp32, and the kernel built."""
    import torch

    return x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float32) and _library() is not None


def dropout(x, threshold: int, scale: float, out_dtype=None):
    """Training-mode dropout of ``x`` in one pass (and one pass backward), no mask stored.

    Args:
        x: a CPU tensor in bf16 or fp32 (check :func:`dropout_applies`).
        threshold, scale: :func:`peftsum.modeling.fast_paths.keep_bits`' keep threshold and survivors' factor.
        out_dtype: bf16 or fp32 for the result (default: ``x``'s): the dropped values rounded to it in the
            same pass, as a cast after the dropout would (the gradient comes back in ``x``'s dtype).

    Returns:
        ``x * keep * scale`` (same shape, differentiable), with ``keep`` the mask ``keep_bits`` draws
        after the same seed: the result equals ``apply_dropout``'s through ``keep_bits`` (then ``.to(out_dtype)``)
        bit for bit (``tests/test_cpu_kernel.py``).
    """
    import torch

    if not dropout_applies(x) or out_dtype not in (None, torch.bfloat16, torch.float32):
        raise ValueError(f"cpu_kernel.dropout takes a CPU bf16/fp32 tensor and a bf16/fp32 out_dtype (and the kernel "
                         f"built: {status()}); got {x.dtype} on {x.device}, out_dtype {out_dtype}")
    return _dropout_function().apply(x, _seed(), int(threshold), float(scale), out_dtype)


def applies(scores, mask) -> bool:
    """Whether :func:`attention_probs` takes these tensors (else use PyTorch's ops).

    Scores: a contiguous CPU ``(batch, heads, q_len, kv_len)`` tensor in bf16 or fp32; mask: an fp32
    or bf16 tensor of shape ``(batch or 1, heads, q_len, kv_len)`` (T5's cross-attention mask is bf16
    under autocast); and the kernel built.
    """
    import torch

    floats = (torch.bfloat16, torch.float32)
    return (scores.device.type == "cpu" and scores.dtype in floats and scores.dim() == 4
            and scores.is_contiguous() and mask is not None and mask.dtype in floats and mask.dim() == 4
            and mask.device.type == "cpu" and mask.shape[0] in (1, scores.shape[0])
            and tuple(mask.shape[1:]) == tuple(scores.shape[1:]) and _library() is not None)


def attention_probs(scores, mask, bits, threshold: int, key_mask=None):
    """Attention probabilities with dropout applied, unscaled: ``softmax(scores + mask [+ key_mask]) * keep``.

    Args:
        scores: ``(batch, heads, q_len, kv_len)`` attention scores (bf16 or fp32, contiguous, CPU).
        mask: additive mask (position bias and padding/causal mask, or the bias alone with ``key_mask``)
            of shape ``(batch or 1, heads, q_len, kv_len)``, read in fp32 (as ``scores.float() + mask``
            would promote it); gets a gradient when it requires one (summed over the batch when broadcast).
        bits: :func:`peftsum.modeling.fast_paths.keep_bits`' draw (``int16``, scores' shape), or None to
            draw the same bits inside the kernel (one seed from torch's generator, as ``keep_bits`` draws
            it: the same mask after the same ``torch.manual_seed``, no ``int16`` tensor written and read).
        threshold: the keep threshold (kept: bits >= it).
        key_mask: an optional additive key-padding mask ``(batch, kv_len)`` (0 or a large negative
            number; no gradient), added to every query row.

    Returns:
        The dropped probabilities in the scores' dtype (the softmax in fp32, rounded once); the caller
        scales the attention output by the survivors' factor.

    Raises:
        RuntimeError: the kernel is not available (check :func:`applies` first).
        ValueError: shapes or dtypes the kernel does not take.
    """
    import torch

    if _library() is None:
        raise RuntimeError(f"peftsum's attention kernel is {status()}")
    if not applies(scores.contiguous(), mask):
        raise ValueError(f"attention_probs takes CPU bf16/fp32 scores (batch, heads, q_len, kv_len) and a mask of shape "
                         f"(1 or batch, heads, q_len, kv_len); got scores {tuple(scores.shape)} {scores.dtype}, "
                         f"mask {tuple(mask.shape)} {mask.dtype}")
    if bits is not None and (bits.dtype != torch.int16 or tuple(bits.shape) != tuple(scores.shape)):
        raise ValueError(f"attention_probs takes int16 bits of the scores' shape {tuple(scores.shape)}; "
                         f"got {tuple(bits.shape)} {bits.dtype}")
    if key_mask is not None and tuple(key_mask.shape) != (scores.shape[0], scores.shape[3]):
        raise ValueError(f"attention_probs takes a key mask of shape (batch, kv_len) = "
                         f"{(scores.shape[0], scores.shape[3])}; got {tuple(key_mask.shape)}")
    seed = 0 if bits is not None else _seed()
    return _function().apply(scores.contiguous(), mask.float().contiguous(),
                             bits.contiguous() if bits is not None else None, int(threshold),
                             key_mask.float().contiguous() if key_mask is not None else None, seed)


def cross_entropy_applies(logits_t) -> bool:
    """Whether :func:`cross_entropy_columns` takes ``logits_t``: contiguous CPU bf16/fp32 ``vocab x n``, kernel
    built."""
    import torch

    return (logits_t.device.type == "cpu" and logits_t.dtype in (torch.bfloat16, torch.float32)
            and logits_t.dim() == 2 and logits_t.is_contiguous() and _library() is not None)


def cross_entropy_columns(logits_t, target, smoothing: float = 0.0):
    """Per-token cross-entropy of column-major logits, turning them in place into the mean loss's gradient.

    Args:
        logits_t: ``vocab x n`` logits (column j: token j's logits over the vocabulary), bf16 or fp32,
            contiguous, CPU: ``weight @ hidden.T``. Overwritten with the gradient of the token-mean loss
            with respect to the logits, ``(softmax - (1 - eps) onehot - eps / vocab) / n``, in the same dtype.
        target: ``n`` label ids (int64; none may be -100).
        smoothing: label smoothing ``eps`` in ``[0, 1)`` (``torch.nn.CrossEntropyLoss``'s definition).

    Returns:
        ``(nll, uniform)``: fp32 ``n``-vectors of ``logsumexp - logit[target]`` and, with smoothing,
        ``logsumexp - mean(logits)`` (None without), in nats. The softmax statistics are accumulated in
        fp32 by blocks of rows (one exponential per element); rows are split among the threads.

    Raises:
        ValueError: the tensors are not what the kernel takes (check :func:`cross_entropy_applies`).
    """
    import torch

    if not cross_entropy_applies(logits_t):
        raise ValueError(f"cross_entropy_columns takes contiguous CPU bf16/fp32 vocab x n logits (and the kernel "
                         f"built: {status()}); got {tuple(logits_t.shape)} {logits_t.dtype} on {logits_t.device}")
    vocab, n = logits_t.shape
    if tuple(target.shape) != (n,):
        raise ValueError(f"cross_entropy_columns: target has shape {tuple(target.shape)}, the logits {n} columns")
    with torch.no_grad():
        return _cross_entropy_columns(logits_t, target, smoothing)


def _cross_entropy_columns(logits_t, target, smoothing: float):
    import torch

    vocab, n = logits_t.shape
    if n == 0:  # no scored token: an empty loss (its mean is NaN, as cross_entropy's over no element)
        return torch.empty(0, dtype=torch.float32, device="cpu"), (
            torch.empty(0, dtype=torch.float32, device="cpu") if smoothing > 0 else None)
    lib, suffix = _library(), _suffix(logits_t.dtype)
    cols = torch.arange(n, device="cpu")
    target = target.to(torch.int64)
    picked = logits_t[target, cols].float()
    lse64, total, ranges = _column_stats(lib, suffix, logits_t)
    lse = lse64.float()
    nll = (lse64 - picked.double()).float()
    uniform = (lse64 - total / vocab).float() if smoothing > 0 else None
    off = smoothing / (vocab * n)
    grad_fn = getattr(lib, f"peftsum_xent_cols_grad_{suffix}")
    lse = lse.contiguous()
    _run(lambda v0, v1: grad_fn(logits_t.data_ptr(), n, v0, v1, lse.data_ptr(), 1.0 / n, off), ranges)
    logits_t[target, cols] = (torch.exp(picked - lse) / n - (1.0 - smoothing) / n - off).to(logits_t.dtype)
    return nll, uniform


def _column_stats(lib, suffix: str, logits_t):
    """Per column of ``vocab x n`` logits: ``(logsumexp, sum of the logits, the row ranges)``, fp64 ``n``-vectors;
    each thread's range of rows gives its maximum and sum of exponentials, merged here (log-sum-exp of the parts)."""
    import torch

    vocab, n = logits_t.shape
    ranges = _split(vocab, logits_t.numel())
    # per range: [0] the sum of exp(logit - the range's maximum), [1] the sum of the logits
    stats = torch.empty(len(ranges), 2, n, dtype=torch.float64, device="cpu")
    stat_fn = getattr(lib, f"peftsum_xent_cols_stats_{suffix}")
    maxima = torch.empty(len(ranges), n, dtype=torch.float32, device="cpu")
    _run_parts(lambda i, v0, v1: stat_fn(logits_t.data_ptr(), n, v0, v1, maxima[i].data_ptr(), stats[i, 0].data_ptr(),
                                         stats[i, 1].data_ptr()), ranges)
    top = maxima.double().amax(dim=0)
    lse64 = top + (stats[:, 0] * torch.exp(maxima.double() - top)).sum(dim=0).log()
    return lse64, stats[:, 1].sum(dim=0), ranges


HEAD_BLOCK_ROWS = 32768
"""Vocabulary rows per block of :func:`frozen_head_cross_entropy` (mT5: 8 blocks; the block's logits
for the benchmark's 231 target tokens are 15 MB in bf16, 30 MB in fp32, instead of 116 / 231 MB for
the whole vocabulary). Head + loss of 231 tokens on the 2-core AMX machine, bf16: whole vocabulary
151.5 ms, blocks of 32,768 / 65,536 / 131,072 rows 160.3 / 160.1 / 154.1 ms (interleaved; 4,096 and
8,192 rows: +45% and +20%); fp32 475 -> 502 ms; ``benchmarks/README.md``, session 12."""


def frozen_head_cross_entropy(weight, hidden, target, smoothing: float = 0.0, block_rows: int | None = None):
    """Cross-entropy of a frozen head's logits ``weight @ hidden.T`` and its gradient for ``hidden``, a block
    of vocabulary rows at a time: the vocab x n logits are never held whole.

    For each block ``B`` of rows: its logits ``L_B = W_B @ H^T`` (compute dtype, into one reused scratch), their
    per-token log-sum-exp ``lse_B`` (the kernel's fp64 running sums), the block's own softmax
    ``P_B = exp(L_B - lse_B)`` in place, and ``A_B = P_B^T @ W_B`` (n x d). With ``lse = logsumexp_B lse_B``
    the gradient of the token-mean loss is ``(sum_B exp(lse_B - lse) A_B - (1 - eps) W[target] - eps mean_v W_v) / n``,
    the same quantity as the softmax-minus-onehot product :func:`cross_entropy_columns` leaves for
    ``logits.T @ W`` (equal to bf16 rounding; ``tests/test_cpu_kernel.py``), and each softmax weight is
    rounded relative to its block's sum rather than to the whole vocabulary's.

    Args:
        weight: ``vocab x d`` head weight, contiguous CPU bf16 or fp32 (the compute dtype).
        hidden: ``n x d`` head inputs of the scored tokens, same dtype.
        target: ``n`` label ids (no -100).
        smoothing: label smoothing ``eps`` in ``[0, 1)`` (``torch.nn.CrossEntropyLoss``'s definition).
        block_rows: vocabulary rows per block (default :data:`HEAD_BLOCK_ROWS`).

    Returns:
        ``(nll, uniform, grad_hidden)``: fp32 ``n``-vectors ``logsumexp - logit[target]`` and, with smoothing,
        ``logsumexp - mean(logits)`` (None without), in nats, and the fp32 ``n x d`` gradient of the mean loss
        with respect to ``hidden``.

    Raises:
        ValueError: tensors the kernel does not take (see :func:`cross_entropy_applies`), shapes that
            disagree, or a label id outside the vocabulary.
    """
    import torch

    if weight.dim() != 2 or hidden.dim() != 2 or weight.shape[1] != hidden.shape[1] or weight.dtype != hidden.dtype:
        raise ValueError(f"frozen_head_cross_entropy: weight {tuple(weight.shape)} {weight.dtype} and hidden "
                         f"{tuple(hidden.shape)} {hidden.dtype} must be vocab x d and n x d in one dtype")
    if not cross_entropy_applies(weight) or hidden.device.type != "cpu":
        raise ValueError(f"frozen_head_cross_entropy takes contiguous CPU bf16/fp32 tensors (and the kernel built: "
                         f"{status()}); got {weight.dtype} on {weight.device}")
    if tuple(target.shape) != (hidden.shape[0],):
        raise ValueError(f"frozen_head_cross_entropy: target has shape {tuple(target.shape)}, hidden {hidden.shape[0]} rows")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= weight.shape[0]):
        raise ValueError(f"frozen_head_cross_entropy: label ids must lie in [0, {weight.shape[0]}); got "
                         f"{int(target.min())}..{int(target.max())}")
    rows = HEAD_BLOCK_ROWS if block_rows is None else block_rows
    with torch.no_grad(), torch.autocast("cpu", enabled=False):  # products in the given dtype, as documented
        return _frozen_head(weight, hidden, target.to(torch.int64), float(smoothing), max(1, int(rows)))


_HEAD_SCRATCH: dict = {}
"""dtype -> one flat CPU buffer for a block's logits, kept between calls and grown as needed."""


def _head_scratch(numel: int, dtype):
    """A reused buffer of at least ``numel`` elements for :func:`frozen_head_cross_entropy`'s block logits.

    A batch's target-token count changes from step to step; a fresh block-sized tensor each time would
    not always fit the hole the last one left among a step's allocations, and the heap would grow and
    fault new pages in (what a whole-vocabulary buffer of the same kind cost before: +0.15 s on every
    other LoRA step, ``benchmarks/README.md`` session 9). Grown with 25% spare (16-34 MB for mT5's
    blocks at ~256 target tokens).
    """
    import torch

    buf = _HEAD_SCRATCH.get(dtype)
    if buf is None or buf.numel() < numel:
        with torch.inference_mode(False):  # a normal tensor even when first made under inference_mode
            _HEAD_SCRATCH[dtype] = buf = torch.empty(numel + numel // 4, dtype=dtype)
    return buf


def _frozen_head(weight, hidden, target, smoothing: float, block_rows: int):
    import torch

    vocab, d = weight.shape
    n = hidden.shape[0]
    if n == 0:
        empty = torch.empty(0, dtype=torch.float32)
        return empty, (empty.clone() if smoothing > 0 else None), torch.zeros(0, d, dtype=torch.float32)
    lib, suffix = _library(), _suffix(weight.dtype)
    grad_fn = getattr(lib, f"peftsum_xent_cols_grad_{suffix}")
    blocks = [(v0, min(vocab, v0 + block_rows)) for v0 in range(0, vocab, block_rows)]
    scratch = _head_scratch(min(block_rows, vocab) * n, weight.dtype)
    h_t = hidden.t()
    lse = torch.full((n,), float("-inf"), dtype=torch.float64)  # log-sum-exp of the blocks so far
    acc = torch.zeros(n, d, dtype=torch.float64)  # sum_B exp(lse_B - lse) P_B^T W_B over those blocks (fp64: <1 MB)
    total = torch.zeros(n, dtype=torch.float64) if smoothing > 0 else None
    picked = torch.empty(n, dtype=torch.float32)
    for v0, v1 in blocks:
        rows = weight[v0:v1]
        logits = torch.mm(rows, h_t, out=scratch[:(v1 - v0) * n].view(v1 - v0, n))
        here = ((target >= v0) & (target < v1)).nonzero().squeeze(1)
        picked[here] = logits[target[here] - v0, here].float()
        lse_b, total_b, ranges = _column_stats(lib, suffix, logits)
        if total is not None:
            total += total_b
        lse32 = lse_b.float()
        _run(lambda r0, r1: grad_fn(logits.data_ptr(), n, r0, r1, lse32.data_ptr(), 1.0, 0.0), ranges)
        mean_rows = logits.t() @ rows  # the block's softmax-weighted mean of its rows (n x d)
        merged = torch.logaddexp(lse, lse_b)
        acc.mul_(torch.exp(lse - merged).unsqueeze(1))  # exp(-inf) = 0 for the first block
        acc.add_(mean_rows.double() * torch.exp(lse_b - merged).unsqueeze(1))
        lse = merged
    acc.sub_(weight[target].double(), alpha=1.0 - smoothing)
    if smoothing > 0:
        acc.sub_(torch.mean(weight, dim=0, dtype=torch.float32).double(), alpha=smoothing)
    grad = acc.div_(n).float()
    nll = (lse - picked.double()).float()
    uniform = (lse - total / vocab).float() if smoothing > 0 else None
    return nll, uniform, grad


@functools.cache
def _gated_function():
    import torch
    from torch.autograd.function import once_differentiable

    class GatedGeluDropout(torch.autograd.Function):
        """``dropout(gelu_tanh(a) * l)`` in one pass each way; the mask drawn again from its seed in backward."""

        @staticmethod
        def forward(ctx, a, l, seed, threshold, scale):
            ctx.args = (seed, threshold, scale)
            ctx.save_for_backward(a, l)
            y = torch.empty_like(a)
            fn = getattr(_library(), f"peftsum_gated_gelu_fwd_{_suffix(a.dtype)}")
            _run(lambda w0, w1: fn(a.data_ptr(), l.data_ptr(), y.data_ptr(), seed & U64, threshold, scale, a.numel(),
                                   w0, w1), _split(-(-a.numel() // 4), a.numel()))
            return y

        @staticmethod
        @once_differentiable
        def backward(ctx, grad):
            a, l = ctx.saved_tensors
            seed, threshold, scale = ctx.args
            grad = grad.to(a.dtype).contiguous()
            da, dl = torch.empty_like(a), torch.empty_like(l)
            fn = getattr(_library(), f"peftsum_gated_gelu_bwd_{_suffix(a.dtype)}")
            _run(lambda w0, w1: fn(a.data_ptr(), l.data_ptr(), grad.data_ptr(), da.data_ptr(), dl.data_ptr(),
                                   seed & U64, threshold, scale, a.numel(), w0, w1),
                 _split(-(-a.numel() // 4), a.numel()))
            return da, dl, None, None, None

    return GatedGeluDropout


def gated_gelu_applies(a, l) -> bool:
    """Whether :func:`gated_gelu_dropout` takes ``a`` and ``l``: CPU, same shape and dtype (bf16 or fp32), kernel
    built."""
    import torch

    return (a.device.type == "cpu" and l.device.type == "cpu" and a.dtype == l.dtype
            and a.dtype in (torch.bfloat16, torch.float32) and a.shape == l.shape and _library() is not None)


def gated_gelu_dropout(a, l, threshold: int, scale: float):
    """mT5's gated feed-forward core, ``dropout(gelu_tanh(a) * l)``, in one pass forward and one backward.

    Args:
        a: ``wi_0``'s output; l: ``wi_1``'s (same shape; CPU, bf16 or fp32: :func:`gated_gelu_applies`).
        threshold, scale: :func:`peftsum.modeling.fast_paths.threshold_and_scale` of the dropout ``p``
            (``p = 0``: threshold -32768, scale 1, nothing dropped).

    Returns:
        The dropped product, same shape and dtype: what ``GELUTanh``, the product and
        :func:`peftsum.modeling.fast_paths.apply_dropout` compute (each result rounded to the dtype as
        those three kernels round it; the mask is the one ``keep_bits`` draws after the same seed).
        Gradients reach ``a`` and ``l`` (PyTorch's ``gelu_backward`` formula); nothing but the inputs is saved.
    """
    if not gated_gelu_applies(a, l):
        raise ValueError(f"gated_gelu_dropout takes two CPU bf16/fp32 tensors of one shape and dtype (and the kernel "
                         f"built: {status()}); got {tuple(a.shape)} {a.dtype} and {tuple(l.shape)} {l.dtype}")
    return _gated_function().apply(a.contiguous(), l.contiguous(), _seed(), int(threshold), float(scale))


@functools.cache
def _rms_norm_function():
    import torch
    from torch.autograd.function import once_differentiable

    class RMSNorm(torch.autograd.Function):
        """T5's layer norm of fp32 rows in one pass each way; see :func:`rms_norm`."""

        @staticmethod
        def forward(ctx, x, weight, eps, out_dtype):
            d = x.shape[-1]
            rows = x.numel() // d if d else 0
            y = torch.empty(x.shape, dtype=out_dtype, device="cpu")
            rstd = torch.empty(rows, dtype=torch.float32, device="cpu")
            fn = getattr(_library(), f"peftsum_rms_norm_fwd_{_suffix(out_dtype)}")
            _run(lambda r0, r1: fn(x.data_ptr(), weight.data_ptr(), y.data_ptr(), rstd.data_ptr(), d, eps, r0, r1),
                 _split(rows, x.numel()))
            ctx.save_for_backward(x, weight, rstd)
            return y

        @staticmethod
        @once_differentiable
        def backward(ctx, grad):
            x, weight, rstd = ctx.saved_tensors
            d = x.shape[-1]
            rows = rstd.numel()
            grad = grad.contiguous()
            dx = torch.empty_like(x)
            ranges = _split(rows, x.numel())
            parts = torch.empty(max(1, len(ranges)), d, dtype=torch.float32, device="cpu")
            if not ranges:
                parts.zero_()
            fn = getattr(_library(), f"peftsum_rms_norm_bwd_{_suffix(grad.dtype)}")
            _run_parts(lambda i, r0, r1: fn(grad.data_ptr(), x.data_ptr(), weight.data_ptr(), rstd.data_ptr(),
                                            dx.data_ptr(), parts[i].data_ptr(), d, r0, r1), ranges)
            return dx, parts.sum(dim=0) if ctx.needs_input_grad[1] else None, None, None

    return RMSNorm


def rms_norm_applies(x, weight) -> bool:
    """Whether :func:`rms_norm` takes ``x`` and ``weight``: fp32 CPU tensors, ``weight`` of ``x``'s last size; kernel built."""
    import torch

    return (x.device.type == "cpu" and weight.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and weight.dim() == 1 and x.dim() >= 1
            and x.shape[-1] == weight.shape[0] and _library() is not None)


def rms_norm(x, weight, eps: float, out_dtype=None):
    """T5's layer norm ``weight * (x * rsqrt(mean(x**2, -1) + eps))`` in one pass, and one pass backward.

    transformers' ``T5LayerNorm`` computes it with seven elementwise kernels (a square, a mean, an add, a
    reciprocal square root, two products; under autocast then one cast per consuming matmul: three for
    q, k, v) and about as many again in backward, each a pass over the ``tokens x d_model`` rows.

    Args:
        x: fp32 CPU tensor ``(..., d)`` (the residual stream); weight: fp32 ``(d,)`` (:func:`rms_norm_applies`).
        eps: the variance epsilon (T5: 1e-6).
        out_dtype: fp32 (default) or bf16: the result rounded once to it, what autocast's matmuls cast it to
            (the norm's output feeds only matmuls in T5), so they read it without a cast of their own.

    Returns:
        The normalised rows in ``out_dtype``, differentiable with respect to ``x`` and ``weight``
        (the gradient with respect to ``x`` in fp32; ``weight``'s summed over the rows in fp32).
    """
    import torch

    out_dtype = out_dtype or torch.float32
    if not rms_norm_applies(x, weight) or out_dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"rms_norm takes fp32 CPU x (..., d) and weight (d,) and a bf16/fp32 out_dtype (and the kernel "
                         f"built: {status()}); got x {tuple(x.shape)} {x.dtype}, weight {tuple(weight.shape)} "
                         f"{weight.dtype}, out_dtype {out_dtype}")
    return _rms_norm_function().apply(x.contiguous(), weight.contiguous(), float(eps), out_dtype)
