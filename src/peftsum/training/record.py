"""Run-record helpers: parameter counts, sizes on disk, memory, versions, git commit, model card."""

from __future__ import annotations

import platform
import resource
import subprocess
import sys
from pathlib import Path


def count_parameters(model) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts, counted from the model (shared tensors once)."""
    seen: set[int] = set()
    trainable = total = 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return trainable, total


def dir_size_mb(path: Path) -> float:
    """Size of the files under ``path`` in MB (10^6 bytes)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 1e6


def weights_size_mb(path: Path) -> float:
    """Size of the weight files (``*.safetensors``, ``*.bin``) under ``path`` in MB."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.suffix in (".safetensors", ".bin")) / 1e6


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MB (``getrusage``; Linux reports KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * (1 if sys.platform != "darwin" else 1 / 1024) * 1024 / 1e6


def peak_gpu_mb() -> float | None:
    """Peak GPU memory allocated by torch, MB, or ``None`` without CUDA."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1e6
    return None


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that decide results."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("peftsum", "torch", "transformers", "peft", "datasets", "accelerate", "sentencepiece",
                 "rouge-score"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str | None:
    """The peftsum source tree's git commit (with ``-dirty``), or ``None`` outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def model_card(metrics: dict) -> str:
    """A model card (``README.md``) for a run folder, from its ``metrics.json`` values."""
    hp = metrics.get("hyperparameters", {})
    is_peft = metrics.get("method") != "full"
    load = (
        "from peft import AutoPeftModelForSeq2SeqLM\n"
        "model = AutoPeftModelForSeq2SeqLM.from_pretrained(\"model\")"
        if is_peft
        else "from transformers import AutoModelForSeq2SeqLM\nmodel = AutoModelForSeq2SeqLM.from_pretrained(\"model\")"
    )
    rows = "\n".join(f"| {k} | {v} |" for k, v in hp.items())
    fmt = lambda v, p=2: "n/a" if v is None else f"{v:,.{p}f}"  # noqa: E731
    return f"""---
library_name: {"peft" if is_peft else "transformers"}
base_model: {metrics.get("model")}
license: cc-by-nc-sa-4.0
datasets: [csebuetnlp/xlsum]
tags: [summarization, xlsum, peftsum, {metrics.get("method")}]
---

# {metrics.get("method")} fine-tune of {metrics.get("model")} for XL-Sum summarization

Trained with [peftsum](https://pypi.org/project/peftsum/) on XL-Sum ({metrics.get("data")}),
languages: {", ".join(metrics.get("train_languages", []))}.

| | |
| --- | --- |
| method | {metrics.get("method")} |
| trainable parameters | {metrics.get("trainable_params"):,} ({metrics.get("trainable_pct"):.4f}% of {metrics.get("total_params"):,}) |
| {"adapter" if is_peft else "checkpoint"} size | {fmt(metrics.get("checkpoint_size_mb"))} MB |
| training time | {fmt(metrics.get("train_runtime_s"), 1)} s |
| final training loss | {fmt(metrics.get("train_loss"), 4)} |
| final validation loss | {fmt(metrics.get("eval_loss"), 4)} |

## Hyperparameters

| name | value |
| --- | --- |
{rows}

## How to load

```python
{load}
```

Generate with XL-Sum's settings: `num_beams=4, length_penalty=0.6, no_repeat_ngram_size=2, max_new_tokens=84`
(or `peftsum evaluate --model-path <this folder>`).

Training data: XL-Sum (Hasan et al., 2021), CC BY-NC-SA 4.0, non-commercial research use only.
"""
