"""Process-level settings that make CPU training and decoding faster without changing any result.

:func:`tune_cpu_allocator` (``benchmarks/README.md``, the "allocator" lever, has the measurements),
:func:`tune_openmp_spin` (OpenMP threads spin briefly, so peftsum's kernel threads get their cores),
the precision switch (:func:`resolve_bf16`, environment variable :data:`PRECISION_ENV`) and the
device choice for inference (:func:`inference_device`).
"""

from __future__ import annotations

import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
"""glibc ``mallopt`` parameter numbers (``<malloc.h>``)."""

HOME_ENV = "PEFTSUM_HOME"
"""Environment variable that moves peftsum's cache folder (default ``~/.cache/peftsum``)."""


def peftsum_home():
    """peftsum's cache folder (tiny model, data cache, compiled kernels): ``$PEFTSUM_HOME``, else
    ``~/.cache/peftsum`` (a ``Path``, ``~`` expanded; not created here)."""
    from pathlib import Path

    return Path(os.environ.get(HOME_ENV, Path.home() / ".cache" / "peftsum")).expanduser()


OPT_OUT_ENV = "PEFTSUM_SYSTEM_MALLOC"
"""Set to 1 to leave the C allocator's settings alone."""

_STATE: dict[str, bool] = {}

TRAINING_COMMANDS = ("train", "experiment")
"""``peftsum`` subcommands that call :func:`tune_openmp_spin` first."""

SPIN_ENV = "GOMP_SPINCOUNT"
"""GNU OpenMP's busy-wait length after a parallel region (libgomp reads it once, when it loads with torch)."""

SPINCOUNT = "10000"
"""peftsum's value for :data:`SPIN_ENV` (libgomp's default is 300,000 spins; ``benchmarks/README.md``:
of 0, 1,000, 3,000, 10,000, 30,000 and 100,000, 10,000 gave the fastest training steps)."""


def tune_openmp_spin() -> bool:
    """Shorten how long PyTorch's OpenMP threads spin after each parallel op; call before torch is imported.

    libgomp (PyTorch's OpenMP on Linux) keeps its worker threads busy-waiting for ~300,000 spins after
    every parallel region, in case another follows at once. peftsum's compiled CPU kernels
    (:mod:`peftsum.modeling.cpu_kernel`) run their second half on a thread of their own right after
    such ops, and a spinning OpenMP thread takes that core: on the 2-core AMX machine one attention
    kernel ran in 4.9 ms right after a ``bmm`` against 2.5 ms alone, and whole bf16 training steps of
    mT5-small took 1.20 -> 1.10 s (full) and 0.78 -> 0.69 s (LoRA) with ``GOMP_SPINCOUNT=10000``
    (``OMP_WAIT_POLICY=PASSIVE``, no spinning at all, was slower: 1.27 s and 0.80 s). Only the time
    threads wait changes, never a result.

    Decoding is the other way round (many small ops in a row, where waking a sleeping thread costs
    more): greedy generation of 12 x 127 tokens took 4.4-4.5 s with the default against 4.7-4.9 s. So
    the training commands (:data:`TRAINING_COMMANDS`: ``peftsum train``; ``peftsum experiment``,
    whose runs train far longer than they evaluate) call it, ``peftsum evaluate`` and ``serve`` do not;
    a program of one's own calls it before importing torch.

    Sets ``GOMP_SPINCOUNT`` to :data:`SPINCOUNT` in this process's environment (inherited by its
    children: spawned runs, torchrun ranks) unless the user set it or ``OMP_WAIT_POLICY``, or torch is
    already imported (libgomp has read its settings then).

    Returns:
        Whether it was set now.
    """
    if "torch" in sys.modules or SPIN_ENV in os.environ or "OMP_WAIT_POLICY" in os.environ:
        return False
    os.environ[SPIN_ENV] = SPINCOUNT
    _STATE["spin"] = True
    return True


