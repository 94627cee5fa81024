"""Build a tiny, randomly initialised mT5 with a SentencePiece tokenizer trained on the bundled rows.

Tests and the offline demo need a real ``MT5ForConditionalGeneration`` and a real multilingual
tokenizer without a hub download. :func:`build_tiny_model` trains a SentencePiece unigram model
(byte fallback on, so no text is ever ``<unk>``) on the titles, summaries and article starts of
the bundled XL-Sum rows of all 45 languages, and saves a standard Hugging Face directory that
``AutoModelForSeq2SeqLM.from_pretrained`` / ``AutoTokenizer.from_pretrained`` load without peftsum.

Vocabulary layout follows T5/mT5 (Raffel et al., 2020; Xue et al., 2021): ``<pad>`` = 0,
``</s>`` = 1, ``<unk>`` = 2, the SentencePiece pieces, then 100 sentinels ``<extra_id_99>`` ...
``<extra_id_0>`` at the end. As in mT5 checkpoints the output head is untied from the embeddings.
"""

from __future__ import annotations

import io
import os
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from peftsum.io import atomic_dir

TOKENIZER_TEXT_CHARS = 2000
"""Characters of each article used to train the tokenizer (titles and summaries are used whole)."""


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of the tiny mT5 (defaults: ~1.3M parameters, builds in ~15 s on 2 CPU cores).

    Attributes:
        vocab_size: SentencePiece pieces (100 sentinels are added on top).
        d_model, d_kv, d_ff, num_layers, num_heads: as in ``transformers.MT5Config``.
        seed: seeds SentencePiece's sampling and the weight initialisation.
    """

    vocab_size: int = 8000
    d_model: int = 64
    d_kv: int = 16
    d_ff: int = 128
    num_layers: int = 2
    num_heads: int = 4
    seed: int = 0


def _training_texts() -> list[str]:
    from peftsum.languages import LANGUAGES
    from peftsum.data.xlsum import SPLITS, read_jsonl, sample_dir

    texts: list[str] = []
    for language in LANGUAGES:
        for split in SPLITS:
            path = sample_dir() / language / f"{split}.jsonl"
            if path.is_file():
                for row in read_jsonl(path):
                    texts += [row["title"], row["summary"], row["text"][:TOKENIZER_TEXT_CHARS]]
    return texts


def _train_sentencepiece(spec: TinyModelSpec) -> bytes:
    import sentencepiece as spm

    spm.set_random_generator_seed(spec.seed)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_training_texts()),
        model_writer=model,
        model_type="unigram",
        vocab_size=spec.vocab_size,
        byte_fallback=True,
        character_coverage=0.9995,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        num_threads=1,
        shuffle_input_sentence=False,
        max_sentence_length=20000,
        minloglevel=2,
    )
    return model.getvalue()


def _save_tokenizer(spm_model: bytes, out: Path) -> None:
    """Convert the SentencePiece model to a ``tokenizer.json`` that keeps byte fallback.

    transformers 5.x's ``T5Tokenizer`` rebuilds its Unigram model with ``byte_fallback=False``,
    which would turn unseen characters into ``<unk>``; so the converted tokenizer is saved with
    ``tokenizer_class = "PreTrainedTokenizerFast"`` and the byte-fallback decoder of Llama's
    converter (``transformers.convert_slow_tokenizer.LlamaConverter``).
    """
    from transformers import T5Tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "spiece.model").write_bytes(spm_model)
        tok = T5Tokenizer.from_pretrained(tmp, extra_ids=100)
        tok.model_max_length = 512
        tok.save_pretrained(str(out))
    (out / "spiece.model").write_bytes(spm_model)
    tj_path = out / "tokenizer.json"
    tj = json.loads(tj_path.read_text(encoding="utf-8"))
    tj["model"]["byte_fallback"] = True
    tj["decoder"] = {
        "type": "Sequence",
        "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0},
        ],
    }
    tj_path.write_text(json.dumps(tj, ensure_ascii=False, indent=None, sort_keys=True), encoding="utf-8")
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg["extra_special_tokens"] = [f"<extra_id_{i}>" for i in range(100)]
    cfg.pop("extra_ids", None)
    cfg_path.write_text(json.dumps(cfg, ensure_ascii=False, indent=2, sort_keys=True), encoding="utf-8")


def build_tiny_model(output_dir: str | Path, spec: TinyModelSpec = TinyModelSpec(), overwrite: bool = False) -> Path:
    """Train the tokenizer and save a random tiny ``MT5ForConditionalGeneration`` to ``output_dir``.

    Args:
        output_dir: folder to create; written atomically (built in a sibling temp folder, then renamed).
        spec: model shape and seed. The same spec gives byte-identical files.
        overwrite: replace an existing folder.

    Returns:
        ``output_dir`` as a ``Path``.

    Raises:
        PeftsumError: ``output_dir`` exists and ``overwrite`` is false.
    """
    import torch
    from transformers import GenerationConfig, MT5Config, MT5ForConditionalGeneration

    output_dir = Path(output_dir)
    with atomic_dir(output_dir, overwrite=overwrite) as tmp:
        _save_tokenizer(_train_sentencepiece(spec), tmp)
        vocab = spec.vocab_size + 100
        config = MT5Config(
            vocab_size=vocab,
            d_model=spec.d_model,
            d_kv=spec.d_kv,
            d_ff=spec.d_ff,
            num_layers=spec.num_layers,
            num_decoder_layers=spec.num_layers,
            num_heads=spec.num_heads,
            relative_attention_num_buckets=32,
            relative_attention_max_distance=128,
            dropout_rate=0.1,
            feed_forward_proj="gated-gelu",
            tie_word_embeddings=False,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
        torch.manual_seed(spec.seed)
        model = MT5ForConditionalGeneration(config)
        # transformers 5.x forces MT5Config.tie_word_embeddings = True; real mT5 checkpoints
        # store a separate lm_head, which from_pretrained keeps untied when the saved values
        # differ. Give the tiny model its own head too. std = d_model^-0.5 (not MT5's 1.0, which
        # at d_model 64 starts the loss near 30 instead of ln(vocab) ~ 9).
        head = torch.nn.Parameter(torch.empty_like(model.shared.weight).normal_(0.0, spec.d_model ** -0.5))
        model.lm_head.weight = head
        model.generation_config = GenerationConfig(
            decoder_start_token_id=0, eos_token_id=1, pad_token_id=0, max_new_tokens=84
        )
        model.save_pretrained(str(tmp))
        (tmp / "peftsum_tiny_spec.json").write_text(json.dumps(asdict(spec), indent=2, sort_keys=True))
    os.chmod(output_dir, 0o755)
    return output_dir


def is_model_dir(path: str | Path) -> bool:
    """True if ``path`` holds a Hugging Face model (``config.json`` plus weights)."""
    path = Path(path)
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def default_tiny_dir() -> Path:
    """Where the offline tiny model is cached: ``$PEFTSUM_HOME/tiny-mt5`` (default ``~/.cache/peftsum``)."""
    from peftsum.runtime import peftsum_home

    return peftsum_home() / "tiny-mt5"


def ensure_tiny_model(path: str | Path | None = None, spec: TinyModelSpec = TinyModelSpec()) -> Path:
    """Return a tiny model folder, building it first if it is missing."""
    path = Path(path) if path else default_tiny_dir()
    if not is_model_dir(path):
        build_tiny_model(path, spec, overwrite=path.exists())
    return path


BUILTIN_NAME = "tiny"
"""The name ``--model`` and an experiment's ``model:`` accept for the built-in offline tiny mT5."""


