"""Frozen base weights stored in bf16 while a PEFT method trains under bf16 autocast.

Under bf16 autocast every ``nn.Linear`` casts its fp32 weight to bf16 at every call; for a frozen
weight autocast keeps no cache, so a PEFT training step casts the whole frozen base (mT5-small:
166M Linear weights, the 250,112 x 512 output head among them) and keeps those bf16 copies alive
for backward. Storing the frozen Linear weights in bf16 once gives **the same numbers** (autocast
rounds fp32 to bf16 exactly as ``Tensor.to(torch.bfloat16)`` does, and the activations are cast as
before) without the per-step casts, and halves their memory. Adapters, embeddings, layer norms and
optimizer states stay fp32 (PEFT's ``autocast_adapter_dtype``). Measured in ``benchmarks/README.md``.

Only where it is exact and safe: bf16 autocast on, a method whose registry row says
``frozen_base_bf16`` (the base's Linear weights enter only through ``F.linear``: not DoRA, which
takes the weight's norm, nor PiSSA, which rewrites the base), one process (FSDP/DDP keep their
own view of the parameters), and Linear weights not tied to anything else (a tied output head is
also the input embedding). Only while the Trainer trains (:class:`FrozenBf16Callback`, added by
``build_trainer``): at train begin the weights are converted, at train end
:meth:`FrozenBf16.restore` puts the exact fp32 values back (re-read from the base model), so
outside ``trainer.train()`` the model in memory is the one that was loaded and runs in any precision.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainerCallback


@dataclass
class FrozenBf16:
    """Which frozen weights were stored in bf16, and how to get their fp32 values back.

    Attributes:
        model_name: the base model (folder or hub id) the fp32 values are re-read from.
        params: ``(parameter, name in the base model)`` of every converted weight.
    """

    model_name: str
    params: list = field(default_factory=list)
    no_input_cast: list = field(default_factory=list)
    """LoRA layers whose input PEFT no longer upcasts to the adapters' fp32 (see :func:`store_frozen_in_bf16`)."""

    def restore(self) -> None:
        """Give every converted weight its exact fp32 value again (loads the base model once, ~1 s for mT5-small).

        If the base cannot be read any more, the weights are upcast from bf16 with a warning (the
        trained adapter, all that is saved, does not depend on them). A training run that raises
        never reaches ``on_train_end``: its model keeps the bf16 base.
        """
        for layer in self.no_input_cast:
            layer.cast_input_dtype_enabled = True
        self.no_input_cast = []
        if not self.params:
            return
        from peftsum.modeling.load import load_model

        try:
            fresh, _ = load_model(self.model_name)
            state = dict(fresh.named_parameters(remove_duplicate=False))
            values = [state[name].data for _, name in self.params]
        except Exception as exc:  # the base moved or its cache went during training: keep going, say so
            import warnings

            warnings.warn(f"{self.model_name}: could not re-read the base weights after training ({exc}); the "
                          "frozen weights are back in fp32 from their bf16 values (the saved adapter is unaffected)",
                          stacklevel=2)
            values = [param.data.float() for param, _ in self.params]
        for (param, _), value in zip(self.params, values):
            param.data = value.to(param.device)
        self.params = []


def base_names(model) -> dict[int, list[str]]:
    """``id(parameter) -> its names`` in ``model`` (a tied parameter has several); call before PEFT wraps it."""
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    return names


def store_frozen_in_bf16(model, names: dict[int, list[str]], model_name: str) -> FrozenBf16:
    """Convert the frozen, untied ``nn.Linear`` weights of a PEFT-wrapped ``model`` to bf16 (see the module doc).

    Args:
        model: the PEFT model about to train (its base's Parameter objects are the loaded model's).
        names: :func:`base_names` of the base model before wrapping.
        model_name: the base model's folder or hub id, for :meth:`FrozenBf16.restore`.

    Returns:
        The record of what was converted.
    """
    import torch

    from peftsum.modeling.fast_paths import lora_layer_variants

    done = FrozenBf16(model_name)
    seen: set[int] = set()
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if (not isinstance(module, torch.nn.Linear) or weight is None or weight.requires_grad
                or weight.dtype != torch.float32 or id(weight) in seen or len(names.get(id(weight), ())) != 1):
            continue
        seen.add(id(weight))
        weight.data = weight.data.to(torch.bfloat16)
        done.params.append((weight, names[id(weight)][0]))
    for module in model.modules():
        # vanilla LoRA layers: PEFT casts their (bf16, from peftsum's fused layer norm) input up to the adapters'
        # fp32 before the dropout, and autocast casts the dropped values back to bf16 for lora_A: a round trip per
        # call that changes no value (the dropout computes in fp32 and rounds once either way). PEFT's own switch
        # (cast_input_dtype_enabled, peft.helpers.disable_input_dtype_casting) turns it off while training runs.
        variants = lora_layer_variants(module)
        if variants is not None and not variants and getattr(module, "cast_input_dtype_enabled", True):
            module.cast_input_dtype_enabled = False
            done.no_input_cast.append(module)
    return done


class FrozenBf16Callback(TrainerCallback):
    """Frozen base weights in bf16 from ``on_train_begin`` to ``on_train_end`` (module docstring).

    Args:
        names: :func:`base_names` of the base model before PEFT wrapped it.
        model_name: the base model's folder or hub id (the fp32 values are re-read from it).
    """

    def __init__(self, names: dict[int, list[str]], model_name: str):
        self.names, self.model_name, self.stored = names, model_name, None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None and self.stored is None:
            self.stored = store_frozen_in_bf16(model, self.names, self.model_name)

    def on_train_end(self, args, state, control, **kwargs):
        if self.stored is not None:
            self.stored.restore()
            self.stored = None
