"""Old home of :mod:`peftsum.callbacks` (moved so that ``modeling`` need not import ``training``);
kept only for ``training/trainer.py``'s import until that file's split lands."""

from peftsum.callbacks import JsonlLogCallback, ProgressBarCallback

__all__ = ["JsonlLogCallback", "ProgressBarCallback"]
