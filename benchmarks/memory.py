"""The dry-run memory estimate against the measured peak of one training step (companion of tests/test_memory.py).

On the benchmark model (mT5-small's real architecture, random weights: ``_common.build_model_dir``)
and on the tiny mT5, for full fine-tuning and LoRA, fp32, per-device batch and lengths from the
flags (every bundled row reaches them, so batches are at the configured lengths): builds the run
with peftsum's ``build_trainer``, runs one step (optimizer states allocated), measures the next
one with ``torch.profiler``'s memory timeline (``peftsum.training.memory.measure_peak``: live
tensors, not RSS) and prints it next to ``peftsum.training.memory.estimate``.

    .venv/bin/python benchmarks/memory.py --batch-size 2 --source 128 --target 32
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    """Measure and estimate each (model, method); print a table and optionally write JSON."""
    import torch

    from _common import build_model_dir, default_model_dir
    from peftsum.config import TrainConfig
    from peftsum.modeling.tiny import ensure_tiny_model
    from peftsum.training.memory import measure_training_step

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--source", type=int, default=128)
    ap.add_argument("--target", type=int, default=32)
    ap.add_argument("--methods", default="lora,full")
    ap.add_argument("--models", default="tiny,bench")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    models = {"tiny": lambda: ensure_tiny_model(), "bench": lambda: build_model_dir(default_model_dir())}
    rows = []
    for name in args.models.split(","):
        model_dir = models[name]()
        for method in args.methods.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                cfg = TrainConfig(model=str(model_dir), method=method, output_dir=str(Path(tmp) / "run"), max_steps=1,
                                  batch_size=args.batch_size, max_source_length=args.source,
                                  max_target_length=args.target, train_samples=args.batch_size, val_samples=1,
                                  bf16=False, eval_steps=0, languages=["english"])
                measured, est = measure_training_step(cfg)
            row = {"model": name, "method": method, "batch": args.batch_size, "source": args.source,
                   "target": args.target, "measured_mb": measured / 1e6, "estimate_mb": est.peak / 1e6,
                   "ratio": est.peak / measured, "parts_mb": {k: est.to_dict()[k] / 1e6 for k in
                                                              ("params", "gradients", "optimizer", "activations")}}
            rows.append(row)
            print(f"{name:<6} {method:<5} measured {row['measured_mb']:9.1f} MB  estimate {row['estimate_mb']:9.1f} MB"
                  f"  estimate/measured {row['ratio']:.3f}  parts {json.dumps({k: round(v, 1) for k, v in row['parts_mb'].items()})}",
                  flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
