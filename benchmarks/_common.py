"""Shared pieces of ``benchmarks/pipeline.py``: the benchmark model, the rows, FLOP counting,
the step timer that runs inside a training process, and the worker message channel.

Nothing here is product code; the product's own paths are called from ``pipeline.py`` and the
reference pipeline lives in ``_reference.py``.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "src" / "peftsum" / "data" / "sample" / "xlsum"

MT5_SMALL = dict(
    vocab_size=250112, d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_decoder_layers=8, num_heads=6,
    relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.1,
    feed_forward_proj="gated-gelu", tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
    decoder_start_token_id=0, layer_norm_epsilon=1e-6,
)
"""google/mt5-small's config.json (architecture only; the weights here are random)."""

MODEL_VERSION = 1
"""Bump when the benchmark model's construction changes (invalidates the cache)."""

SOURCE_LEN, TARGET_LEN = 512, 84
"""Real lengths: XL-Sum's truncation of articles and summaries (tokens, EOS included)."""
REF_SOURCE_PAD, REF_TARGET_PAD = 512, 128
"""The seed study pads every article to 512 and every summary to 128 tokens."""
GEN_TOKENS = 128
"""Greedy decoding length of the evaluation (the seed study's generation_max_length)."""


# ----------------------------------------------------------------------------- model

def default_model_dir() -> Path:
    home = Path(os.environ.get("PEFTSUM_HOME", Path.home() / ".cache" / "peftsum"))
    return home / f"bench-mt5-small-v{MODEL_VERSION}"


def build_model_dir(path: Path, log=print) -> Path:
    """Save a randomly initialised mT5-small (untied head, 250,112 pieces) with the tiny tokenizer.

    The tokenizer is peftsum's offline SentencePiece model (8,100 ids; mT5's own tokenizer
    needs the hub). The random output head is zero for every id the tokenizer cannot produce
    (ids >= 8,000: sentinels and the unused part of mT5's vocabulary) and for pad/EOS/unk, so
    greedy decoding emits real pieces and never stops early: every generated summary is
    exactly the requested length, in both pipelines. The matmul is still the full
    250,112 x 512 one, so the cost is mT5-small's.
    """
    import torch
    from transformers import GenerationConfig, MT5Config, MT5ForConditionalGeneration

    from peftsum.modeling.tiny import ensure_tiny_model

    path = Path(path)
    if (path / "config.json").is_file() and any(path.glob("*.safetensors")) and (path / "tokenizer.json").is_file():
        return path
    t0 = time.perf_counter()
    log(f"building the benchmark model (random mT5-small) in {path} ...")
    tiny = ensure_tiny_model()
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config = MT5Config(**MT5_SMALL)
    torch.manual_seed(0)
    model = MT5ForConditionalGeneration(config)
    d = config.d_model
    head = torch.empty_like(model.shared.weight).normal_(0.0, d ** -0.5)
    sp_pieces = 8000  # the tiny SentencePiece model; 8000..8099 are the sentinels
    head[sp_pieces:] = 0.0
    head[:3] = 0.0  # pad, EOS, unk
    model.lm_head.weight = torch.nn.Parameter(head)
    model.config.tie_word_embeddings = False
    model.generation_config = GenerationConfig(decoder_start_token_id=0, eos_token_id=1, pad_token_id=0)
    model.save_pretrained(str(tmp))
    for name in ("tokenizer.json", "tokenizer_config.json", "spiece.model", "special_tokens_map.json"):
        if (tiny / name).is_file():
            shutil.copy(tiny / name, tmp / name)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    log(f"  built in {time.perf_counter() - t0:.0f} s")
    return path


def param_groups(model) -> dict[str, int]:
    """Parameters by role: encoder/decoder blocks (no embeddings), output head, embeddings, adapters."""
    base = model
    if hasattr(base, "get_base_model"):
        base = base.get_base_model()
    emb = base.get_input_embeddings().weight
    head = base.get_output_embeddings().weight
    seen = {emb.data_ptr(), head.data_ptr()}
    enc = sum(p.numel() for p in base.encoder.parameters() if p.data_ptr() not in seen)
    dec = sum(p.numel() for p in base.decoder.parameters() if p.data_ptr() not in seen)
    return {"encoder": enc, "decoder": dec, "lm_head": head.numel(), "embedding": emb.numel(),
            "total": sum(p.numel() for p in base.parameters())}


def model_flops(groups: dict[str, int], src_tokens: int, tgt_tokens: int) -> float:
    """Model FLOPs of training: 6 x parameters used x tokens.

    Source tokens use the encoder blocks; target tokens use the decoder blocks and the output
    projection (the head counts only for target tokens, not for padding). Embedding lookups
    are not matmuls and are not counted; neither are attention scores (the usual 6N convention).
    """
    return 6.0 * (groups["encoder"] * src_tokens + (groups["decoder"] + groups["lm_head"]) * tgt_tokens)


