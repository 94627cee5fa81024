"""Trainer callbacks: the JSONL training log, the NaN/inf loss guard, AdaLoRA's rank allocation, a progress bar."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from transformers import TrainerCallback

from peftsum.errors import PeftsumError


class JsonlLogCallback(TrainerCallback):
    """Append every logged step to ``training_log.jsonl``.

    Training rows: ``{"step", "epoch", "loss", "learning_rate", "grad_norm", "elapsed_s"}``;
    evaluation rows: ``{"step", "epoch", "eval_loss", ..., "elapsed_s"}``. ``elapsed_s`` is wall
    time since training (re)started plus the time recorded before a resume.

    Args:
        path: the JSONL file; opened in append mode so a resumed run continues it. On resume,
            rows from steps after the checkpoint (logged before the kill) are dropped first.
    """

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = Path(path)
        self.offset = 0.0
        if resume_step is not None and self.path.is_file():
            keep = []
            for line in self.path.read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                if row.get("step", 0) <= resume_step:
                    keep.append(line)
                    self.offset = max(self.offset, float(row.get("elapsed_s", 0.0)))
            self.path.write_text("".join(k + "\n" for k in keep), encoding="utf-8")
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self.start = time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        row = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        for key, value in logs.items():
            if key in ("total_flos",) or not isinstance(value, (int, float)):
                continue
            row[key] = value
        row["elapsed_s"] = round(self.offset + time.perf_counter() - self.start, 3)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


class NanGuardCallback(TrainerCallback):
    """Stop the run with an error naming the step when a *logged* training loss is NaN or infinite.

    Needs ``logging_nan_inf_filter=False`` (otherwise the Trainer hides non-finite losses). The
    step named is the logging step; ``peftsum train`` checks every micro-batch instead
    (``PeftsumTrainer.training_step``) and names the exact step. Used by the tiny-model pretraining.

    Raises:
        PeftsumError: from ``on_log``, when the logged ``loss`` is not finite.
    """

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise PeftsumError(
                f"training loss became {loss} at step {state.global_step}; lower --learning-rate, "
                "use --bf16 or fp32 instead of fp16, or check the data"
            )


class AdaLoraAllocateCallback(TrainerCallback):
    """Run AdaLoRA's rank allocation after every optimizer step.

    PEFT's AdaLoRA only prunes ranks when ``model.base_model.update_and_allocate(step)`` is
    called "after ``loss.backward()`` and ``optimizer.step()``, before ``zero_grad()``" (PEFT's
    docstring); ``transformers.Trainer`` never calls it, so without this callback AdaLoRA
    silently trains as a fixed-rank SVD-LoRA. ``on_optimizer_step`` is exactly that point; the
    step passed is 0-based (the step being finished), so the final budget is fixed at
    ``total_step - tfinal`` and the last step of a ``total_step`` run is inside the final phase.
    """

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        base = getattr(model, "base_model", None)
        if base is not None and hasattr(base, "update_and_allocate"):
            base.update_and_allocate(state.global_step)


class ProgressBarCallback(TrainerCallback):
    """One tqdm bar for training with the latest loss and learning rate in its postfix.

    Replaces the Trainer's default bar, which prints every logged dict on its own line.
    """

    def __init__(self, desc: str = "training"):
        self.desc = desc
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm.auto import tqdm

        if state.is_world_process_zero:
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=self.desc, unit="step",
                            dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs:
            shown = {k: f"{v:.4g}" for k, v in logs.items() if k in ("loss", "eval_loss", "eval_rougeL")}
            if shown:
                self.bar.set_postfix(shown, refresh=False)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
