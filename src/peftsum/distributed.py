"""Several processes (``torchrun`` / ``accelerate launch``): who am I, wait for the others, gather results.

peftsum has no launcher of its own: ``torchrun --nproc-per-node N -m peftsum ...`` and
``accelerate launch --num-processes N -m peftsum ...`` set ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``
and every process runs the same command. The Trainer (through accelerate) then does
data-parallel training; this module holds the little peftsum needs around it:

* :func:`world` reads the launcher's environment (cheap: no torch import, usable in ``--dry-run``);
* :func:`init` starts the process group the way the Trainer will (accelerate's ``PartialState``:
  gloo on CPU, nccl on GPUs), so peftsum can use it *before* the Trainer exists (rank 0 prepares
  the run folder while the others wait);
* :func:`is_main`, :func:`barrier`, :func:`broadcast`, :func:`gather` for "only rank 0 writes";
* :func:`shard` splits a list of batches round-robin over the ranks and :func:`merge_shards`
  puts the gathered results back in the original order (sharded evaluation);
* :func:`fsdp_requested` and :func:`refuse_distributed` for commands that must run as one process.

Single-process runs (no launcher) see ``world_size == 1`` and every function is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

from peftsum.errors import ConfigError


@dataclass(frozen=True)
class World:
    """The process's place in the job, as the launcher set it.

    Attributes:
        rank: global process index (0 = main process: the only one that writes files).
        world_size: number of processes (1 = not distributed).
        local_rank: index on this machine (selects the GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def world() -> World:
    """The launcher's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (torchrun, accelerate, MPI via accelerate).

    Returns:
        A :class:`World`; ``World(0, 1, 0)`` when no launcher set the variables.
    """

    def env_int(*names: str, default: int) -> int:
        for name in names:
            if os.environ.get(name, "").strip():
                try:
                    return int(os.environ[name])
                except ValueError:
                    pass
        return default

    return World(rank=env_int("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", default=0),
                 world_size=max(1, env_int("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", default=1)),
                 local_rank=env_int("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", default=0))


def is_distributed() -> bool:
    """True when launched with more than one process."""
    return world().world_size > 1


def is_main() -> bool:
    """True on rank 0 (and in a single-process run): the process that writes files and prints."""
    return world().rank == 0


def _group_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init() -> None:
    """Start the process group if launched with several processes and it is not started yet.

    Uses accelerate's ``PartialState`` (the object the Trainer's ``TrainingArguments`` creates),
    so the backend (gloo on CPU, nccl on CUDA) and device are the ones training will use and the
    group is created once. A no-op in a single-process run.
    """
    if not is_distributed() or _group_ready():
        return
    import torch
    from accelerate import PartialState

    PartialState(cpu=not torch.cuda.is_available())


def shutdown() -> bool:
    """Destroy this process's group at the end of a command (``torch.distributed.destroy_process_group``).

    A group left for interpreter exit is torn down during static destruction, where gloo's threads can end
    the process with "terminate called without an active exception" (SIGABRT) after the work is done: seen
    once in CI, rank 1 of a 2-process ``accelerate launch`` run that had finished and written its run
    (2026-12-04). PyTorch's documentation asks programs to destroy the group before exiting. A no-op where no
    group was started (torch not even imported).

    Returns:
        True if a group was destroyed.
    """
    import sys

    if "torch.distributed" not in sys.modules:
        return False
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return False
    dist.destroy_process_group()
    return True


def barrier() -> None:
    """Wait until every process gets here (no-op in a single-process run)."""
    if is_distributed():
        init()
        import torch.distributed as dist

        dist.barrier()


def broadcast(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every process (picklable objects; no-op in a single-process run)."""
    if not is_distributed():
        return obj
    init()
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order, on every process (``[obj]`` in a single-process run)."""
    if not is_distributed():
        return [obj]
    init()
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shard(items: Sequence[Any], rank: int | None = None, world_size: int | None = None) -> list[Any]:
    """This rank's share of ``items``, round-robin: items ``rank, rank + W, rank + 2W, ...``.

    Round-robin over *batches* (not rows) keeps every batch exactly as a single process would
    build it, so generation with padding gives bit-identical results; it also balances the
    length-sorted (longest first) batches across ranks.

    Args:
        items: the full list (e.g. batches of row indices), identical on every rank.
        rank, world_size: default to :func:`world`.

    Returns:
        The items of this rank, in their original relative order (possibly empty).
    """
    w = world()
    rank = w.rank if rank is None else rank
    world_size = w.world_size if world_size is None else world_size
    return list(items[rank::world_size])


def merge_shards(parts: Sequence[Sequence[Any]]) -> list[Any]:
    """Undo :func:`shard`: interleave per-rank lists back into the original order.

    Args:
        parts: ``parts[r]`` = what rank ``r`` produced for ``shard(items, r, len(parts))``.

    Returns:
        One list in the order of the original ``items``.
    """
    out: list[Any] = []
    longest = max((len(p) for p in parts), default=0)
    for i in range(longest):
        for part in parts:
            if i < len(part):
                out.append(part[i])
    return out


def fsdp_requested() -> bool:
    """True when the launcher asked for FSDP (``accelerate launch`` with an FSDP config)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").strip().lower() in ("1", "true", "yes")


def refuse_distributed(command: str, instead: str) -> None:
    """Refuse a one-process command started by a multi-process launcher (or with an FSDP config).

    Args:
        command: the command's name (``merge``).
        instead: what to run instead.

    Raises:
        ConfigError: launched with ``WORLD_SIZE > 1`` or ``ACCELERATE_USE_FSDP``.
    """
    if world().world_size > 1 or fsdp_requested():
        raise ConfigError(f"{command} does not run under FSDP or several processes; {instead}")


def effective_batch(batch_size: int, gradient_accumulation_steps: int, world_size: int | None = None) -> int:
    """Examples per optimizer step: per-device batch x processes x accumulation steps.

    Args:
        batch_size: examples per device per micro-batch.
        gradient_accumulation_steps: micro-batches per optimizer step.
        world_size: data-parallel processes (default: :func:`world`).

    Returns:
        The global (effective) batch size.
    """
    world_size = world().world_size if world_size is None else world_size
    return batch_size * gradient_accumulation_steps * world_size


def sum_over_ranks(*counts: int) -> tuple[int, ...]:
    """Each count summed over all processes (the counts themselves in a single-process run).

    Args:
        counts: integers counted on this rank (tokens, examples).

    Returns:
        The job-wide sums, in the same order.
    """
    if not is_distributed():
        return tuple(int(c) for c in counts)
    init()
    import torch
    import torch.distributed as dist

    device = "cuda" if torch.cuda.is_available() and dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([int(c) for c in counts], dtype=torch.long, device=device)
    dist.all_reduce(t)
    return tuple(int(v) for v in t.tolist())


BATCH_KEYS = frozenset({"batch_size", "gradient_accumulation_steps", "world_size"})
"""Run-config keys that may change on ``--resume`` as long as the global (effective) batch does not."""


def run_config_record(cfg) -> dict:
    """The dict saved as a run's ``peftsum_config.json``: the config plus the world size it ran with.

    Args:
        cfg: a resolved :class:`peftsum.config.TrainConfig`.

    Returns:
        ``cfg.to_dict()`` with ``world_size`` (processes at launch) added.
    """
    return {**cfg.to_dict(), "world_size": world().world_size}


def batch_diff(old: dict, new: dict) -> list[str]:
    """Why a resumed run's batch settings differ from the checkpointed run's, or ``[]`` if they fit.

    A run may resume with another number of processes (2 -> 1, 1 -> 2) if the global batch
    ``batch_size x gradient_accumulation_steps x world_size`` stays the same: every optimizer
    step then sees the same rows (the length-grouped order is built per global batch, see
    ``PeftsumTrainer._get_train_sampler``) and the Trainer skips the same number of steps.

    Args:
        old: the saved ``peftsum_config.json`` (``world_size`` missing = 1: runs before it was recorded).
        new: :func:`run_config_record` of the new config.

    Returns:
        One line per mismatch (empty when compatible).
    """
    def eff(d: dict) -> int | None:
        try:
            return int(d["batch_size"]) * int(d["gradient_accumulation_steps"]) * int(d.get("world_size") or 1)
        except (KeyError, TypeError, ValueError):
            return None

    if eff(old) == eff(new):
        return []
    def show(d: dict) -> str:
        return (f"{d.get('batch_size')} per device x {d.get('world_size') or 1} processes x "
                f"{d.get('gradient_accumulation_steps')} accumulation = {eff(d)}")
    return [f"global batch: {show(old)} -> {show(new)} (change batch_size or gradient_accumulation_steps so that "
            f"the global batch stays {eff(old)})"]
