"""``peftsum merge``: fold an adapter into its base model and save a standalone checkpoint."""

from __future__ import annotations

from pathlib import Path

from peftsum.errors import PeftsumError
from peftsum.io import atomic_dir
from peftsum.run_format import CONFIG_FILE, run_files

def merge_adapter(adapter_dir: str | Path, output_dir: str | Path, overwrite: bool = False) -> Path:
    """Merge a PEFT adapter into its base model (``merge_and_unload``) and save it with the tokenizer,
    a ``generation_config.json`` holding the decoding settings it was evaluated with (XL-Sum's when
    it has no scores) and a model card (``README.md``: base, adapter, method, training data and
    licence, scores; :mod:`peftsum.modeling.shipping`).

    Args:
        adapter_dir: a PEFT adapter folder (or a run folder holding ``model/``).
        output_dir: where the merged model goes (written atomically).
        overwrite: replace an existing folder.

    Returns:
        ``output_dir``; it loads with ``AutoModelForSeq2SeqLM.from_pretrained`` without peft.

    Raises:
        PeftsumError: not an adapter folder, an adapter of no peftsum method, a method that cannot be
            merged (:attr:`~peftsum.modeling.methods.Method.mergeable`: prefix/prompt tuning add virtual
            tokens, not weight updates), or an existing output without ``overwrite``;
            started under several processes or FSDP (ConfigError).
    """
    from peftsum.distributed import refuse_distributed
    from peftsum.io import ensure_writable_target
    from peftsum.modeling.load import load_for_inference
    from peftsum.modeling.shipping import evaluation_results, set_generation_settings, settings_evaluated_with

    refuse_distributed("merge", "run `peftsum merge` as one plain process (no torchrun, accelerate launch or FSDP "
                       "config) on the saved model/ folder, which is a standard, unsharded checkpoint")
    adapter_dir, method = _mergeable_adapter(Path(adapter_dir))  # checked before loading anything
    ensure_writable_target(Path(output_dir), overwrite, markers=("config.json", "model.safetensors"))  # before loading
    run_dir = adapter_dir.parent if (adapter_dir.parent / CONFIG_FILE).is_file() else None
    results = evaluation_results(run_dir)
    settings = settings_evaluated_with(results)
    model, tokenizer = load_for_inference(str(adapter_dir))
    base = str(model.peft_config[model.active_adapter].base_model_name_or_path)
    merged = model.merge_and_unload()
    set_generation_settings(merged.generation_config, settings)
    card = _card(run_dir, base, adapter_dir, method, results, settings)
    with atomic_dir(Path(output_dir), overwrite=overwrite) as tmp:
        merged.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / "README.md").write_text(card, encoding="utf-8")
    return Path(output_dir)


def _mergeable_adapter(adapter_dir: Path):
    """``(adapter folder, its registry Method)``; :class:`PeftsumError` unless it is a mergeable adapter."""
    import json

    from peftsum.modeling.load import is_adapter_dir
    from peftsum.modeling.methods import METHODS, method_of_adapter

    if (adapter_dir / "model").is_dir():
        adapter_dir = adapter_dir / "model"
    if not adapter_dir.exists():
        raise PeftsumError(f"{adapter_dir}: no such folder (give a run folder or its model/ adapter folder)")
    if not is_adapter_dir(adapter_dir):
        raise PeftsumError(f"{adapter_dir}: not a PEFT adapter folder (no adapter_config.json); "
                           "a full fine-tuning checkpoint is already standalone")
    try:
        adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text())
        peft_type = str(adapter_config["peft_type"]).upper().split(".")[-1]
    except (ValueError, KeyError, TypeError) as exc:
        raise PeftsumError(f"{adapter_dir / 'adapter_config.json'}: unreadable adapter config ({exc})") from None
    method = method_of_adapter(adapter_config)
    if method is None:
        merges = ", ".join(m.name for m in METHODS.values() if m.mergeable)
        raise PeftsumError(f"{adapter_dir}: {peft_type} adapters come from no peftsum method; "
                           f"peftsum merges the adapters of: {merges}")
    if not method.mergeable:
        raise PeftsumError(f"{adapter_dir}: {peft_type} adapters cannot be merged into the weights "
                           "(prefix/prompt tuning add virtual tokens); serve them with the base model instead")
    return adapter_dir, method


def _card(run_dir: Path | None, base: str, adapter_dir: Path, method, results, settings) -> str:
    """The merged model's README.md, from the run's metrics.json and training config when there is a run."""
    from peftsum.modeling.shipping import merged_model_card

    trained, metrics = run_files(run_dir) if run_dir else (None, None)
    return merged_model_card(base=base, adapter=str(adapter_dir), method=(metrics or {}).get("method", method.name),
                             metrics=metrics, results=results, settings=settings,
                             max_source_length=(trained or {}).get("max_source_length", 512),
                             source_prefix=(trained or {}).get("source_prefix", ""))
