"""Time single training steps or one generation of the benchmark mT5-small, one lever switched at a time.

Usage (from the repository root; each line ~1-2 minutes on 2 cores):

    .venv/bin/python benchmarks/steps.py train --method lora                 # peftsum's defaults
    .venv/bin/python benchmarks/steps.py train --method lora --plain-loss    # the model's padded loss
    .venv/bin/python benchmarks/steps.py train --method lora --plain-dropout # nn.Dropout (bernoulli_)
    PEFTSUM_SYSTEM_MALLOC=1 .venv/bin/python benchmarks/steps.py train ...   # glibc's default allocator
    .venv/bin/python benchmarks/steps.py generate --rows 32 --new-tokens 40

``train``: one batch of 4 real bundled rows (45-language sample, seed 0) at 512/84 tokens, dynamic
padding, loaded with peftsum's ``load_model`` (fused GELU, decoding head, allocator tuning) and
stepped with fused AdamW and gradient clipping like peftsum's trainer; prints each step's time and
the median (after one untimed step). ``generate``: peftsum's ``generate_summaries``, greedy, twice;
prints both times. Companion of ``pipeline.py`` (whole pipelines) and ``levers.py`` (single ops).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402


def train(args) -> None:
    import torch

    from peftsum.data.features import make_collator, tokenize_rows
    from peftsum.modeling.load import fast_dropout, load_model, load_tokenizer
    from peftsum.runtime import tune_cpu_allocator
    from peftsum.training.loss import packed_head_loss

    model_dir = str(C.build_model_dir(C.default_model_dir()))
    model, _ = load_model(model_dir)
    tok = load_tokenizer(model_dir)
    if args.method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type="SEQ_2_SEQ_LM", r=8, lora_alpha=16, lora_dropout=0.1,
                                                 target_modules=["q", "v"]))
    if not args.plain_dropout:
        fast_dropout(model)
    rows = C.sample_rows("train", 4, seed=0)
    feats = [{k: v for k, v in f.items() if k in ("input_ids", "attention_mask", "labels")}
             for f in tokenize_rows(rows, tok, max_source_length=C.SOURCE_LEN, max_target_length=C.TARGET_LEN)]
    batch = make_collator(tok, model)(feats)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=True)
    model.train()

    def step():
        if args.plain_loss:
            loss = model(**batch).loss
        else:
            loss, _ = packed_head_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()

    step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(f"train {args.method}: batch {tuple(batch['input_ids'].shape)} source, {tuple(batch['labels'].shape)} "
          f"target; plain_loss={args.plain_loss} plain_dropout={args.plain_dropout} "
          f"allocator_tuned={tune_cpu_allocator()}")
    print(f"  step times (s): {[round(t, 2) for t in times]}; median {statistics.median(times):.2f}")


def generate(args) -> None:
    from peftsum.generation.decode import GenerationSettings, generate_summaries
    from peftsum.modeling.load import load_model, load_tokenizer
    from peftsum.runtime import tune_cpu_allocator

    model_dir = str(C.build_model_dir(C.default_model_dir()))
    model, _ = load_model(model_dir)
    tok = load_tokenizer(model_dir)
    texts = [r["text"] for r in C.sample_rows("validation", args.rows, seed=0)]
    greedy = GenerationSettings(num_beams=1, length_penalty=1.0, no_repeat_ngram_size=0, max_new_tokens=args.new_tokens)
    generate_summaries(model, tok, texts[:2], GenerationSettings(num_beams=1, max_new_tokens=4),
                       max_source_length=C.SOURCE_LEN, progress=False)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        generate_summaries(model, tok, texts, greedy, max_source_length=C.SOURCE_LEN, progress=False)
        times.append(time.perf_counter() - t0)
    print(f"generate: {args.rows} rows x {args.new_tokens} new tokens, allocator_tuned={tune_cpu_allocator()}: "
          f"{[round(t, 1) for t in times]} s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("train", help="time training steps")
    t.add_argument("--method", choices=("full", "lora"), default="lora")
    t.add_argument("--steps", type=int, default=5, help="timed steps (after one untimed)")
    t.add_argument("--plain-loss", action="store_true", help="the model's own loss over all padded positions")
    t.add_argument("--plain-dropout", action="store_true", help="keep nn.Dropout (bernoulli_)")
    g = sub.add_parser("generate", help="time one greedy generation")
    g.add_argument("--rows", type=int, default=32)
    g.add_argument("--new-tokens", type=int, default=40)
    args = p.parse_args(argv)
    {"train": train, "generate": generate}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
