"""Memory a training run needs per device, from the model's config alone (``peftsum train --dry-run``).

Nothing is read from disk but ``config.json``: the model is built on PyTorch's ``meta`` device
(shapes, no storage), the PEFT method is applied to it, and the parameter counts come from
there. The estimate is the peak of one steady-state training step (optimizer states already
allocated), in bytes:

``params + optimizer states + max(activations + output-head backward + head gradient, gradients)``

* **params**: every parameter, fp32 (bf16 autocast keeps fp32 master weights; peftsum never
  stores weights in bf16 for training). Under FSDP (full sharding): divided by the world size,
  plus the largest unit gathered at once (the root: embeddings and output head).
* **gradients**: trainable parameters x 4 bytes; data-parallel (DDP) adds its bucket copy of the
  same size; under FSDP divided by the world size.
* **optimizer states**: AdamW 2 x 4 bytes per trainable parameter (``exp_avg``, ``exp_avg_sq``);
  Adafactor (``transformers.Adafactor``, no momentum) a row and a column vector per matrix and a
  full vector per 1-D parameter; divided by the world size under FSDP.
* **activations**: the tensors autograd keeps for backward in a T5/mT5 step at the configured
  per-device batch, ``max_source_length`` and ``max_target_length`` (worst case: every example at
  full length). Counted per layer from the modeling code (``transformers.models.mt5``): the
  residual stream and layer-norm inputs/outputs, q/k/v, attention probabilities (h x length per
  token), context, the gated-GELU feed-forward (4 x d_ff per token), dropout masks and outputs,
  the position-bias/mask tensors built once per stack, the encoder key/values of every
  cross-attention. Under bf16 autocast the linear outputs take 2 bytes and the bf16 copies of the
  linear weights are kept for backward. Gradient checkpointing keeps each layer's input only,
  plus one layer's activations during recomputation.
* **output head**: peftsum's loss projects only target tokens (``training/loss.py``). In one
  process the head and its loss are fused (``training/head_loss.py``): one ``tokens x vocab``
  buffer in the compute dtype (2 bytes under bf16, else 4) plus a 1 MiB scratch; a frozen head
  (PEFT methods) on CPU only one block of ``cpu_kernel.HEAD_BLOCK_ROWS`` vocabulary rows of it and
  an fp64 ``tokens x d`` sum (``cpu_kernel.frozen_head_cross_entropy``). Under several
  processes the plain packed path: the fp32 log-softmax over the vocabulary is kept, and at the
  start of backward two more vocabulary-sized buffers exist (its gradient and the logits'
  gradient), ``3 x tokens x vocab x 4`` bytes (plus the bf16 logits under bf16).

Checked against measured peaks of live tensors (``torch.profiler``): tests/test_memory.py (the
tiny mT5, full and LoRA, within 25%); benchmarks/memory.py and docs/distributed.md (the
mt5-small-shaped benchmark model, fp32, bf16 autocast, gradient checkpointing: 0.90-1.18x). Not counted: the CUDA context and the caching allocator's
reserve (~0.5-1 GB on a GPU), the Python/torch runtime on CPU (~0.5 GB RSS), fragmentation.
The measurement (:func:`measure_peak`, :func:`measure_training_step`) is in
:mod:`peftsum.training.memory_measure` and importable from here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from peftsum.training.memory_measure import measure_peak, measure_training_step

__all__ = ["DRY_RUN_WORLD_SIZES", "MemoryEstimate", "ModelCounts", "activation_bytes", "count_parameters",
           "device_capacity", "dry_run", "estimate", "format_estimates", "measure_peak", "measure_training_step"]

GB = 1e9


@dataclass(frozen=True)
class ModelCounts:
    """Parameter counts of a (PEFT-wrapped) model built on the meta device.

    Attributes:
        total: all parameters.
        trainable: parameters with ``requires_grad``.
        linear: parameters of ``nn.Linear`` weights (bf16 autocast keeps a bf16 copy of each).
        adafactor_state: elements of Adafactor's factored second moment for the trainable parameters.
        root: parameters outside the blocks named in ``_no_split_modules`` (FSDP's root unit:
            embeddings, output head, final layer norms).
        head_trainable: whether the output head (``lm_head``) is trained (its gradient appears at the
            start of backward, with all activations alive).
    """

    total: int
    trainable: int
    linear: int
    adafactor_state: int
    root: int
    head_trainable: bool


@dataclass(frozen=True)
class MemoryEstimate:
    """Per-device memory of one training run (bytes), with the device it was checked against.

    Attributes:
        method, world_size, fsdp: what was estimated.
        params, gradients, optimizer, activations: the parts (``activations`` includes the output
            head's backward buffers and the bf16 weight copies).
        peak: the estimated peak (see the module docstring for how the parts combine).
        device: the device found (``cuda:0 (NVIDIA ...)`` or ``cpu``).
        capacity: its memory per process, bytes (GPU memory; on CPU the machine's RAM divided by
            the processes on it), or ``None`` if unknown.
    """

    method: str
    world_size: int
    fsdp: bool
    params: float
    gradients: float
    optimizer: float
    activations: float
    peak: float
    device: str
    capacity: float | None

    @property
    def fits(self) -> bool | None:
        """``peak <= capacity`` (``None`` when the capacity is unknown)."""
        return None if self.capacity is None else self.peak <= self.capacity

    def to_dict(self) -> dict:
        """The fields plus ``fits``, for JSON."""
        return {**asdict(self), "fits": self.fits}


def count_parameters(model_config, method, hyper) -> ModelCounts:
    """Count the parameters of ``method`` applied to a model of ``model_config``, without weights.

    Args:
        model_config: a ``transformers`` config (``AutoConfig.from_pretrained``: reads config.json only).
        method: the registry row (``peftsum.modeling.methods.get_method``).
        hyper: its :class:`~peftsum.modeling.methods.MethodHyper`.

    Returns:
        :class:`ModelCounts`.
    """
    import dataclasses

    import torch
    from transformers import AutoModelForSeq2SeqLM

    from peftsum.modeling.methods import build_peft_config

    with torch.device("meta"):
        model = AutoModelForSeq2SeqLM.from_config(model_config)
        peft_config = build_peft_config(method, dataclasses.replace(hyper, total_steps=max(1, hyper.total_steps or 1)))
        if peft_config is not None:
            from peft import get_peft_model

            if getattr(peft_config, "init_lora_weights", True) not in (True, False):
                peft_config.init_lora_weights = True  # PiSSA's SVD needs real weights; the shapes are LoRA's
            model = get_peft_model(model, peft_config)
    blocks = set(getattr(model_config, "_no_split_modules", None) or []) | {"MT5Block", "T5Block"}
    in_blocks = {id(p) for m in model.modules() if type(m).__name__ in blocks for p in m.parameters()}
    total = trainable = linear = factored = root = 0
    for p in model.parameters():
        n = p.numel()
        total += n
        if id(p) not in in_blocks:
            root += n
        if p.requires_grad:
            trainable += n
            factored += (p.shape[-1] + p.shape[-2]) if p.dim() >= 2 else n
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            linear += m.weight.numel()
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    head_trainable = head is not None and any(p.requires_grad for p in head.parameters())
    return ModelCounts(total, trainable, linear, factored, root, head_trainable)


def activation_bytes(model_config, batch: int, source: int, target: int, bf16: bool = False,
                     gradient_checkpointing: bool = False, fused_head: bool = True,
                     head_blocks: bool = False) -> float:
    """Bytes autograd keeps for one T5/mT5 training micro-batch, plus the output head's backward peak.

    Args:
        model_config: a T5/mT5 config (``d_model``, ``d_kv``, ``d_ff``, ``num_heads``, ``num_layers``,
            ``num_decoder_layers``, ``vocab_size``, ``dropout_rate``, ``feed_forward_proj``).
        batch: examples per device per micro-batch.
        source, target: tokens per article and per summary (the configured maxima).
        bf16: bf16 autocast (linear outputs 2 bytes).
        gradient_checkpointing: keep only each layer's input (plus one layer during recomputation).
        fused_head: the head and its loss fused (one process; ``training/head_loss.py``).
        head_blocks: with ``fused_head``, a frozen head on CPU, whose logits are computed a block of
            vocabulary rows at a time (``cpu_kernel.frozen_head_cross_entropy``).

    Returns:
        Bytes (float). Formula: module docstring; per-layer terms follow ``modeling_mt5.py``.
    """
    c = model_config
    d, dff, h = c.d_model, c.d_ff, c.num_heads
    inner = h * c.d_kv
    n_enc, n_dec = c.num_layers, getattr(c, "num_decoder_layers", None) or c.num_layers
    gated = "gated" in str(getattr(c, "feed_forward_proj", "relu"))
    drop = float(getattr(c, "dropout_rate", 0.0) or 0.0) > 0
    a = 2 if bf16 else 4  # linear outputs
    f = 4  # layer norms, softmax (mT5 computes it in fp32), residual stream
    ns, nt = batch * source, batch * target

    def ff() -> float:  # per token: LN in/out, wi(_0, _1), act, product / dropout, masks
        inner_ff = (4 if gated else 2) * dff * a + (dff * (a + 1) if drop else 0)
        return 2 * d * f + inner_ff + (d if drop else 0)

    def attn(keys: int) -> float:  # per query token: LN in/out, q (and k, v for self-attention), probs, ctx
        probs = h * keys * f + (h * keys * (a + 1) if drop else 0)
        return 2 * d * f + 2 * inner * a + probs + (d if drop else 0)

    enc_layer = ns * (attn(source) + 2 * inner * a + ff())  # + k, v of the source tokens
    dec_layer = nt * (attn(target) + 2 * inner * a + attn(source) + ff()) + ns * 2 * inner * a  # cross k, v
    once = 4 * batch * h * (source * source + target * target + target * source)  # position bias + masks
    embed = (ns + nt) * d * (f + (f + 1 if drop else 0)) + (ns + nt) * 2 * d * f  # embeddings, final LNs
    if fused_head and head_blocks:
        from peftsum.modeling.cpu_kernel import HEAD_BLOCK_ROWS

        head = nt * d * a + nt * min(HEAD_BLOCK_ROWS, c.vocab_size) * a + 2 * nt * d * 4
    elif fused_head:
        head = nt * d * a + nt * c.vocab_size * a + min(nt * c.vocab_size * 4, 1 << 20)
    else:
        head = nt * d * a + 3 * nt * c.vocab_size * 4 + (nt * c.vocab_size * a if bf16 else 0)
    if gradient_checkpointing:
        layers = (ns * n_enc + nt * n_dec) * d * f + max(enc_layer, dec_layer)
    else:
        layers = n_enc * enc_layer + n_dec * dec_layer
    return float(layers + once + embed + head)


def estimate(cfg, world_size: int = 1, fsdp: bool = False, model_config=None, capacity: tuple | None = None
             ) -> MemoryEstimate:
    """Estimate one run's peak memory per device (reads only the model's config.json).

    Args:
        cfg: a resolved :class:`peftsum.config.TrainConfig` (method, batch, lengths, optimizer,
            bf16, gradient checkpointing).
        world_size: processes (data-parallel replicas, or FSDP shards).
        fsdp: full sharding of parameters, gradients and optimizer states (FSDP2).
        model_config: a preloaded ``transformers`` config (default: ``AutoConfig.from_pretrained(cfg.model)``).
        capacity: ``(device name, bytes per process)``; default :func:`device_capacity`.

    Returns:
        A :class:`MemoryEstimate`.

    Raises:
        ConfigError: the model's config cannot be read.
    """
    from peftsum.errors import ConfigError
    from peftsum.modeling.methods import get_method, method_hyper

    if model_config is None:
        from transformers import AutoConfig

        try:
            model_config = AutoConfig.from_pretrained(cfg.model)
        except Exception as exc:  # noqa: BLE001 - any unreadable config is one line
            raise ConfigError(f"{cfg.model}: cannot read the model's config ({str(exc).splitlines()[0][:200]})") from None
    method = get_method(cfg.method)
    counts = count_parameters(model_config, method, method_hyper(method, cfg))
    if getattr(model_config, "tie_word_embeddings", False) and _stores_separate_head(cfg.model):
        # transformers loads the head untied when the checkpoint stores it: one more vocab x d matrix
        n = model_config.vocab_size * model_config.d_model
        full = not method.is_peft
        counts = ModelCounts(counts.total + n, counts.trainable + (n if full else 0), counts.linear + n,
                             counts.adafactor_state + (model_config.vocab_size + model_config.d_model if full else 0),
                             counts.root + n, full)
    shards = world_size if fsdp else 1
    params = counts.total * 4 / shards
    if fsdp:
        params += counts.root * (2 if cfg.bf16 else 4)  # the root unit gathered during forward/backward
    grads = counts.trainable * 4 / shards
    if world_size > 1 and not fsdp:
        grads *= 2  # DDP's gradient buckets
    state = counts.adafactor_state if cfg.optimizer == "adafactor" else 2 * counts.trainable
    optimizer = state * 4 / shards
    from peftsum.modeling.load import is_t5_family

    # as training/loss.py: fused where the packed loss is used, in one process, on a T5-family head
    fused_head = world_size == 1 and method.packed_head and is_t5_family(model_config)
    name, cap = capacity if capacity is not None else device_capacity(world_size)
    acts = activation_bytes(model_config, cfg.batch_size, cfg.max_source_length, cfg.max_target_length,
                            bool(cfg.bf16), bool(cfg.gradient_checkpointing), fused_head=fused_head,
                            head_blocks=not counts.head_trainable and name == "cpu")
    if cfg.bf16:
        acts += counts.linear * 2 / shards  # bf16 copies of the linear weights kept for backward
    head_grad = (model_config.vocab_size * model_config.d_model * 4 / shards) if counts.head_trainable else 0.0
    peak = params + optimizer + max(acts + head_grad, grads)
    return MemoryEstimate(method.name, world_size, fsdp, params, grads, optimizer, acts, peak, name, cap)


def device_capacity(world_size: int = 1) -> tuple[str, float | None]:
    """The device a run would use and its memory per process.

    Args:
        world_size: processes sharing the machine (CPU: RAM is divided among them).

    Returns:
        ``(name, bytes)``: the first CUDA GPU's total memory, else the machine's RAM
        (``MemTotal`` of ``/proc/meminfo``) divided by ``world_size``; bytes ``None`` if unknown.
    """
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return f"cuda:0 ({props.name})", float(props.total_memory)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return "cpu", int(line.split()[1]) * 1024 / max(1, world_size)
    except OSError:
        pass
    return "cpu", None


def format_estimates(estimates: list[MemoryEstimate]) -> str:
    """A plain-text table of estimates (MB/GB = 10^6/10^9 bytes), one row per method and world size."""
    def size(b: float) -> str:
        return f"{b / GB:.2f} GB" if b >= 0.995 * GB else f"{b / 1e6:.1f} MB"

    head = f"{'method':<8} {'procs':>5} {'mode':<5} {'params':>10} {'grads':>10} {'optimizer':>10} " \
           f"{'activations':>11} {'peak':>10}  device"
    rows = [head]
    for e in estimates:
        mode = "FSDP" if e.fsdp else ("DDP" if e.world_size > 1 else "-")
        cap = "capacity unknown" if e.capacity is None else f"{size(e.capacity)} per process"
        verdict = {True: "fits", False: "DOES NOT FIT", None: "?"}[e.fits]
        rows.append(f"{e.method:<8} {e.world_size:>5} {mode:<5} {size(e.params):>10} {size(e.gradients):>10} "
                    f"{size(e.optimizer):>10} {size(e.activations):>11} {size(e.peak):>10}  {verdict} ({e.device}, {cap})")
    return "\n".join(rows)


def _stores_separate_head(model: str) -> bool:
    """True when a local checkpoint stores ``lm_head.weight`` next to the embedding (read from the
    safetensors header only): transformers then loads the head untied whatever the config says."""
    from pathlib import Path

    files = sorted(Path(model).glob("*.safetensors")) if Path(model).is_dir() else []
    if not files:
        return False
    from safetensors import safe_open

    for f in files:
        with safe_open(str(f), "pt") as fh:
            if "lm_head.weight" in fh.keys():
                return True
    return False


DRY_RUN_WORLD_SIZES = (1, 2, 4, 8)
"""World sizes ``--dry-run`` shows next to the launcher's own."""