def tune_cpu_allocator() -> bool:
    """Keep memory that PyTorch frees inside the process, so the next tensor reuses it.

    glibc serves every allocation above its mmap threshold (128 KiB to 32 MiB, adaptive) with a
    fresh ``mmap`` and gives it back with ``munmap`` when freed. A training step or a decoding step
    on CPU allocates and frees the same large tensors every time (activations, gradients, the
    250,112-wide logits of mT5), so every step pays the kernel for zeroed pages again: on the
    2-core development VM writing a fresh 128 MB result takes 86 ms, a reused one 13 ms. This
    sets ``M_MMAP_MAX=0`` (large blocks come from the heap) and ``M_TRIM_THRESHOLD`` to -1, which
    glibc reads as the largest size (the heap is never shrunk): memory freed by one step is reused
    by the next. (A 2 GiB threshold, used before, still let glibc trim a free top of the heap above
    2 GiB during full fine-tuning of mT5-small, so some steps faulted in the 512 MB embedding
    gradient again: 125,056 minor page faults, +0.9 s, on the AMX machine, ``benchmarks/steps.py``.)
    Numbers are unchanged (only where the bytes live changes); the process's peak RSS stays about
    the same, but its current RSS no longer drops between steps.

    Same idea as the jemalloc/tcmalloc advice of PyTorch's CPU performance tuning guide
    (https://pytorch.org/tutorials/recipes/recipes/tuning_guide.html), done with glibc's own
    ``mallopt`` (no extra library). Measured in ``benchmarks/README.md`` (mT5-small, 2 cores): a
    fresh 128 MB result 6.6x faster; generation -19%; a full fine-tuning step -5%, a LoRA step -2%.

    Applied once per process (later calls return the first answer). Does nothing when the
    environment variable ``PEFTSUM_SYSTEM_MALLOC=1`` is set, off Linux, or without glibc.

    Returns:
        Whether the allocator was tuned.
    """
    if "tuned" in _STATE:
        return _STATE["tuned"]
    tuned = False
    if sys.platform.startswith("linux") and os.environ.get(OPT_OUT_ENV, "") not in ("1", "true", "yes"):
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            tuned = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, -1))
        except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
            tuned = False
    _STATE["tuned"] = tuned
    return tuned


BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
"""``/proc/cpuinfo`` flags of CPUs with native bf16 matrix instructions (Intel AMX since Sapphire
Rapids; AVX512-BF16 since Cooper Lake / AMD Zen 4). Without them PyTorch emulates bf16 matmuls:
on the AVX2 development machine a bf16 ``torch.mm`` runs at ~1 GFLOP/s against ~130 fp32."""


def cpu_flags() -> set[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty off Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


ONEDNN_ISA_ENV = "ONEDNN_MAX_CPU_ISA"
"""oneDNN's cap on the instruction sets it uses (``AVX2``, ``AVX512_CORE``, ``AVX512_CORE_BF16``,
``AVX10_1_512_AMX``, ..., ``DEFAULT``; oneDNN's "CPU Dispatcher Control" documentation; the older
name ``DNNL_MAX_CPU_ISA`` is read too). PyTorch's bf16 matmuls on CPU run through oneDNN, so a cap
below the bf16 dot-product instructions makes bf16 no faster than fp32, or emulated (~1 GFLOP/s
under ``AVX2``), even on a CPU that has AMX."""

ONEDNN_CAPS_WITHOUT_BF16 = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE",
                                      "AVX512_CORE_VNNI"})
"""oneDNN ISA caps without bf16 dot products (``AVX2_VNNI_2`` converts bf16 but multiplies in fp32).
Every other value (``AVX512_CORE_BF16``, ``AVX512_CORE_FP16`` = ``AVX10_1_512``, the ``*AMX*`` levels,
``AVX10_2_*``, ``DEFAULT``, names newer than this list) leaves bf16 native."""