# ----------------------------------------------------------------------------- rows

def sample_rows(split: str, n: int, seed: int = 0) -> list[dict]:
    """``n`` rows drawn (seeded) from the bundled ``split`` of all 45 languages; each keeps its language."""
    rows = []
    for lang_dir in sorted(SAMPLE.iterdir()):
        path = lang_dir / f"{split}.jsonl"
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    rows.append(dict(json.loads(line), language=lang_dir.name))
    if n > len(rows):
        raise SystemExit(f"only {len(rows)} {split} rows in the bundled sample; ask for fewer")
    return random.Random(seed).sample(rows, n)


def write_rows(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = ("id", "url", "title", "summary", "text")
    with path.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps({k: r[k] for k in keys}, ensure_ascii=False) + "\n")
    return path


# ----------------------------------------------------------------------------- process facts

def peak_rss_mb() -> float:
    """This process's peak resident set size (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def peak_gpu_mb() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- worker channel

class Channel:
    """Worker side of the parent <-> worker protocol: JSON lines out on a dedicated fd, commands in on stdin."""

    def __init__(self, fd: int):
        self.out = os.fdopen(fd, "w", buffering=1)

    def send(self, **msg) -> None:
        self.out.write(json.dumps(msg) + "\n")
        self.out.flush()

    def wait(self) -> str:
        line = sys.stdin.readline()
        return line.strip() or "stop"


def make_step_timer(channel: Channel, warmup_steps: int, steps: int, repeats: int):
    """A ``TrainerCallback`` that times ``repeats`` windows of ``steps`` optimizer steps.

    After ``warmup_steps`` steps it tells the parent it is ready and blocks until told to go;
    each window runs from that release to the end of the window's last optimizer step (so it
    includes batch fetching and collation, forward, backward, clipping, the optimizer, the
    scheduler and the product's logging). Between windows it blocks again, so the parent can
    interleave the two pipelines. After the last window it reports the process's peak RSS
    and exits the process (the run's final evaluation and save are not part of the benchmark).

    Tokens are counted from the batches themselves: source tokens = attention-mask ones,
    target tokens = labels that are not -100 (padding is not counted).
    """
    import torch
    from transformers import TrainerCallback

    state = {"step": 0, "window": 0, "t0": None, "ex": 0, "src": 0, "tgt": 0, "padded_src": 0, "padded_tgt": 0}

    def count_batch(inputs) -> None:
        state["ex"] += int(inputs["input_ids"].shape[0])
        state["src"] += int(inputs["attention_mask"].sum())
        state["tgt"] += int((inputs["labels"] != -100).sum())
        state["padded_src"] += int(inputs["input_ids"].numel())
        state["padded_tgt"] += int(inputs["labels"].numel())

    def release() -> None:
        cmd = channel.wait()
        if cmd != "go":
            finish()
        for k in ("ex", "src", "tgt", "padded_src", "padded_tgt"):
            state[k] = 0
        sync()
        state["cpu0"] = time.process_time()
        state["t0"] = time.perf_counter()

    def finish() -> None:
        channel.send(event="done", peak_rss_mb=peak_rss_mb(), peak_gpu_mb=peak_gpu_mb())
        channel.out.close()
        os._exit(0)

    class StepTimer(TrainerCallback):
        def on_step_end(self, args, st, control, **kwargs):
            state["step"] += 1
            n = state["step"]
            if n == warmup_steps:
                model = kwargs["model"]
                trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
                channel.send(event="ready", params=param_groups(model), trainable=trainable,
                             torch_threads=torch.get_num_threads(), optim=str(getattr(args.optim, "value", args.optim)),
                             bf16=bool(args.bf16), sampling=str(getattr(args, "train_sampling_strategy", "")),
                             device=str(args.device),
                             allocator_tuned=bool(getattr(sys.modules.get("peftsum.runtime"), "_STATE", {}).get("tuned")))
                release()
            elif n > warmup_steps and (n - warmup_steps) % steps == 0:
                sync()
                dt = time.perf_counter() - state["t0"]
                cpu = time.process_time() - state["cpu0"]
                channel.send(event="window", seconds=dt, cpu_seconds=cpu, steps=steps, examples=state["ex"],
                             src_tokens=state["src"], tgt_tokens=state["tgt"], padded_src=state["padded_src"],
                             padded_tgt=state["padded_tgt"])
                state["window"] += 1
                if state["window"] >= repeats:
                    channel.wait()
                    finish()
                release()
            return control

    return StepTimer(), count_batch
