"""Load a seq2seq model and its tokenizer from the hub or a folder, and check what was loaded.

The CPU fast paths applied on load (and :func:`fast_dropout`) are in :mod:`peftsum.modeling.fast_paths`
and importable from here.
"""

from __future__ import annotations

import json
from pathlib import Path

from peftsum.errors import PeftsumError
from peftsum.modeling.fast_paths import (SKINNY_ROWS, fast_dropout, fuse_activations, fuse_feed_forward,
                                         fuse_layer_norms, skinny_output_head)

__all__ = ["SKINNY_ROWS", "check_model_source", "checkpoint_keys", "fast_dropout", "fuse_activations",
           "fuse_feed_forward", "fuse_layer_norms", "is_adapter_dir", "is_t5_family", "lm_head_tie_state",
           "load_for_inference", "load_model", "load_tokenizer", "skinny_output_head"]


def _quiet_transformers():
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    # peft 0.21 reads model.is_gradient_checkpointing, which transformers 5.24 deprecates: a warning on every
    # PEFT run that no user of peftsum can act on
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)


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
    the same-result fast paths :func:`fuse_activations`, :func:`fuse_feed_forward`, :func:`fuse_layer_norms`,
    :func:`skinny_output_head` and
    :func:`peftsum.modeling.attention.use_fast_attention` (T5's bias mask built once per stack).

    Returns:
        ``(model, tie_state)`` where ``tie_state`` is :func:`lm_head_tie_state`'s dict.

    Raises:
        PeftsumError: the model cannot be loaded (offline, wrong id, not seq2seq) or the tie check fails.
    """
    _before_hub(name_or_path)  # before torch/transformers load: offline, a hub id fails in a second
    import torch
    from transformers import AutoModelForSeq2SeqLM

    from peftsum.modeling.attention import use_fast_attention
    from peftsum.runtime import tune_cpu_allocator

    tune_cpu_allocator()  # every process that loads a model trains or decodes with it
    _quiet_transformers()
    try:
        # use_kernels=False: transformers >= 5.2x kernelizes by default where the `kernels` package is installed,
        # and re-kernelizes at every train()/eval() switch for the model's current device. On a GPU that fetches
        # layers (kernels-community/activation) from the hub at the first model.eval(): offline it raises, online
        # it runs code peftsum's tests never saw in place of its own fused modules. The GPU run of 2026-12-04
        # (benchmarks/README.md, "GPU") failed there after training.
        model = AutoModelForSeq2SeqLM.from_pretrained(name_or_path, dtype=dtype or torch.float32, use_kernels=False)
    except Exception as exc:
        raise PeftsumError(_load_hint(name_or_path, exc)) from None
    fuse_activations(model)
    fuse_feed_forward(model)
    fuse_layer_norms(model)
    skinny_output_head(model)
    use_fast_attention(model)
    return model, lm_head_tie_state(model, name_or_path)


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


def load_for_inference(model_path: str, device: str | None = None, bf16: bool = False):
    """Load a fine-tuned model (full checkpoint or PEFT adapter dir) and its tokenizer, in eval mode, on a device.

    With ``bf16`` the loaded weights (base and adapter) are converted to bf16 for decoding (the
    files on disk stay fp32): on a CPU with AMX greedy decoding of mT5-small runs ~2x faster
    than fp32 and than bf16 autocast over fp32 weights, which casts every weight at every step
    (``benchmarks/README.md``, levers). bf16 rounding can flip near-tied tokens, so summaries
    may differ from fp32 decoding's (measured in ``benchmarks/RESULTS.md``). Otherwise the weights
    stay fp32 (how peftsum saves them) and the precision is chosen per call
    (``generate_summaries(..., bf16=...)``, :func:`peftsum.runtime.inference_bf16`).

    Args:
        model_path: a full checkpoint folder, an adapter folder (its base is read from
            ``adapter_config.json``), a run folder containing ``model/``, or a hub id.
        device: where to put the model (``cpu``, ``cuda``, ``cuda:N``); ``None`` = the best found,
            CUDA then CPU (:func:`peftsum.runtime.inference_device`).
        bf16: convert the weights to bf16 (decoding precision from :func:`peftsum.runtime.inference_bf16`).

    Returns:
        ``(model, tokenizer)``; ``next(model.parameters()).device`` is the device used.

    Raises:
        PeftsumError: the folder or its base model cannot be loaded (a base model folder that
            is gone is named); ConfigError: an unusable device.
    """
    from peftsum.runtime import inference_device, weights_dtype

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
    model.to(device=device, dtype=weights_dtype(bf16))
    model.eval()
    return model, tokenizer
