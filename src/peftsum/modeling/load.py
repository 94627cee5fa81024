"""Load a seq2seq model and its tokenizer from the hub or a folder, and check what was loaded."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from peftsum.errors import PeftsumError


def _quiet_transformers():
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:240]


def load_tokenizer(name_or_path: str):
    """``AutoTokenizer.from_pretrained`` with a one-line error.

    Args:
        name_or_path: hub id or local folder.

    Returns:
        The tokenizer.

    Raises:
        PeftsumError: not found locally and the hub is unreachable or the id is wrong.
    """
    _before_hub(name_or_path)  # before transformers loads: offline, a hub id fails in a second
    from transformers import AutoTokenizer

    _quiet_transformers()
    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except Exception as exc:
        raise PeftsumError(_load_hint(name_or_path, exc)) from None


def _before_hub(name_or_path: str) -> None:
    """For a hub id, check once whether the hub answers and go offline (cache only) if not (peftsum.hub).

    Raises:
        PeftsumError: the hub cannot be reached and the id is not in the local cache (the usual
            "Offline?" hint, at once instead of after the libraries' retries).
    """
    from peftsum.hub import looks_like_hub_id, model_in_cache, prepare_hub_access, unreachable_hint

    if looks_like_hub_id(name_or_path) and not prepare_hub_access() and not model_in_cache(name_or_path):
        raise PeftsumError(_load_hint(name_or_path, RuntimeError(unreachable_hint())))


def check_model_source(name_or_path: str) -> None:
    """The cheap part of loading a model, for the checks that run before the heavy imports.

    Raises:
        PeftsumError: a hub id while the hub cannot be reached and the id is not cached.
    """
    _before_hub(name_or_path)


def _load_hint(name_or_path: str, exc: Exception) -> str:
    from peftsum.hub import looks_like_hub_id

    if Path(name_or_path).exists():
        return f"{name_or_path}: not a loadable model/tokenizer folder ({_one_line(exc)})"
    if not looks_like_hub_id(name_or_path):
        return f"{name_or_path}: no such model folder"
    return (
        f"could not load {name_or_path!r} from the hub ({_one_line(exc)}). Offline? Pass a local folder, "
        "or use the tiny offline model: `peftsum build-tiny-model --output-dir DIR` then --model DIR"
    )


def _checkpoint_dir(name_or_path: str) -> Path | None:
    path = Path(name_or_path)
    if path.is_dir():
        return path
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name_or_path, "config.json")
    except Exception:
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def checkpoint_keys(name_or_path: str) -> set[str] | None:
    """Tensor names stored in a checkpoint's safetensors files.

    Args:
        name_or_path: a local folder, or a hub id already in the local cache.

    Returns:
        The tensor names, or ``None`` when they cannot be known without a download (hub id not
        cached, ``.bin``-only checkpoint).
    """
    path = _checkpoint_dir(name_or_path)
    if path is None:
        return None
    index = path / "model.safetensors.index.json"
    if index.is_file():
        return set(json.loads(index.read_text())["weight_map"])
    files = list(path.glob("*.safetensors"))
    if not files:
        return None
    from safetensors import safe_open

    keys: set[str] = set()
    for file in files:
        with safe_open(str(file), "pt") as fh:
            keys.update(fh.keys())
    return keys


def _stored_rows(name_or_path: str, key: str, rows: int):
    """The first ``rows`` rows of tensor ``key`` as stored in the checkpoint (or ``None``)."""
    path = _checkpoint_dir(name_or_path)
    if path is None:
        return None
    from safetensors import safe_open

    index = path / "model.safetensors.index.json"
    files = [path / json.loads(index.read_text())["weight_map"][key]] if index.is_file() else path.glob("*.safetensors")
    for file in files:
        with safe_open(str(file), "pt") as fh:
            if key in fh.keys():
                return fh.get_slice(key)[:rows]
    return None


def lm_head_tie_state(model, name_or_path: str) -> dict:
    """Check the loaded model's output head against what the checkpoint stores.

    mT5 checkpoints store a separate ``lm_head.weight``; transformers 5.x forces
    ``MT5Config.tie_word_embeddings = True`` and only leaves the head untied when the checkpoint
    holds its own head with values that differ from the embeddings. Two silent failures are
    caught here: a stored head replaced by the tied embeddings (the trained head thrown away),
    and an untied head with nothing stored (a randomly initialised head). The check compares the
    first rows of the stored ``lm_head.weight`` with the loaded head.

    Args:
        model: the loaded ``PreTrainedModel``.
        name_or_path: where it was loaded from (folder or cached hub id).

    Returns:
        ``{"lm_head_tied": bool, "checkpoint_has_lm_head": bool | None,
        "head_matches_checkpoint": bool | None, "ok": bool}`` (``None`` = unknown: the
        checkpoint's tensor names cannot be read locally).

    Raises:
        PeftsumError: the loaded head does not hold the checkpoint's stored head, or the head is
            untied although the checkpoint stores none.
    """
    import torch

    head = model.get_output_embeddings()
    emb = model.get_input_embeddings()
    tied = head is not None and head.weight.data_ptr() == emb.weight.data_ptr()
    keys = checkpoint_keys(name_or_path)
    has_head = None if keys is None else "lm_head.weight" in keys
    matches = None
    if has_head and head is not None:
        stored = _stored_rows(name_or_path, "lm_head.weight", 8)
        if stored is not None:
            loaded = head.weight.detach()[: stored.shape[0]].to("cpu", torch.float32)
            matches = bool(torch.allclose(loaded, stored.to(torch.float32), rtol=1e-3, atol=1e-6))
    if matches is False:
        raise PeftsumError(
            f"{name_or_path}: the loaded lm_head does not hold the checkpoint's stored lm_head "
            f"({'tied to the embeddings' if tied else 'different values'}); the trained output head would be lost "
            "(check tie_word_embeddings in config.json)"
        )
    if has_head is False and head is not None and not tied:
        raise PeftsumError(
            f"{name_or_path}: the checkpoint stores no lm_head but the loaded model has an untied one, so it "
            "was randomly initialised (set tie_word_embeddings: true in config.json or save the head)"
        )
    return {"lm_head_tied": bool(tied), "checkpoint_has_lm_head": has_head, "head_matches_checkpoint": matches,
            "ok": True}


def load_model(name_or_path: str, dtype=None):
    """``AutoModelForSeq2SeqLM.from_pretrained`` plus the lm_head tie check.

    Args:
        name_or_path: hub id (e.g. ``google/mt5-small``) or folder.
        dtype: ``torch`` dtype to load in (default: float32, the safe choice for mT5).

    Also applies the process-level CPU setting of :func:`peftsum.runtime.tune_cpu_allocator` and
    the same-result fast paths :func:`fuse_activations` and :func:`skinny_output_head`.

    Returns:
        ``(model, tie_state)`` where ``tie_state`` is :func:`lm_head_tie_state`'s dict.

    Raises:
        PeftsumError: the model cannot be loaded (offline, wrong id, not seq2seq) or the tie check fails.
    """
    _before_hub(name_or_path)  # before torch/transformers load: offline, a hub id fails in a second
    import torch
    from transformers import AutoModelForSeq2SeqLM

    from peftsum.runtime import tune_cpu_allocator

    tune_cpu_allocator()  # every process that loads a model trains or decodes with it
    _quiet_transformers()
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(name_or_path, dtype=dtype or torch.float32)
    except Exception as exc:
        raise PeftsumError(_load_hint(name_or_path, exc)) from None
    fuse_activations(model)
    skinny_output_head(model)
    return model, lm_head_tie_state(model, name_or_path)


SKINNY_ROWS = 32
"""Up to this many rows (batch x positions), :func:`skinny_output_head` computes the output
projection as ``(W @ x.T).T`` on CPU."""


@functools.cache  # one class per process (torch is imported only when a model is loaded)
def _skinny_linear_class():
    import torch

    class SkinnyOutputLinear(torch.nn.Linear):
        """``nn.Linear`` whose CPU forward for a few rows multiplies the tall weight by the skinny input.

        ``F.linear(x, W)`` with x of 2-32 rows and W of 250,112 x 512 (mT5's output projection at
        every decoding step) is 1.6-3x slower with MKL on CPU than ``(W @ x.T).T``: the same
        products summed in another order, equal to float rounding. Larger inputs (training, long
        prompts), GPUs and layers with a bias take the usual path.
        """

        def forward(self, x):
            rows = x.numel() // x.shape[-1] if x.dim() >= 2 else 0
            if x.device.type == "cpu" and self.bias is None and 1 < rows <= SKINNY_ROWS:
                # a transposed view: generation copies the last position's logits anyway, so a
                # .contiguous() here would copy the 250,112-wide rows twice per step
                out = torch.mm(self.weight, x.reshape(rows, x.shape[-1]).t()).t()
                return out.view(*x.shape[:-1], out.shape[-1])
            return super().forward(x)

    return SkinnyOutputLinear


def skinny_output_head(model) -> bool:
    """Make the output projection fast for decoding on CPU (see ``SkinnyOutputLinear``).

    The head keeps its weight (same ``Parameter``, same state-dict key); only its class changes,
    to a subclass of ``nn.Linear``. Models whose head is not a plain ``nn.Linear`` are left alone.

    Returns:
        Whether the head was changed.
    """
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if type(head) is not torch.nn.Linear:
        return False
    head.__class__ = _skinny_linear_class()
    return True


def fuse_activations(model) -> int:
    """Run mT5's ``gelu_new`` as one fused kernel instead of seven elementwise ops.

    transformers' ``NewGELUActivation`` (T5 v1.1/mT5's ``dense_act_fn = "gelu_new"``) writes the
    tanh approximation of GELU in Python: pow, mul, add, mul, tanh, add, mul, each allocating a
    tensor the size of the feed-forward activation, and as many again in backward. ``GELUTanh``
    computes the same formula with ``torch.nn.functional.gelu(approximate="tanh")``: outputs agree to
    float rounding (max difference ~2e-7 in fp32), forward plus backward is ~4x faster on CPU
    (benchmarks/README.md). Only module instances change; the config (and so every saved
    checkpoint) still says ``gelu_new``.

    Args:
        model: any ``torch.nn.Module`` (PEFT-wrapped or not).

    Returns:
        How many activation modules were replaced.
    """
    from transformers.activations import GELUTanh, NewGELUActivation

    replaced = 0
    for module in model.modules():
        for name, child in list(module.named_children()):
            if type(child) is NewGELUActivation:
                setattr(module, name, GELUTanh())
                replaced += 1
    return replaced


def is_t5_family(model_or_config) -> bool:
    """True for T5, mT5, ByT5, LongT5, UMT5, Switch (models whose activations overflow in fp16).

    Args:
        model_or_config: a model or its ``PretrainedConfig``.
    """
    config = getattr(model_or_config, "config", model_or_config)
    return getattr(config, "model_type", "") in {"t5", "mt5", "longt5", "umt5", "byt5", "switch_transformers"}


def is_adapter_dir(path: str | Path) -> bool:
    """True if the folder ``path`` holds a PEFT adapter (``adapter_config.json``)."""
    return (Path(path) / "adapter_config.json").is_file()


def _check_base_exists(adapter_dir: Path, base_name: str) -> None:
    """Raise a one-line error naming the missing folder when an adapter's base model path is gone.

    Raises:
        PeftsumError: ``base_name`` is written as a path (not a hub id) and does not exist.
    """
    from peftsum.hub import looks_like_hub_id

    if base_name and not Path(base_name).expanduser().exists() and not looks_like_hub_id(base_name):
        raise PeftsumError(
            f"{adapter_dir}: its base model folder {base_name} does not exist (moved or deleted?); put it back "
            f"or set base_model_name_or_path in {adapter_dir / 'adapter_config.json'}")


def load_for_inference(model_path: str, device: str | None = None):
    """Load a fine-tuned model (full checkpoint or PEFT adapter dir) and its tokenizer, in eval mode, on a device.

    The weights stay fp32 (how peftsum saves them); the precision of decoding is chosen per call
    (``generate_summaries(..., bf16=...)``, :func:`peftsum.runtime.inference_bf16`).

    Args:
        model_path: a full checkpoint folder, an adapter folder (its base is read from
            ``adapter_config.json``), a run folder containing ``model/``, or a hub id.
        device: where to put the model (``cpu``, ``cuda``, ``cuda:N``); ``None`` = the best found,
            CUDA then CPU (:func:`peftsum.runtime.inference_device`).

    Returns:
        ``(model, tokenizer)``; ``next(model.parameters()).device`` is the device used.

    Raises:
        PeftsumError: the folder or its base model cannot be loaded (a base model folder that
            is gone is named); ConfigError: an unusable device.
    """
    from peftsum.runtime import inference_device

    if not Path(model_path).exists() and str(model_path).startswith((".", "/", "~")):
        raise PeftsumError(f"{model_path}: no such model folder")  # a path, not a hub id (Path() drops "./")
    device = inference_device(device)
    path = Path(model_path)
    if path.is_dir() and (path / "model").is_dir():
        path = path / "model"
    if is_adapter_dir(path):
        from peft import PeftConfig, PeftModel

        base_name = PeftConfig.from_pretrained(str(path)).base_model_name_or_path
        _check_base_exists(path, base_name)
        base, _ = load_model(base_name)
        tok_src = str(path) if (path / "tokenizer_config.json").is_file() else base_name
        tokenizer = load_tokenizer(tok_src)
        try:
            model = PeftModel.from_pretrained(base, str(path))
        except Exception as exc:
            raise PeftsumError(f"{path}: could not load the adapter ({_one_line(exc)})") from None
    else:
        model, _ = load_model(str(path))
        tokenizer = load_tokenizer(str(path))
    model.to(device)
    model.eval()
    return model, tokenizer


@functools.cache
def _fast_dropout_class():
    import torch

    class FastDropout(torch.nn.Dropout):
        """``nn.Dropout`` whose CPU training forward draws its mask with ``torch.rand`` instead of ``bernoulli_``.

        Same distribution (each element kept with probability ``1 - p`` and scaled by
        ``1 / (1 - p)``, from the same seeded global generator), 14-19% less time forward plus
        backward on CPU, where PyTorch's ``bernoulli_`` is slow (benchmarks/README.md). The masks
        are other draws than ``nn.Dropout``'s for the same seed. Evaluation, ``p`` of 0 or 1,
        ``inplace`` and GPUs take the usual path.
        """

        def forward(self, x):
            if not self.training or not 0.0 < self.p < 1.0 or self.inplace or x.device.type != "cpu":
                return super().forward(x)
            keep = torch.rand(x.shape, device=x.device) >= self.p
            return (x * keep).mul_(1.0 / (1.0 - self.p))

    return FastDropout


def fast_dropout(model) -> int:
    """Make every plain ``nn.Dropout`` of ``model`` a :class:`FastDropout` (see there); call after PEFT wraps it.

    Dropout was 21% of a LoRA training step of mT5-small on 2 CPU cores (132 ``bernoulli_`` calls:
    the model's dropouts and LoRA's ``lora_dropout`` on q and v). Attention-probability dropout
    inside the attention kernel is not a module and is left alone.

    Args:
        model: any ``torch.nn.Module`` (PEFT-wrapped or not).

    Returns:
        How many dropout modules changed class (parameters, state dict and ``p`` are untouched).
    """
    import torch

    cls = _fast_dropout_class()
    changed = 0
    for module in model.modules():
        if type(module) is torch.nn.Dropout:
            module.__class__ = cls
            changed += 1
    return changed