def refuse_ambiguous_name(name: str, builtin: str) -> None:
    """Refuse ``tiny`` when a local folder (or file) of that name exists in the working directory.

    ``peftsum build-tiny-model --output-dir tiny/`` makes such a folder, and ``--model tiny``
    used to load the cached built-in model in silence instead of it.

    Args:
        name: the model name as given.
        builtin: how to ask for the built-in model unambiguously (put in the message), e.g.
            ``"--model /home/me/.cache/peftsum/tiny-mt5"``.

    Raises:
        ConfigError: ``name`` is :data:`BUILTIN_NAME` and ``./tiny`` exists.
    """
    from peftsum.errors import ConfigError

    if name == BUILTIN_NAME and Path(name).exists():
        raise ConfigError(f"'{name}' is both the built-in offline tiny mT5 and the local folder ./{name}; "
                          f"which one is meant? Use ./{name} for the folder, or {builtin} for the built-in model")


def resolve_model_name(name: str, builtin: str | None = None) -> str:
    """``name`` unchanged, or for :data:`BUILTIN_NAME` (``tiny``) the folder of the offline tiny mT5.

    The one place ``--model tiny`` (train, serve, an experiment's ``model:``) becomes a path; the
    model is built on first use (:func:`ensure_tiny_model`).

    Args:
        name: the model as given (hub id, folder or ``tiny``).
        builtin: how to ask for the built-in model unambiguously, for the message of
            :func:`refuse_ambiguous_name` (default: ``--model <its cache folder>``).

    Raises:
        ConfigError: ``name`` is ``tiny`` and a local ``./tiny`` exists too.
    """
    if name != BUILTIN_NAME:
        return name
    refuse_ambiguous_name(name, builtin or f"--model {default_tiny_dir()}")
    return str(ensure_tiny_model())