def onednn_caps_bf16(value: str | None = None) -> bool:
    """Whether ``ONEDNN_MAX_CPU_ISA`` (else ``DNNL_MAX_CPU_ISA``), or ``value``, keeps oneDNN off bf16 dot products.

    Args:
        value: the cap to judge (default: the environment's; unset or empty means no cap).

    Returns:
        True for a cap in :data:`ONEDNN_CAPS_WITHOUT_BF16` (case-insensitive), False otherwise.
    """
    if value is None:
        value = os.environ.get(ONEDNN_ISA_ENV) or os.environ.get("DNNL_MAX_CPU_ISA", "")
    return value.strip().upper() in ONEDNN_CAPS_WITHOUT_BF16


def bf16_is_fast(flags: set[str] | None = None, cuda: bool | None = None) -> bool:
    """Whether bf16 autocast speeds training up on this machine (the default of ``bf16: auto``).

    True on a CUDA GPU that supports bf16 (Ampere and later: ``torch.cuda.is_bf16_supported()``)
    and on a CPU with native bf16 matrix instructions (:data:`BF16_CPU_FLAGS`); False otherwise,
    where bf16 would be emulated and slower than fp32, including a bf16 CPU whose oneDNN is capped
    below the bf16 instructions (:data:`ONEDNN_ISA_ENV`, e.g. ``ONEDNN_MAX_CPU_ISA=AVX2``:
    :func:`onednn_caps_bf16`). bf16 autocast keeps weights and optimizer states in fp32 and changes
    losses only within bf16 precision (``tests/test_fast_path.py``).

    Args:
        flags: CPU flags to judge (default: this machine's, :func:`cpu_flags`).
        cuda: whether training runs on a bf16-capable GPU (default: ask torch).

    Returns:
        The decision.
    """
    if cuda is None:
        import torch

        cuda = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if cuda:
        return True
    return bool(set(BF16_CPU_FLAGS) & (cpu_flags() if flags is None else flags)) and not onednn_caps_bf16()


PRECISION_ENV = "PEFTSUM_BF16"
"""Environment variable that overrides the *auto* precision decision for every command and test
helper: ``0`` (fp32), ``1`` (bf16 autocast) or ``auto`` (:func:`bf16_is_fast`). An explicit
``--bf16``/``--no-bf16`` (or ``bf16:`` in a config) still wins over it."""

_PRECISION_WORDS = {"0": False, "false": False, "no": False, "off": False,
                    "1": True, "true": True, "yes": True, "on": True, "auto": None, "": None}


def bf16_from_env() -> bool | None:
    """The precision forced by :data:`PRECISION_ENV`: ``True``/``False``, or ``None`` for auto (unset or ``auto``).

    Raises:
        ConfigError: a value other than 0/1/auto (or true/false, yes/no, on/off), naming the variable.
    """
    from peftsum.errors import ConfigError

    raw = os.environ.get(PRECISION_ENV, "").strip().lower()
    if raw not in _PRECISION_WORDS:
        raise ConfigError(f"{PRECISION_ENV}={os.environ[PRECISION_ENV]!r}: use 0 (fp32), 1 (bf16) or auto")
    return _PRECISION_WORDS[raw]


def resolve_bf16(requested: bool | None, fp16: bool = False, cuda: bool | None = None) -> bool:
    """Decide bf16 autocast for a run: the explicit choice, else :data:`PRECISION_ENV`, else the hardware.

    Order: ``requested`` (``--bf16``/``--no-bf16`` or a config's ``bf16``) wins; then
    ``PEFTSUM_BF16=0|1``; then auto (:func:`bf16_is_fast`). Never on next to fp16.

    Args:
        requested: ``True``/``False`` when the user chose, ``None`` for auto.
        fp16: whether fp16 was requested (bf16 then stays off).
        cuda: passed to :func:`bf16_is_fast` (default: ask torch).

    Returns:
        Whether bf16 autocast is used.

    Raises:
        ConfigError: an invalid :data:`PRECISION_ENV` value.
    """
    if requested is not None:
        return bool(requested)
    if fp16:
        return False
    forced = bf16_from_env()
    if forced is not None:
        return forced
    return bf16_is_fast(cuda=cuda)


