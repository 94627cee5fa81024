"""Batched summary generation with explicit, XL-Sum-default decoding settings."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Iterable, Iterator

from peftsum.data.xlsum import STREAM_ROWS

DEFAULT_BATCH_SIZE = 32
"""Articles per ``generate`` call. Each decoding step reads the whole output projection (mT5:
250,112 x 512 floats, 0.5 GB) whatever the batch, so larger batches amortise it: on 2 CPU cores a
greedy step for 32 articles costs ~1.5x one for 8 (benchmarks/README.md)."""


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings. Defaults are XL-Sum's (Hasan et al., 2021; csebuetnlp/xl-sum
    ``seq2seq/pipeline.py``): beam 4, length_penalty 0.6, no_repeat_ngram_size 2, at most 84 new tokens.

    Attributes:
        num_beams: beam width (1 = greedy).
        length_penalty: exponent on length in beam scores (< 1 favours shorter summaries).
        no_repeat_ngram_size: forbid repeating n-grams of this size (0 = off).
        max_new_tokens: hard cap on generated tokens (always explicit; never the model's default).
        min_new_tokens: EOS is blocked before this many tokens (0 = off, XL-Sum's setting; the
            offline demo uses a few so that its barely trained tiny models do not stop at once).
    """

    num_beams: int = 4
    length_penalty: float = 0.6
    no_repeat_ngram_size: int = 2
    max_new_tokens: int = 84
    min_new_tokens: int = 0

    def __post_init__(self):
        """Refuse settings ``generate`` cannot use (an experiment's ``generation:`` section lands here).

        Raises:
            ConfigError: num_beams or max_new_tokens below 1, a negative no_repeat_ngram_size or
                min_new_tokens, min_new_tokens above max_new_tokens, a non-finite length_penalty.
        """
        import math

        from peftsum.errors import ConfigError

        for name, low in (("num_beams", 1), ("max_new_tokens", 1), ("no_repeat_ngram_size", 0), ("min_new_tokens", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.min_new_tokens > self.max_new_tokens:
            raise ConfigError(f"min_new_tokens ({self.min_new_tokens}) is above max_new_tokens ({self.max_new_tokens})")
        if not isinstance(self.length_penalty, (int, float)) or not math.isfinite(self.length_penalty):
            raise ConfigError(f"length_penalty must be a finite number, got {self.length_penalty!r}")

    def to_kwargs(self) -> dict:
        """Keyword arguments for ``model.generate``."""
        kw = asdict(self)
        if not self.min_new_tokens:
            kw.pop("min_new_tokens")
        if self.num_beams == 1:
            kw.pop("length_penalty")  # only used by beam search
        kw["early_stopping"] = True if self.num_beams > 1 else False
        return kw


def length_sorted_batches(lengths: list[int], batch_size: int) -> Iterator[list[int]]:
    """Indices grouped into batches of similar length (longest first), to cut padding.

    Args:
        lengths: token length per example.
        batch_size: examples per batch.

    Yields:
        Lists of example indices; every index appears exactly once.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def generate_summaries(model, tokenizer, texts: list[str], settings: GenerationSettings = GenerationSettings(),
                       max_source_length: int = 512, source_prefix: str = "", batch_size: int = DEFAULT_BATCH_SIZE,
                       progress: bool = True, bf16: bool = False) -> list[str]:
    """Summarize ``texts`` in length-sorted batches; results come back in input order.

    Args:
        model: a seq2seq model or PEFT model (put in eval mode here).
        tokenizer: its tokenizer.
        texts: articles.
        settings: decoding settings.
        max_source_length: article tokens kept (EOS last).
        source_prefix: task prefix (must match training).
        batch_size: articles per ``generate`` call.
        progress: show a progress bar.
        bf16: decode with the weights in bf16 (:func:`bf16_weights`) on the model's device;
            ``False`` = the model's own dtype (fp32 for peftsum's models).

    Returns:
        One decoded summary per text (special tokens removed, whitespace stripped).
    """
    out: list[str | None] = [None] * len(texts)
    for idx, preds in iter_generate(model, tokenizer, texts, settings, max_source_length, source_prefix, batch_size,
                                    progress, bf16=bf16):
        for i, p in zip(idx, preds):
            out[i] = p
    return [o or "" for o in out]


def planned_batches(tokenizer, texts: Iterable[str], max_source_length: int = 512, source_prefix: str = "",
                    batch_size: int = DEFAULT_BATCH_SIZE,
                    chunk_rows: int | None = None) -> Iterator[tuple[list[int], dict[str, list[list[int]]]]]:
    """The batches of one decoding pass, read from a stream of articles.

    ``chunk_rows`` articles at a time are tokenized (prefix + article, truncated to
    ``max_source_length`` tokens with EOS last) and cut into length-sorted batches
    (:func:`length_sorted_batches`), so memory holds one chunk, never the whole split. Every
    process of a sharded evaluation builds exactly these batches (:mod:`peftsum.generation.sharded`).

    Args:
        tokenizer: the model's tokenizer.
        texts: articles, any iterable (a list or :meth:`peftsum.data.xlsum.LoadedSplit.iter_rows`).
        max_source_length, source_prefix, batch_size: as in :func:`generate_summaries`.
        chunk_rows: articles tokenized at a time (default :data:`~peftsum.data.xlsum.STREAM_ROWS`).

    Yields:
        ``(indices, features)``: positions in ``texts`` and their unpadded ``input_ids`` /
        ``attention_mask`` lists.
    """
    import itertools

    it = iter(texts)
    offset, chunk_rows = 0, chunk_rows or STREAM_ROWS
    while chunk := list(itertools.islice(it, chunk_rows)):
        enc = tokenizer([source_prefix + t for t in chunk], max_length=max_source_length, truncation=True)
        for idx in length_sorted_batches([len(ids) for ids in enc["input_ids"]], batch_size):
            yield ([offset + i for i in idx],
                   {"input_ids": [enc["input_ids"][i] for i in idx], "attention_mask": [enc["attention_mask"][i] for i in idx]})
        offset += len(chunk)


def generate_batch(model, tokenizer, features: dict, settings: GenerationSettings, bf16: bool = False) -> list[str]:
    """Summaries of one planned batch (:func:`planned_batches`), in the batch's order.

    Decodes on the device of the model's weights, under bf16 autocast when ``bf16`` (a no-op for weights
    already in bf16, :func:`bf16_weights`; it keeps a model with fp32 weights working).
    """
    import torch

    from peftsum.runtime import autocast_context

    device = next(model.parameters()).device
    feats = [{"input_ids": i, "attention_mask": m} for i, m in zip(features["input_ids"], features["attention_mask"])]
    batch = tokenizer.pad(feats, return_tensors="pt").to(device)
    with torch.inference_mode(), autocast_context(device.type, bf16):
        ids = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             **settings.to_kwargs())
    return [s.strip() for s in tokenizer.batch_decode(ids, skip_special_tokens=True)]


@contextlib.contextmanager
def bf16_weights(model, bf16: bool = True):
    """Decode with the model's fp32 weights rounded to bf16 for the duration of the block, then restored.

    What bf16 decoding means in peftsum: the weights in bf16 (``load_for_inference(bf16=True)``
    converts them on load; this does the same to a model in memory, e.g. right after training, so
    both decode the same summaries). Faster than bf16 autocast over fp32 weights, which casts every
    weight at every decoding step: mT5-small, 12 rows x 127 greedy tokens on the 2-core AMX machine,
    fp32 12.5 s, autocast 11.9 s, bf16 weights 5.9 s (``benchmarks/README.md``). Each fp32
    parameter's ``.data`` is swapped for a bf16 copy (the model holds both meanwhile: 1.5x its fp32
    size) and given back afterwards, so the same ``Parameter`` objects keep their exact fp32 values
    (an optimizer mid-training is unaffected). Sharded (DTensor) parameters are left as they are.
    :func:`iter_generate` holds it for the whole pass, between the batches it yields too: code run
    between batches sees the bf16 weights, and a generator left unfinished keeps them until it is
    closed or collected.

    Args:
        model: any ``torch.nn.Module``.
        bf16: do it (False: a no-op, for ``with bf16_weights(model, bf16):``).
    """
    import torch

    swapped = []
    if bf16:
        for t in {id(t): t for t in [*model.parameters(), *model.buffers()]}.values():
            if t.dtype == torch.float32 and type(t.data) is torch.Tensor:
                swapped.append((t, t.data))
                t.data = t.data.to(torch.bfloat16)
    try:
        yield model
    finally:
        for t, data in swapped:
            t.data = data


def iter_generate(model, tokenizer, texts: Iterable[str], settings=GenerationSettings(), max_source_length=512,
                  source_prefix="", batch_size=DEFAULT_BATCH_SIZE, progress=True, bf16=False,
                  total: int | None = None) -> Iterator[tuple[list[int], list[str]]]:
    """Like :func:`generate_summaries` but yields ``(indices, summaries)`` per batch, for streaming to disk.

    ``texts`` may be a stream (articles are read :data:`STREAM_ROWS` at a time,
    :func:`planned_batches`); ``total`` sizes the progress bar when it has no ``len``. Decodes on
    the device of the model's weights (see :func:`peftsum.modeling.load.load_for_inference`).
    """
    from tqdm.auto import tqdm

    model.eval()
    total = len(texts) if total is None and hasattr(texts, "__len__") else total
    bar = tqdm(total=total, desc="generating", unit="summary", disable=not progress)
    with bf16_weights(model, bf16):
        for idx, features in planned_batches(tokenizer, texts, max_source_length, source_prefix, batch_size):
            preds = generate_batch(model, tokenizer, features, settings, bf16)
            bar.update(len(idx))
            yield idx, preds
    bar.close()