def dry_run(cfgs, world_size: int | None = None) -> tuple[list[MemoryEstimate], str]:
    """Estimates for each distinct method of ``cfgs`` at several world sizes, and the table to print.

    Rows: data-parallel at 1, 2, 4, 8 processes and the launcher's world size; FSDP (full sharding)
    at every size above 1 for the methods FSDP runs (``Method.fsdp`` in ``peftsum.modeling.methods``).
    Reads each model's config.json only (the weights are not loaded).

    Args:
        cfgs: :class:`~peftsum.config.TrainConfig` objects (one ``peftsum train``, or an experiment's runs).
        world_size: the launcher's world size (default: :func:`peftsum.distributed.world`).

    Returns:
        ``(estimates, text)``: the rows and a table with a header line per model and settings.

    Raises:
        PeftsumError: a config that :func:`peftsum.training.trainer.resolve` refuses, or an
            unreadable model config.
    """
    from transformers import AutoConfig

    from peftsum.distributed import world
    from peftsum.errors import ConfigError
    from peftsum.modeling.methods import get_method
    from peftsum.training.trainer import resolve

    world_size = world_size or world().world_size
    sizes = sorted(set(DRY_RUN_WORLD_SIZES) | {world_size})
    all_rows: list[MemoryEstimate] = []
    parts, seen = [], set()
    for cfg in cfgs:
        cfg = resolve(cfg)
        key = (cfg.model, cfg.method, cfg.batch_size, cfg.max_source_length, cfg.max_target_length, cfg.bf16,
               cfg.optimizer, cfg.gradient_checkpointing, cfg.lora_r, tuple(cfg.target_modules or ()))
        if key in seen:
            continue
        seen.add(key)
        from peftsum.modeling.load import check_model_source

        check_model_source(cfg.model)  # offline and not cached: the one-line hint in a second, no retries
        try:
            model_config = AutoConfig.from_pretrained(cfg.model)
        except Exception as exc:  # noqa: BLE001 - one line for any unreadable config
            raise ConfigError(f"{cfg.model}: cannot read the model's config ({str(exc).splitlines()[0][:200]})") from None
        rows = [estimate(cfg, n, False, model_config=model_config) for n in sizes]
        if get_method(cfg.method).fsdp:
            rows += [estimate(cfg, n, True, model_config=model_config) for n in sizes if n > 1]
        all_rows += rows
        parts.append(f"{cfg.model}: {cfg.method}, batch {cfg.batch_size} per device, {cfg.max_source_length}/"
                     f"{cfg.max_target_length} tokens, {'bf16' if cfg.bf16 else 'fp32'}, {cfg.optimizer}"
                     f"{', gradient checkpointing' if cfg.gradient_checkpointing else ''} (launched with "
                     f"{world_size} process{'es' if world_size > 1 else ''})\n" + format_estimates(rows))
    return all_rows, "\n\n".join(parts)
