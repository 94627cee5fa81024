"""Time single training steps or one generation of the benchmark mT5-small, one lever switched at a time.

Usage (from the repository root; each line ~1-2 minutes on 2 cores):

    .venv/bin/python benchmarks/steps.py train --method lora                 # peftsum's defaults
    .venv/bin/python benchmarks/steps.py train --method lora --plain-loss    # the model's padded loss
    .venv/bin/python benchmarks/steps.py train --method lora --plain-dropout # nn.Dropout (bernoulli_)
    .venv/bin/python benchmarks/steps.py train --method lora --plain-ff      # transformers' gated feed-forward
    .venv/bin/python benchmarks/steps.py train --method lora --plain-head    # head, then cross_entropy (fp32 logits)
    .venv/bin/python benchmarks/steps.py train --method full --dense-embedding  # AdamW over all embedding rows
    python benchmarks/steps.py train --device cuda --method full [--touched-rows]  # a GPU (the default where there is one)
    PEFTSUM_SYSTEM_MALLOC=1 .venv/bin/python benchmarks/steps.py train ...   # glibc's default allocator
    GOMP_SPINCOUNT=300000 .venv/bin/python benchmarks/steps.py train ...     # libgomp's default spin count
    .venv/bin/python benchmarks/steps.py train --method full --profile 25   # top 25 operators, self CPU time
    .venv/bin/python benchmarks/steps.py train --method full --ceiling      # the MFU the step's products bound
    .venv/bin/python benchmarks/steps.py generate --rows 32 --new-tokens 40
    .venv/bin/python benchmarks/steps.py generate --rows 12 --new-tokens 127 --precision fp32 --profile 15

``train``: one batch of 4 real bundled rows (45-language sample, seed 0) at 512/84 tokens, dynamic
padding, loaded with peftsum's ``load_model`` (fused GELU, decoding head, allocator tuning) and
stepped with fused AdamW and peftsum's gradient clipping like peftsum's trainer; prints each step's time and
the median (after one untimed step). ``generate``: peftsum's ``generate_summaries``, greedy, twice;
prints both times. ``--profile N`` runs the timed calls under ``torch.profiler`` and prints the N
operators with the most self CPU time (issue #11's "profile first"; the profiler's own memory use
makes buffers of hundreds of MB fault their pages in again, so it inflates ``fill_``/``copy_`` on
the 250,112-row embedding and head: read shares with that in mind, times from a run without it). Companion of ``pipeline.py`` (whole pipelines) and ``levers.py`` (single ops).
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

ARGS = None


def timed(fn, n: int) -> list[float]:
    """Run ``fn`` n times; seconds of each call. With ``--profile`` the calls run under the torch
    profiler and the top operators by self CPU time are printed afterwards."""
    import torch

    cuda = ARGS.device.startswith("cuda")
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    prof = torch.profiler.profile(activities=acts, record_shapes=ARGS.shapes) if ARGS.profile else None
    times = []
    if prof:
        prof.__enter__()
    for _ in range(n):
        C.sync()
        t0 = time.perf_counter()
        fn()
        C.sync()  # a CUDA step is timed to its kernels' end, not to the last launch
        times.append(time.perf_counter() - t0)
    if prof:
        prof.__exit__(None, None, None)
        table = prof.key_averages(group_by_input_shape=ARGS.shapes)
        print(table.table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total", row_limit=ARGS.profile, max_shapes_column_width=90))
    return times


def train(args) -> None:
    import torch

    from peftsum.data.features import make_collator, tokenize_rows
    from peftsum.modeling.attention import use_fast_attention
    from peftsum.modeling.load import fast_dropout, load_model, load_tokenizer
    from peftsum.runtime import resolve_bf16, tune_cpu_allocator
    from peftsum.training.frozen_bf16 import base_names, store_frozen_in_bf16
    from peftsum.training.clipping import clip_gradients
    from peftsum.training.loss import packed_head_loss

    model_dir = str(C.build_model_dir(C.default_model_dir()))
    model, _ = load_model(model_dir)
    model.to(args.device)
    tok = load_tokenizer(model_dir)
    names = base_names(model)
    if args.method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type="SEQ_2_SEQ_LM", r=8, lora_alpha=16, lora_dropout=0.1,
                                                 target_modules=["q", "v"]))
    if not args.plain_dropout:
        fast_dropout(model)
    for flag, suffix in ((args.plain_ff, "DenseGatedActDense"), (args.plain_norm, "LayerNorm")):
        for m in model.modules():  # transformers' own module (peftsum's subclass undone)
            if flag and type(m).__name__.startswith("Fused") and type(m).__name__.endswith(suffix):
                m.__class__ = type(m).__bases__[0]
    if not args.plain_attention:
        use_fast_attention(model)
    if args.plain_head:  # the packed loss's head and loss as separate ops (fp32 logits, log-softmax)
        import peftsum.training.loss as L

        L.fused_head_applies = lambda base, head: False
    if args.compile:  # each T5 layer class is traced once per class (transformers' kwarg-deprecation wrapper guards on it)
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        model.compile() if args.compile == "module" else None
    rows = C.sample_rows("train", 4, seed=0)
    feats = [{k: v for k, v in f.items() if k in ("input_ids", "attention_mask", "labels")}
             for f in tokenize_rows(rows, tok, max_source_length=C.SOURCE_LEN, max_target_length=C.TARGET_LEN)]
    batch = {k: v.to(args.device) for k, v in make_collator(tok, model)(feats).items()}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=True)
    # as the trainer (training.sparse_rows: CPU only), or forced with --touched-rows on a GPU
    if args.method == "full" and not args.dense_embedding and (args.device == "cpu" or args.touched_rows):
        from peftsum.training.sparse_rows import RowSparseEmbedding

        RowSparseEmbedding(model.get_input_embeddings(), opt)
    model.train()

    bf16 = resolve_bf16(None, cuda=args.device.startswith("cuda")) if args.bf16 is None else args.bf16
    frozen = args.method == "lora" and bf16 and not args.fp32_frozen  # as the trainer (training.frozen_bf16)
    if frozen:
        store_frozen_in_bf16(model, names, model_dir)
    autocast = torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16, enabled=bf16)

    phases: dict[str, list[float]] = {}

    def mark(name: str, t0: float) -> float:
        C.sync()
        t1 = time.perf_counter()
        phases.setdefault(name, []).append(t1 - t0)
        return t1

    def step():
        C.sync()
        t = time.perf_counter()
        with autocast:
            if args.plain_loss:
                loss = model(**batch).loss
            else:
                loss, _ = packed_head_loss(model, batch)
        t = mark("forward", t)
        loss.backward()
        t = mark("backward", t)
        clip_gradients(params, 1.0, opt)  # as the trainer: exact norm, the coefficient folded into fused AdamW
        t = mark("clip", t)
        opt.step()
        t = mark("optimizer", t)
        opt.zero_grad()
        mark("zero_grad", t)

    step()
    times = timed(step, args.steps)
    if args.ceiling:
        ceiling(model, batch, step, phases, times)
    print(f"train {args.method} (bf16 autocast: {bf16}, frozen base in bf16: {frozen}: batch {tuple(batch['input_ids'].shape)} source, {tuple(batch['labels'].shape)} "
          f"target; plain_loss={args.plain_loss} plain_dropout={args.plain_dropout} plain_head={args.plain_head} "
          f"allocator_tuned={tune_cpu_allocator()}")
    print(f"  step times (s): {[round(t, 2) for t in times]}; median {statistics.median(times):.2f}")
    print("  phases, median s: " + ", ".join(f"{k} {statistics.median(v[1:]):.3f}" for k, v in phases.items()))


def ceiling(model, batch, step, phases: dict, times: list[float]) -> None:
    """Print the step's matmul floor and the MFU it bounds (``--ceiling``).

    One more step runs under a ``TorchDispatchMode`` that records every ``mm``/``addmm``/``bmm``/
    ``baddbmm`` call (shapes, strides, dtype); each call is then replayed alone on fresh tensors
    of the same layout (median of 7 runs), so the sum is what the step's products cost with
    nothing else between them (warm caches, no casts, no Python). Add the optimizer and clipping
    phases (memory-bound, timed in the step) and the result is the shortest step this machine's
    matmul library allows without changing the model, batch or optimizer: model FLOPs (6N
    convention, ``_common.model_flops``) over that time, against the ``torch.mm`` peak of
    square bf16/fp32 products (``pipeline.matmul_peak``, the peak ``pipeline.py``'s MFU is
    against), is the highest MFU any change elsewhere could reach.
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    aten = torch.ops.aten
    kinds = {aten.mm.default: "mm", aten.mm.out: "mm", aten.addmm.default: "addmm", aten.bmm.default: "bmm",
             aten.baddbmm.default: "baddbmm"}
    calls = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kind = kinds.get(func)
            if kind is not None:
                mats = [a for a in args if isinstance(a, torch.Tensor)]
                a, b = (mats[1], mats[2]) if kind in ("addmm", "baddbmm") else (mats[0], mats[1])
                calls.append((kind, [(tuple(t.shape), t.stride(), t.dtype) for t in (a, b)]))
            return func(*args, **(kwargs or {}))

    memory_s = statistics.median(phases["clip"][1:]) + statistics.median(phases["optimizer"][1:])  # before the slow one
    with Record():
        step()

    def fresh(shape, stride, dtype):
        size = 1 + sum((n - 1) * st for n, st in zip(shape, stride))  # the storage the layout spans
        return torch.randn(size, dtype=dtype, device=ARGS.device).as_strided(shape, stride)

    by_shape = collections.Counter((kind, tuple(spec)) for kind, spec in calls)
    total_s = total_flop = 0.0
    rows = []
    for (kind, spec), n in by_shape.items():
        a, b = (fresh(*x) for x in spec)
        fn = (lambda a=a, b=b: torch.bmm(a, b)) if kind in ("bmm", "baddbmm") else (lambda a=a, b=b: torch.mm(a, b))
        fn()
        ts = []
        for _ in range(7):
            C.sync()
            t0 = time.perf_counter()
            fn()
            C.sync()
            ts.append(time.perf_counter() - t0)
        t = statistics.median(ts)
        flop = 2.0 * a.shape[-2] * a.shape[-1] * b.shape[-1] * (a.shape[0] if a.dim() == 3 else 1)
        total_s += n * t
        total_flop += n * flop
        rows.append((n * t, n, kind, spec, flop / t / 1e9))
    rows.sort(reverse=True)
    step_s = statistics.median(times)
    for v in phases.values():
        v.pop()  # the recorded step's phases leave the medians printed after this
    groups = C.param_groups(model)
    src = int(batch["attention_mask"].sum())
    tgt = int((batch["labels"] != -100).sum())
    model_flop = C.model_flops(groups, src, tgt)
    from pipeline import matmul_peak  # the peak pipeline.py's MFU is against

    peak = matmul_peak(lambda msg: None)
    dtype = "bf16" if any(spec[0][2] == torch.bfloat16 for _, spec in calls) else "fp32"
    print(f"  matmul floor: {len(calls)} products in one step ({len(by_shape)} layouts), {total_flop / 1e9:.0f} GFLOP, "
          f"{total_s:.3f} s when each runs alone ({total_flop / total_s / 1e9:.0f} GFLOP/s); top layouts:")
    for t, n, kind, spec, rate in rows[:8]:
        shapes = " x ".join(f"{s}{'' if st[-1] == 1 else 'T'}" for s, st, _ in spec)  # T: a transposed view
        print(f"    {kind} {shapes}: {n} calls, {t * 1000:.1f} ms ({rate:.0f} GFLOP/s)")
    print(f"  peak ({dtype} torch.mm of squares, as pipeline.py): {peak[dtype]:.0f} GFLOP/s; model FLOPs per step (6N, real tokens): "
          f"{model_flop / 1e9:.0f} G")
    print(f"  step {step_s:.3f} s: MFU {100 * model_flop / step_s / (peak[dtype] * 1e9):.1f}%")
    for label, s in (("products alone", total_s), ("products + clip + optimizer", total_s + memory_s)):
        print(f"  if the step were only its {label} ({s:.3f} s): MFU {100 * model_flop / s / (peak[dtype] * 1e9):.1f}%")
    print(f"  everything else (attention, norms, casts, loss, Python): {step_s - total_s - memory_s:.3f} s")


