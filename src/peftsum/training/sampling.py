"""A length-grouped sampler whose order depends only on (seed, epoch), so ``--resume`` replays it.

``transformers.LengthGroupedSampler`` draws its permutation from the *global* torch RNG
(``torch.randperm(..., generator=None)``) when each epoch starts. That state depends on every
dropout mask drawn before, and a resumed process starts the epoch from a freshly seeded RNG,
so after ``--resume`` the batches of the resumed epoch and all later ones differ from an
uninterrupted run. (The Trainer's plain random sampling is exact: accelerate replaces it with
a ``SeedableRandomSampler`` seeded by ``data_seed + epoch``.) This sampler does the same for
length grouping: each epoch's permutation comes from a private generator seeded with
``seed + epoch``, and the global RNG (dropout) is left untouched.
"""

from __future__ import annotations

from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """``LengthGroupedSampler`` with a per-epoch seeded generator and ``set_epoch``.

    Args:
        batch_size: examples per optimizer step (micro-batch size x accumulation steps), as
            the Trainer passes it to ``LengthGroupedSampler``.
        lengths: length of each example (source tokens): a sequence or a ``datasets`` column.
        seed: base seed (the run's ``data_seed``).
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        # a datasets Column (the Trainer passes ``dataset["length"]``) converts in one batch when sliced;
        # list() would read it row by row (seconds per 100,000 rows)
        super().__init__(batch_size, lengths=list(lengths[:] if hasattr(lengths, "column_name") else lengths))
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order :meth:`__iter__` yields (called by the Trainer/accelerate)."""
        self.epoch = int(epoch)

    def __iter__(self):
        import torch

        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


def own_length_column(own, given, args):
    """The ``length`` column of peftsum's own table, for a length-grouped sampler; ``None`` if unusable.

    The Trainer builds its samplers from the table *without* the columns the model does not take,
    so for length grouping it would count every row's ``input_ids`` in Python, reading the whole
    memory-mapped table (minutes, and the table's size in resident memory, at a million rows).

    Args:
        own: the table peftsum gave the Trainer (``train_dataset`` / ``eval_dataset``).
        given: the table the Trainer builds the sampler for (``own`` less unused columns).
        args: the ``TrainingArguments``.

    Returns:
        ``own["length"]`` (a ``datasets`` column, same rows in the same order as ``given``), or
        ``None``: no length grouping, no such column, or ``given`` is not ``own``'s rows.
    """
    if args.train_sampling_strategy != "group_by_length" or given is None:
        return None
    columns = getattr(own, "column_names", None) or ()
    if "length" not in columns or len(own) != len(given) or not set(given.column_names) <= set(columns):
        return None
    return own["length"]

