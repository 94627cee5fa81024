"""Evaluation under several processes: each rank decodes a share of the batches, rank 0 writes.

``torchrun --nproc-per-node N -m peftsum evaluate ...`` (or ``accelerate launch``) runs
:func:`peftsum.generation.evaluate.evaluate_model` on every rank; it hands the decoding to
:func:`sharded_predictions`. The rows are cut into exactly the length-sorted batches a single
process would use (:func:`peftsum.generation.decode.length_sorted_batches`), the batches are dealt
round-robin to the ranks (:func:`peftsum.distributed.shard`), every rank generates its batches
with the same padding as the single process, and the results are gathered and put back in
the single process's order (:func:`peftsum.distributed.merge_shards`). ``predictions.jsonl`` is
therefore byte-identical to a one-process evaluation, and so are the ROUGE scores
(``tests/test_distributed.py``, 7, 40 and 101 rows on 2 processes).
"""

from __future__ import annotations

from pathlib import Path

from peftsum import distributed


def sharded_predictions(model_path: str, rows: list[dict], pred_file: Path, meta_file: Path, meta: dict,
                        overwrite: bool, settings, max_source_length: int, source_prefix: str, batch_size: int,
                        progress: bool = True, log=print, device: str | None = None,
                        bf16: bool = False) -> dict[str, str]:
    """Decode the rows not yet in ``pred_file`` on all ranks; rank 0 writes ``pred_file``.

    Args:
        model_path: what :func:`peftsum.modeling.load.load_for_inference` loads (on every rank).
        rows: the evaluation rows (``id``, ``text``, ``summary``), identical on every rank.
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
    from peftsum.generation.decode import iter_generate, length_sorted_batches
    from peftsum.generation.evaluate import _read_done
    from peftsum.io import write_json_atomic
    from peftsum.run_format import write_predictions
    from peftsum.modeling.load import load_for_inference

    done = distributed.broadcast(_read_done(pred_file, meta_file, meta, overwrite) if distributed.is_main() else None)
    todo = [i for i, r in enumerate(rows) if r["id"] not in done]
    if done:
        log(f"continuing: {len(rows) - len(todo)} of {len(rows)} predictions already in {pred_file}")
    if not todo:
        return done
    model, tokenizer = load_for_inference(model_path, device)
    texts = [rows[i]["text"] for i in todo]
    enc = tokenizer([source_prefix + t for t in texts], max_length=max_source_length, truncation=True)
    batches = list(length_sorted_batches([len(ids) for ids in enc["input_ids"]], batch_size))
    mine = []
    show = progress and distributed.is_main()
    for batch in distributed.shard(batches):
        # one generate call on exactly this batch, in its order: the same tensors as a single process
        for idx, preds in iter_generate(model, tokenizer, [texts[j] for j in batch], settings, max_source_length,
                                        source_prefix, len(batch), progress=show, bf16=bf16):
            mine.append([(batch[k], p) for k, p in zip(idx, preds)])
    ordered = distributed.merge_shards(distributed.gather(mine))
    new = [(rows[todo[j]], pred) for part in ordered for j, pred in part]
    for row, pred in new:
        done[row["id"]] = pred
    if distributed.is_main():  # the file a single process streams: kept rows, then batches in decoding order
        write_json_atomic(meta_file, meta)
        redone = set(todo)
        kept = [r for i, r in enumerate(rows) if i not in redone]
        write_predictions(pred_file, [(r["id"], r["summary"], done[r["id"]]) for r in kept]
                          + [(r["id"], r["summary"], p) for r, p in new])
    distributed.barrier()
    return done