def precision_name(bf16: bool) -> str:
    """``"bf16"`` or ``"fp32"``: how results name a run's precision (``results.json``, model card, report)."""
    return "bf16" if bf16 else "fp32"


DEVICE_ENV = "PEFTSUM_DEVICE"
"""Environment variable naming the inference device when ``--device`` is not given (``cpu``, ``cuda``, ``cuda:1``)."""


def inference_device(requested: str | None = None, cuda_available: bool | None = None) -> str:
    """The device to decode on: ``requested`` (``--device``), else :data:`DEVICE_ENV`, else CUDA when
    available, else CPU (the order transformers' Trainer uses for training).

    Args:
        requested: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``None``/``"auto"`` for the best found.
        cuda_available: whether a CUDA device exists (default: ask torch).

    Returns:
        A torch device string.

    Raises:
        ConfigError: an unknown device name, or CUDA asked for where there is none.
    """
    from peftsum.errors import ConfigError

    choice = (requested or os.environ.get(DEVICE_ENV, "") or "auto").strip().lower()
    if cuda_available is None:
        import torch

        cuda_available = bool(torch.cuda.is_available())
    if choice == "auto":
        return "cuda" if cuda_available else "cpu"
    kind = choice.split(":", 1)[0]
    if kind not in ("cpu", "cuda", "mps") or (":" in choice and not choice.split(":", 1)[1].isdigit()):
        raise ConfigError(f"--device {requested or choice!r}: use auto, cpu, cuda or cuda:N")
    if kind == "cuda" and not cuda_available:
        raise ConfigError(f"--device {choice}: no CUDA device is available here (torch.cuda.is_available() is False); "
                          "use --device cpu")
    return choice


def autocast_context(device: str, bf16: bool):
    """The context a forward pass or ``generate`` runs in for a run's precision.

    bf16 = ``torch.autocast(device_type, dtype=torch.bfloat16)``, the same autocast that
    transformers' Trainer (through accelerate) wraps around training with ``bf16=True``: matmuls
    in bf16, reductions and the weights (fp32 masters) untouched. fp32 = no context.

    Args:
        device: a torch device string (``cpu``, ``cuda``, ``cuda:1``).
        bf16: whether to autocast to bf16.

    Returns:
        A context manager.
    """
    import contextlib

    if not bf16:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=str(device).split(":", 1)[0], dtype=torch.bfloat16)


def weights_dtype(bf16: bool):
    """The dtype decoding converts weights to: ``torch.bfloat16`` for bf16 decoding, else ``None`` (keep them as
    loaded, fp32). For ``Module.to(dtype=...)``; one choice for ``load_for_inference`` and ``serve``."""
    import torch

    return torch.bfloat16 if bf16 else None


def inference_bf16(requested: bool | None, trained_bf16: bool | None, cuda: bool | None = None) -> bool:
    """Precision for decoding: ``--bf16/--no-bf16`` if given, else the run's training precision (from its
    ``peftsum_config.json``), else :func:`resolve_bf16`'s choice (``PEFTSUM_BF16``, then the hardware).

    Args:
        requested: the command's ``--bf16``/``--no-bf16`` (``None`` = not given).
        trained_bf16: whether the run trained in bf16 (``None`` = not a peftsum run, e.g. a hub model).
        cuda: whether decoding runs on a CUDA device, for the hardware choice (``None``: ask torch; pass
            ``False`` for ``--device cpu`` on a GPU machine, whose CPU may emulate bf16).

    Returns:
        Whether generation runs under bf16 autocast.

    Raises:
        ConfigError: an invalid ``PEFTSUM_BF16`` value.
    """
    if requested is not None:
        return bool(requested)
    if trained_bf16 is not None:
        return bool(trained_bf16)
    return resolve_bf16(None, cuda=cuda)
