"""Micro-benchmarks of single levers, on mT5-small's real shapes (companion of ``pipeline.py``).

Usage (from the repository root; ~4-6 minutes on 2 cores):

    .venv/bin/python benchmarks/levers.py [--json FILE]

Each lever is timed in isolation, best of several runs (on a shared machine the best run is
the one least disturbed), so that its effect can be read without the whole pipeline's noise:

* ``optimizer``: one AdamW step plus gradient clipping over mT5-small's 300M parameters
  (shapes of the real model), ``foreach`` (transformers' ``adamw_torch``) vs ``fused``;
* ``activation``: forward + backward of mT5's ``gelu_new`` on one encoder layer's feed-forward
  activation (batch 4 x 512 tokens x d_ff 1024): transformers' Python ``NewGELUActivation`` vs
  the fused ``GELUTanh``;
* ``output_head``: one greedy decoding step's output projection (batch x 512 @ 512 x 250,112)
  for batches of 1, 8, 32 and 64: the cost per summary falls with the batch;
* ``logits``: the training loss over the 250k vocabulary for 84 vs 128 target positions
  (batch 4): projection, log-softmax and their backward;
* ``head``: the training head and its loss, plain (logits, then ``cross_entropy`` in fp32) vs
  peftsum's fused ``head_cross_entropy``, trainable and frozen head weight, at the trainer's precision;
* ``matmul``: ``torch.mm`` fp32 vs bf16 (and whether this CPU has AMX / AVX512-BF16);
* ``threads``: a 2048-square fp32 matmul with 1 thread and with all of them;
* ``padding``: model-free. All 225 bundled training rows (45 languages) tokenized at 512/84
  (the tiny SentencePiece tokenizer) and batched by 4 as the seed study does (every row padded
  to 512/128) and as peftsum does (its trainer's length-grouped sampler, padding to the longest
  of each batch): positions processed and model FLOPs of mT5-small (6 x parameters x positions,
  the head on target positions) per epoch. The pipeline benchmark's windows are too small
  for the sampler to group by length (it sorts within megabatches of 4 x batch size x up to
  50 rows), so this is where length grouping shows.
* ``dropout``: F.dropout (``bernoulli_``) vs a ``torch.rand`` mask, forward + backward, on an
  encoder hidden state and on encoder attention weights;
* ``attention_kernel``: one encoder layer's attention softmax + dropout, forward + backward, with
  PyTorch's ops vs peftsum's compiled kernel (``peftsum.modeling.cpu_kernel``), bf16 and fp32; and
  the dropout draw: ``torch.randint`` vs the kernel library's SplitMix64;
* ``compile``: ``torch.compile`` of one mT5-small encoder block (compile time, steady-state step);
* ``allocator``: a fresh 128 MB result tensor with glibc's defaults and after
  ``peftsum.runtime.tune_cpu_allocator`` (run first: it changes the process, and every later
  lever then runs with the allocator peftsum uses).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def best(fn, reps: int = 5, warm: int = 1) -> float:
    for _ in range(warm):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def optimizer() -> dict:
    import torch

    shapes = ([(250112, 512), (250112, 512)] + [(384, 512)] * 48 + [(512, 384)] * 24
              + [(1024, 512)] * 32 + [(512, 1024)] * 16)
    torch.manual_seed(0)
    out = {}
    for kind in ("foreach", "fused"):
        params = [torch.nn.Parameter(torch.randn(*s) * 0.02) for s in shapes]
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        opt = torch.optim.AdamW(params, lr=1e-4, **{kind: True})

        def step():
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()

        out[f"{kind}_s"] = best(step, reps=3)
        del opt, params
    out["params_m"] = sum(a * b for a, b in shapes) / 1e6
    out["speedup"] = out["foreach_s"] / out["fused_s"]
    return out


def activation() -> dict:
    import torch
    from transformers.activations import GELUTanh, NewGELUActivation

    x0 = torch.randn(4, 512, 1024)
    out = {}
    for name, act in (("gelu_new", NewGELUActivation()), ("fused", GELUTanh())):
        def run():
            x = x0.clone().requires_grad_()
            y = act(x)
            y.backward(torch.ones_like(y))
            return y, x.grad

        out[f"{name}_ms"] = 1000 * best(run, reps=10)
        out[f"{name}_result"] = run()
    a, b = out.pop("gelu_new_result"), out.pop("fused_result")
    out["max_abs_diff_forward"] = (a[0] - b[0]).abs().max().item()
    out["max_abs_diff_backward"] = (a[1] - b[1]).abs().max().item()
    out["speedup"] = out["gelu_new_ms"] / out["fused_ms"]
    return out


def output_head() -> dict:
    import torch

    w = torch.randn(250112, 512) * 0.04
    out = {}
    for batch in (1, 8, 32, 64):
        x = torch.randn(batch, 512)
        t = best(lambda: torch.nn.functional.linear(x, w), reps=5)
        out[f"batch_{batch}"] = {"step_ms": 1000 * t, "per_summary_ms": 1000 * t / batch}
    return out


def logits() -> dict:
    import torch

    w = torch.randn(250112, 512) * 0.04
    out = {}
    for positions in (84, 128):
        h0 = torch.randn(4 * positions, 512)
        labels = torch.randint(3, 8000, (4 * positions,))

        def run():
            h = h0.clone().requires_grad_()
            loss = torch.nn.functional.cross_entropy(torch.nn.functional.linear(h, w), labels)
            loss.backward()

        out[f"targets_{positions}_ms"] = 1000 * best(run, reps=3)
    return out


def head() -> dict:
    """The training head and loss under the trainer's precision (bf16 autocast where bf16 is native,
    else fp32), forward + backward, on mT5-small's shapes (231 scored target tokens, the benchmark
    batch's, x 512 @ 512 x 250,112): the head's logits then ``cross_entropy(logits.float())`` vs
    ``peftsum.training.head_loss.head_cross_entropy``; with a trainable head weight (full
    fine-tuning) and a frozen one (a PEFT method; bf16 where bf16 runs). Best time in ms. (Its
    memory effect is a whole step's: ``/usr/bin/time -v benchmarks/steps.py train [--plain-head]``.)"""
    import torch

    from peftsum.runtime import resolve_bf16
    from peftsum.training.head_loss import head_cross_entropy

    bf16 = resolve_bf16(None)
    n, vocab, d = 231, 250_112, 512
    g = torch.Generator().manual_seed(0)
    h0 = torch.randn(n, d, generator=g)
    target = torch.randint(3, vocab, (n,), generator=g)
    out = {"bf16": bf16}
    for name, trainable in (("full", True), ("frozen", False)):
        w = (0.04 * torch.randn(vocab, d, generator=g))
        if not trainable and bf16:
            w = w.bfloat16()
        w.requires_grad_(trainable)
        for kind in ("plain", "fused"):
            def run():
                h = h0.clone().requires_grad_()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    if kind == "plain":
                        loss = torch.nn.functional.cross_entropy(torch.nn.functional.linear(h, w).float(), target)
                    else:
                        loss = head_cross_entropy(h, w, target)
                loss.backward()
                w.grad = None

            out[f"{name}_{kind}_ms"] = 1000 * best(run, reps=5)
    return out


def matmul() -> dict:
    import torch

    out = {}
    for name, dtype, n in (("fp32", torch.float32, 2048), ("bf16", torch.bfloat16, 512)):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        out[f"{name}_gflops"] = 2 * n**3 / best(lambda: torch.mm(a, b), reps=3) / 1e9
    from peftsum.runtime import BF16_CPU_FLAGS, cpu_flags

    flags = cpu_flags()
    out.update({flag: flag in flags for flag in BF16_CPU_FLAGS})
    return out


def allocator() -> dict:
    """The same elementwise op into a fresh 128 MB tensor (the size of one encoder activation of a
    training batch), with glibc's defaults and after ``peftsum.runtime.tune_cpu_allocator``. The
    setting cannot be undone within a process, so this lever runs first and every later lever
    runs with the allocator tuned, as peftsum's own processes do."""
    import torch

    from peftsum.runtime import tune_cpu_allocator

    a = torch.randn(2**25)
    default = best(lambda: a * 2.0, reps=10)
    tuned = tune_cpu_allocator()
    after = best(lambda: a * 2.0, reps=10)
    return {"default_ms": 1000 * default, "tuned_ms": 1000 * after, "tuned": tuned, "speedup": default / after}


def dropout() -> dict:
    """Dropout (p=0.1) forward + backward on an encoder hidden state (4 x 512 x 512) and on encoder
    attention weights (4 x 6 x 512 x 512): ``F.dropout`` (``bernoulli_``) vs a ``torch.rand`` mask vs
    peftsum's ``keep_mask`` (16-bit slices of 64-bit random integers); and the mask alone."""
    import torch

    from peftsum.modeling.fast_paths import apply_dropout, keep_mask

    p = 0.1
    out = {}
    for name, shape in (("hidden", (4, 512, 512)), ("attention", (4, 6, 512, 512))):
        x0 = torch.randn(*shape)

        def fb(fn):
            def run():
                x = x0.clone().requires_grad_()
                fn(x).sum().backward()
            return run

        out[f"{name}_bernoulli_ms"] = 1000 * best(fb(lambda x: torch.nn.functional.dropout(x, p, True)), reps=5)
        out[f"{name}_rand_ms"] = 1000 * best(fb(lambda x: (x * (torch.rand(x.shape) >= p)).mul_(1 / (1 - p))), reps=5)
        out[f"{name}_keep_mask_ms"] = 1000 * best(fb(lambda x: apply_dropout(x, p)), reps=5)
        out[f"{name}_mask_only_bernoulli_ms"] = 1000 * best(lambda: torch.empty(shape).bernoulli_(1 - p), reps=5)
        out[f"{name}_mask_only_rand_ms"] = 1000 * best(lambda: torch.rand(shape) >= p, reps=5)
        out[f"{name}_mask_only_keep_mask_ms"] = 1000 * best(lambda: keep_mask(shape, p), reps=5)
    return out


def attention_kernel() -> dict:
    """One encoder layer's attention probabilities with dropout (4 x 6 x 512 x 512, p = 0.1, the mask
    batched as T5's bias mask is), forward + backward with a mask gradient (full fine-tuning):
    PyTorch's ops (``softmax(scores.float() + mask).to(dtype) * keep``, as peftsum's attention without
    the kernel) vs ``peftsum.modeling.cpu_kernel.attention_probs``, in bf16 and fp32; and the dropout
    draw alone: ``torch.randint`` vs the kernel library's SplitMix64 words (1.57M words, one such layer)."""
    import torch

    from peftsum.modeling import cpu_kernel
    from peftsum.modeling.fast_paths import keep_bits

    out = {"kernel": cpu_kernel.status()}
    if cpu_kernel._library() is None:
        return out
    shape = (4, 6, 512, 512)
    gen = torch.Generator().manual_seed(0)
    mask = torch.randn(shape, generator=gen)
    mask[..., 400:] = torch.finfo(torch.float32).min
    bits, threshold, _ = keep_bits(shape, 0.1)
    for dtype, name in ((torch.bfloat16, "bf16"), (torch.float32, "fp32")):
        scores = torch.randn(shape, generator=gen).to(dtype)
        grad = torch.randn(shape, generator=gen).to(dtype)

        s, m = scores.clone().requires_grad_(), mask.clone().requires_grad_()

        def fb(fn):
            def run():
                s.grad = m.grad = None
                fn(s, m).backward(grad)
            return run

        out[f"{name}_pytorch_ms"] = 1000 * best(
            fb(lambda s, m: torch.softmax(s.float() + m, -1).to(s.dtype) * (bits >= threshold)), reps=7)
        out[f"{name}_kernel_ms"] = 1000 * best(fb(lambda s, m: cpu_kernel.attention_probs(s, m, bits, threshold)), reps=7)
    n = (4 * 6 * 512 * 512) // 4
    out["randint_words_ms"] = 1000 * best(lambda: torch.randint(-(2**63), 2**63 - 1, (n,), dtype=torch.int64), reps=7)
    out["splitmix64_words_ms"] = 1000 * best(lambda: cpu_kernel.random_words(n), reps=7)
    return out


def embedding() -> dict:
    """Backward of mT5-small's shared embedding (250,112 x 512) used by encoder (4 x 512 ids) and decoder
    (4 x 84 ids): two lookups (two dense 512 MB gradients, then added) vs one lookup of both
    (``peftsum.training.loss.one_lookup``)."""
    import torch

    emb = torch.nn.Embedding(250_112, 512)
    ids, dec = torch.randint(0, 250_112, (4, 512)), torch.randint(0, 250_112, (4, 84))

    def two():
        (emb(ids).sum() + emb(dec).sum()).backward()
        emb.weight.grad = None

    def one():
        emb(torch.cat([ids.reshape(-1), dec.reshape(-1)])).sum().backward()
        emb.weight.grad = None

    return {"two_lookups_ms": 1000 * best(two, reps=5), "one_lookup_ms": 1000 * best(one, reps=5)}


def compile_block() -> dict:
    """``torch.compile`` (inductor) of one mT5-small encoder block, forward + backward on 4 x 512
    tokens: compile time and the steady-state step against eager."""
    import torch
    from transformers import MT5Config
    from transformers.models.mt5.modeling_mt5 import MT5Block

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _common as C

    torch.manual_seed(0)
    block = MT5Block(MT5Config(**C.MT5_SMALL), has_relative_attention_bias=True, layer_idx=0).train()
    x0 = torch.randn(4, 512, 512)

    def step(fn):
        def run():
            x = x0.clone().requires_grad_()
            fn(x)[0].sum().backward()
        return run

    eager = best(step(block), reps=3)
    t0 = time.perf_counter()
    compiled = torch.compile(block)
    try:
        step(compiled)()
    except Exception as exc:  # no compiler, unsupported op: report, do not fail the other levers
        return {"eager_ms": 1000 * eager, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    compile_s = time.perf_counter() - t0
    fast = best(step(compiled), reps=3)
    return {"eager_ms": 1000 * eager, "compiled_ms": 1000 * fast, "compile_s": compile_s, "speedup": eager / fast}


def threads() -> dict:
    import torch

    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    before = torch.get_num_threads()
    out = {}
    for k in sorted({1, before}):
        torch.set_num_threads(k)
        out[f"threads_{k}_gflops"] = 2 * n**3 / best(lambda: torch.mm(a, b), reps=3) / 1e9
    torch.set_num_threads(before)
    return out


def padding() -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _common as C
    from transformers import AutoTokenizer

    from peftsum.data.features import tokenize_rows
    from peftsum.modeling.tiny import ensure_tiny_model
    from peftsum.training.sampling import EpochSeededLengthGroupedSampler

    tok = AutoTokenizer.from_pretrained(str(ensure_tiny_model()))
    rows = C.sample_rows("train", 225, seed=0)
    feats = tokenize_rows(rows, tok, max_source_length=C.SOURCE_LEN, max_target_length=C.TARGET_LEN)
    src = [f["length"] for f in feats]
    tgt = [len(f["labels"]) for f in feats]
    groups = {"encoder": 18_883_264, "decoder": 25_178_816, "lm_head": 128_057_344}  # mT5-small
    bs = 4
    order = list(EpochSeededLengthGroupedSampler(bs, src, seed=42))
    grouped_src = grouped_tgt = 0
    for i in range(0, len(order), bs):
        batch = order[i:i + bs]
        grouped_src += len(batch) * max(src[j] for j in batch)
        grouped_tgt += len(batch) * max(tgt[j] for j in batch)
    out = {"rows": len(rows), "real_source": sum(src), "real_target": sum(tgt),
           "reference_source": len(rows) * C.REF_SOURCE_PAD, "reference_target": len(rows) * C.REF_TARGET_PAD,
           "peftsum_source": grouped_src, "peftsum_target": grouped_tgt}
    flops = {k: C.model_flops(groups, out[f"{k}_source"], out[f"{k}_target"]) for k in ("real", "reference", "peftsum")}
    out["model_tflops_per_epoch"] = {k: v / 1e12 for k, v in flops.items()}
    out["flop_ratio_reference_to_peftsum"] = flops["reference"] / flops["peftsum"]
    return out


LEVERS = {"allocator": allocator, "embedding": embedding, "optimizer": optimizer, "activation": activation, "output_head": output_head, "logits": logits,
          "head": head, "matmul": matmul, "threads": threads, "padding": padding, "dropout": dropout,
          "attention_kernel": attention_kernel, "compile": compile_block}
"""Run in this order by default: ``allocator`` first (it changes the process's allocator for the rest)."""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--only", default=",".join(LEVERS), help="comma-separated subset of: " + ", ".join(LEVERS))
    args = p.parse_args(argv)
    import torch

    result = {"torch": torch.__version__, "threads": torch.get_num_threads(),
              "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        t0 = time.perf_counter()
        result[name] = LEVERS[name]()
        print(f"{name} ({time.perf_counter() - t0:.0f} s): {json.dumps(result[name])}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
