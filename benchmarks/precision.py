"""fp32 against bf16: the same training run in both precisions, loss by loss.

Usage (from the repository root; ~1 minute on 2 cores for the tiny mT5):

    .venv/bin/python benchmarks/precision.py                       # tiny mT5, LoRA and full, 20 steps
    .venv/bin/python benchmarks/precision.py --steps 50 --method lora --json precision.json

Trains peftsum's tiny mT5 (built here, or ``--model DIR``) on the bundled English rows from the same
seed twice per method — bf16 autocast off, then on, both explicit so the machine's auto choice does
not matter — and prints the per-step training losses, their absolute and relative difference, and the
maximum. That is what a user moving a config between an AVX2 laptop (fp32 by default), an AMX server
and a GPU (bf16 by default) can expect: docs/precision.md quotes the measured figures.
``tests/test_precision.py`` runs this script for 20 steps and checks the bound it states.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path


def loss_curve(model_dir: str, method: str, steps: int, bf16: bool, out: Path) -> list[float]:
    """Training losses (one per optimizer step) of ``steps`` steps on 8 bundled English rows, batch 4.

    Args:
        model_dir: a seq2seq model folder.
        method: a peftsum method name.
        steps: optimizer steps.
        bf16: bf16 autocast on or off.
        out: run folder (replaced).

    Returns:
        The logged training loss of every step (nats per target token).
    """
    from peftsum.config import TrainConfig
    from peftsum.training.trainer import build_trainer, run_training

    cfg = TrainConfig(model=model_dir, method=method, output_dir=str(out), max_steps=steps, batch_size=4,
                      train_samples=8, val_samples=2, max_source_length=128, max_target_length=32, eval_steps=0,
                      save_steps=10**6, bf16=bf16, seed=0, overwrite=True,
                      learning_rate=1e-3 if method == "full" else 5e-3)
    setup = build_trainer(cfg, log=lambda *a: None)
    run_training(setup, log=lambda *a: None)
    return [r["loss"] for r in setup.trainer.state.log_history if "loss" in r]


def main(argv: list[str] | None = None) -> dict:
    """Run the comparison; print a table per method; return (and optionally write) the figures.

    Returns:
        ``{"machine", "steps", "methods": {method: {"fp32", "bf16", "abs_diff", "rel_diff", "max_rel_diff"}}}``.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model folder (default: peftsum's tiny mT5, built in a temp folder)")
    parser.add_argument("--method", action="append", help="method(s) to compare (default: lora and full)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    import torch

    from peftsum.runtime import bf16_is_fast, cpu_flags

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="peftsum-precision-"))
    model_dir = args.model
    if model_dir is None:
        from peftsum.modeling.tiny import build_tiny_model

        model_dir = str(build_tiny_model(tmp / "tiny-mt5"))
    native = sorted({"amx_bf16", "avx512_bf16"} & cpu_flags())
    machine = (f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
               f"bf16 {'native (' + ', '.join(native) + ')' if bf16_is_fast(cuda=False) else 'emulated (no AMX/AVX512-BF16)'}")
    result = {"machine": machine, "steps": args.steps, "methods": {}}
    print(f"# fp32 vs bf16 autocast, same seed, {args.steps} steps - {machine}")
    for method in args.method or ["lora", "full"]:
        fp32 = loss_curve(model_dir, method, args.steps, False, tmp / f"{method}-fp32")
        bf16 = loss_curve(model_dir, method, args.steps, True, tmp / f"{method}-bf16")
        absd = [abs(a - b) for a, b in zip(fp32, bf16)]
        reld = [d / abs(a) for d, a in zip(absd, fp32)]
        result["methods"][method] = {"fp32": fp32, "bf16": bf16, "abs_diff": absd, "rel_diff": reld,
                                     "max_rel_diff": max(reld)}
        print(f"\n{method}\n| step | fp32 loss | bf16 loss | abs diff | rel diff |\n| ---: | ---: | ---: | ---: | ---: |")
        for i, (a, b, d, r) in enumerate(zip(fp32, bf16, absd, reld), 1):
            print(f"| {i} | {a:.4f} | {b:.4f} | {d:.4f} | {100 * r:.2f}% |")
        print(f"max relative difference: {100 * max(reld):.2f}%")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
