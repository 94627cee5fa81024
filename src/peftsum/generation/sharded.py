"""Evaluation under several processes: each rank decodes a share of the batches, rank 0 writes.

``torchrun --nproc-per-node N -m peftsum evaluate ...`` (or ``accelerate launch``) runs
:func:`peftsum.generation.evaluate.evaluate_model` on every rank; it hands the decoding to
:func:`sharded_predictions`. The rows are cut into exactly the length-sorted batches a single
process would use (:func:`peftsum.generation.decode.planned_batches`, read from the Arrow table a
chunk at a time), the batches are dealt round-robin to the ranks (as :func:`peftsum.distributed.shard`
deals a list), every rank generates its batches
with the same padding as the single process, and the results are gathered and put back in
the single process's order (:func:`peftsum.distributed.merge_shards`). ``predictions.jsonl`` is
therefore byte-identical to a one-process evaluation, and so are the ROUGE scores
(``tests/test_distributed.py``, 7, 40 and 101 rows on 2 processes).
"""

from __future__ import annotations

from pathlib import Path

from peftsum import distributed


def sharded_predictions(model_path: str, loaded, ids: list, refs: list[str], pred_file: Path, meta_file: Path,
                        meta: dict,
                        overwrite: bool, settings, max_source_length: int, source_prefix: str, batch_size: int,
                        progress: bool = True, log=print, device: str | None = None,
                        bf16: bool = False) -> dict[str, str]:
    """Decode the rows not yet in ``pred_file`` on all ranks; rank 0 writes ``pred_file``.

    Args:
        model_path: what :func:`peftsum.modeling.load.load_for_inference` loads (on every rank).
        loaded: the evaluation rows (:class:`~peftsum.data.xlsum.LoadedSplit`), identical on every
            rank; articles are streamed from its table.
        ids, refs: its ``id`` and ``summary`` columns, as the caller already read them.
        pred_file, meta_file, meta, overwrite: as in ``evaluate_model`` (predictions already in
            ``pred_file`` from the same settings are kept, as in a single-process run).
        settings: :class:`~peftsum.generation.decode.GenerationSettings`.
        max_source_length, source_prefix, batch_size: as in ``iter_generate``.
        progress: show rank 0's progress bar.
        log: progress lines.
        device: this rank's device (``cuda:<local rank>`` on GPUs, ``cpu``); ``None`` = the best found.
        bf16: decode under bf16 autocast (the run's precision, chosen by ``evaluate_model``).

    Returns:
        ``{row id: prediction}`` for every row, on every rank.

    Raises:
        PeftsumError: ``pred_file`` holds another evaluation (rank 0 raises; the launcher stops
            the others).
    """
    from peftsum.generation.evaluate import _read_done
    from peftsum.io import write_json_atomic
    from peftsum.run_format import write_predictions

    done = distributed.broadcast(_read_done(pred_file, meta_file, meta, overwrite) if distributed.is_main() else None)
    todo = [i for i, rid in enumerate(ids) if rid not in done]
    if done:
        log(f"continuing: {len(ids) - len(todo)} of {len(ids)} predictions already in {pred_file}")
    if not todo:
        return done
    mine = _decode_share(model_path, loaded, todo, settings, max_source_length, source_prefix, batch_size, progress,
                         device, bf16)
    ordered = distributed.merge_shards(distributed.gather(mine))
    new = [(todo[j], pred) for part in ordered for j, pred in part]
    for i, pred in new:
        done[ids[i]] = pred
    if distributed.is_main():  # the file a single process streams: kept rows, then batches in decoding order
        write_json_atomic(meta_file, meta)
        redone = set(todo)
        write_predictions(pred_file, [(ids[i], refs[i], done[ids[i]]) for i in range(len(ids)) if i not in redone]
                          + [(ids[i], refs[i], p) for i, p in new])
    distributed.barrier()
    return done


def _decode_share(model_path: str, loaded, todo: list[int], settings, max_source_length: int, source_prefix: str,
                  batch_size: int, progress: bool, device: str | None, bf16: bool) -> list[list[tuple[int, str]]]:
    """This rank's batches of the rows ``todo``: ``[[(position in todo, prediction), ...] per batch]``."""
    from tqdm.auto import tqdm

    from peftsum.generation.decode import generate_batch, planned_batches
    from peftsum.modeling.load import load_for_inference

    model, tokenizer = load_for_inference(model_path, device, bf16=bf16)
    texts = (r["text"] for r in loaded.iter_rows(todo, columns=["text"]))
    rank, world_size = distributed.world().rank, distributed.world().world_size
    mine = []
    bar = tqdm(total=len(todo), desc="generating", unit="summary", disable=not (progress and distributed.is_main()))
    for k, (batch, features) in enumerate(planned_batches(tokenizer, texts, max_source_length, source_prefix,
                                                          batch_size)):
        if k % world_size == rank:  # round-robin over batches, as distributed.shard deals a list
            # one generate call on exactly this batch, in its order: the same tensors as a single process
            mine.append(list(zip(batch, generate_batch(model, tokenizer, features, settings, bf16))))
        bar.update(len(batch))
    bar.close()
    return mine