def generate(args) -> None:
    import torch

    from peftsum.generation import decode
    from peftsum.generation.decode import GenerationSettings
    from peftsum.modeling.load import load_for_inference
    from peftsum.runtime import inference_bf16, tune_cpu_allocator

    model_dir = str(C.build_model_dir(C.default_model_dir()))
    precision = args.precision or ("bf16-weights" if inference_bf16(None, None, cuda=args.device.startswith("cuda"))
                                   else "fp32")
    model, tok = load_for_inference(model_dir, args.device, bf16=precision == "bf16-weights")
    bf16 = precision != "fp32"  # bf16-autocast: fp32 weights under autocast (peftsum before issue #11)
    def generate_summaries(*a, **k):
        if precision != "bf16-autocast":
            return decode.generate_summaries(*a, **k)
        with torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16):  # autocast over fp32 weights, no weight conversion
            return decode.generate_summaries(*a, **{**k, "bf16": False})
    texts = [r["text"] for r in C.sample_rows("validation", args.rows, seed=0)]
    greedy = GenerationSettings(num_beams=1, length_penalty=1.0, no_repeat_ngram_size=0, max_new_tokens=args.new_tokens)
    generate_summaries(model, tok, texts[:2], GenerationSettings(num_beams=1, max_new_tokens=4),
                       max_source_length=C.SOURCE_LEN, progress=False, bf16=bf16)
    times = timed(lambda: generate_summaries(model, tok, texts, greedy, max_source_length=C.SOURCE_LEN,
                                             progress=False, bf16=bf16), 2)
    print(f"generate ({precision}): {args.rows} rows x {args.new_tokens} new tokens, "
          f"allocator_tuned={tune_cpu_allocator()}: "
          f"{[round(t, 1) for t in times]} s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("train", help="time training steps")
    t.add_argument("--method", choices=("full", "lora"), default="lora")
    t.add_argument("--steps", type=int, default=5, help="timed steps (after one untimed)")
    t.add_argument("--plain-loss", action="store_true", help="the model's own loss over all padded positions")
    t.add_argument("--plain-dropout", action="store_true", help="keep nn.Dropout (bernoulli_)")
    t.add_argument("--plain-ff", action="store_true",
                   help="transformers' gated feed-forward instead of peftsum's fused kernel (fuse_feed_forward)")
    t.add_argument("--plain-norm", action="store_true",
                   help="transformers' T5 layer norm instead of peftsum's fused kernel (fuse_layer_norms)")
    t.add_argument("--plain-attention", action="store_true",
                   help="transformers' SDPA attention (math path with bernoulli_ dropout) instead of peftsum's")
    t.add_argument("--plain-head", action="store_true",
                   help="the head, then cross_entropy on fp32 logits, instead of peftsum's fused head loss")
    g = sub.add_parser("generate", help="time one greedy generation")
    g.add_argument("--rows", type=int, default=32)
    g.add_argument("--new-tokens", type=int, default=40)
    g.add_argument("--precision", choices=("fp32", "bf16-autocast", "bf16-weights"), default=None,
                   help="decoding precision (default: peftsum's: bf16 weights where bf16 is native, else fp32)")
    for sp in (t, g):
        sp.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda where there is one, as "
                        "peftsum; CUDA steps are timed with synchronize; --profile then sorts by self CUDA time)")
        sp.add_argument("--profile", type=int, default=0, metavar="N",
                        help="run the timed calls under torch.profiler and print the top N operators by self CPU time")
        sp.add_argument("--shapes", action="store_true",
                        help="with --profile: one row per operator and input shapes (record_shapes)")
    t.add_argument("--fp32-frozen", action="store_true",
                   help="LoRA: keep the frozen base fp32 (autocast casts it every step) instead of bf16")
    t.add_argument("--dense-embedding", action="store_true",
                   help="full: the embedding's dense gradient and AdamW over all its rows (not the touched rows)")
    t.add_argument("--touched-rows", action="store_true",
                   help="full, on a GPU: AdamW over the embedding's touched rows (the Trainer uses it on CPUs only)")
    t.add_argument("--ceiling", action="store_true",
                   help="after the timed steps, replay the step's matrix products one by one and print the MFU they "
                        "bound (the products + clipping + optimizer as the whole step)")
    t.add_argument("--compile", choices=("module",), default=None, help="torch.compile the model (inductor)")
    t.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast as the trainer's default does (default: auto, native bf16 only)")
    args = p.parse_args(argv)
    if args.what == "train":  # as `peftsum train` does, before torch loads (peftsum.runtime.tune_openmp_spin)
        from peftsum.runtime import tune_openmp_spin

        tune_openmp_spin()
    if args.device is None:  # after the spin count: importing torch first would fix libgomp's default
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    global ARGS
    ARGS = args
    {"train": train, "generate": generate}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
