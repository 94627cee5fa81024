"""``peftsum evaluate`` and ``peftsum generate``: decode a split, stream predictions, score them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from peftsum.distributed import broadcast, is_distributed, is_main
from peftsum.errors import PeftsumError
from peftsum.generation.decode import DEFAULT_BATCH_SIZE, GenerationSettings, iter_generate
from peftsum.io import ensure_writable_target, write_json_atomic
from peftsum.run_format import CONFIG_FILE, PREDICTIONS_META_FILE, predictions_beside, prediction_line, write_results

if TYPE_CHECKING:
    from peftsum.data.xlsum import LoadedSplit


def run_config(model_path: str | Path) -> dict:
    """The training config saved with a run (``peftsum_config.json`` in the folder or its parent), or ``{}``."""
    path = Path(model_path)
    for cand in (path / CONFIG_FILE, path.parent / CONFIG_FILE):
        if cand.is_file():
            return json.loads(cand.read_text(encoding="utf-8"))
    return {}


def _decoding(trained: dict, bf16: bool | None, device: str | None) -> tuple[bool, str, dict]:
    """How a run is decoded: ``(bf16, device, {"trained", "evaluated"})`` from the command's ``--bf16``/``--device``
    and the run's saved config (:func:`peftsum.runtime.inference_bf16`, :func:`peftsum.runtime.inference_device`)."""
    from peftsum.runtime import inference_bf16, inference_device, precision_name

    trained_bf16 = trained.get("bf16")
    device = inference_device(device)
    bf16 = inference_bf16(bf16, trained_bf16, cuda=device.startswith("cuda"))
    precision = {"trained": None if trained_bf16 is None else precision_name(trained_bf16),
                 "evaluated": precision_name(bf16)}
    return bf16, device, precision


def _read_done(pred_file: Path, meta_file: Path, meta: dict, overwrite: bool) -> dict[str, str]:
    if overwrite or not pred_file.exists():
        for f in (pred_file, meta_file):
            f.unlink(missing_ok=True)
        return {}
    if not meta_file.is_file() or json.loads(meta_file.read_text()) != meta:
        raise PeftsumError(f"{pred_file} exists from a different evaluation; pass --overwrite to replace it")
    done = {}
    with pred_file.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break  # a line cut by a kill: everything after it is redone
            done[row["id"]] = row["prediction"]
    return done


@dataclass
class _Evaluation:
    """One evaluation's resolved settings, its rows and where its files go."""

    model_path: str
    output_file: Path
    loaded: LoadedSplit
    split: str
    data: str
    settings: GenerationSettings
    batch_size: int
    max_source_length: int
    source_prefix: str
    progress: bool
    bf16: bool
    device: str
    precision: dict
    ids: list
    refs: list
    pred_file: Path
    meta_file: Path
    meta: dict


def _resolve(model_path, language, output_file, split, data, num_samples, settings, batch_size, max_source_length,
             source_prefix, overwrite, progress, bf16, device) -> _Evaluation:
    """Check the target, read the run's config, settle precision/device/lengths/split and load the rows."""
    from peftsum.data.xlsum import eval_split, load_split

    output_file = Path(output_file)
    ensure_writable_target(output_file, overwrite, alternative=None)
    trained = run_config(model_path)
    bf16, device, precision = _decoding(trained, bf16, device)
    max_source_length = max_source_length or trained.get("max_source_length", 512)
    source_prefix = trained.get("source_prefix", "") if source_prefix is None else source_prefix
    split = split or eval_split(language, data)
    loaded = load_split(language, split, data, num_samples)
    meta = {"model_path": str(model_path), "language": loaded.language, "split": split, "data": str(data),
            "generation": asdict(settings), "max_source_length": max_source_length, "source_prefix": source_prefix,
            "precision": precision["evaluated"]}
    if bf16:  # bf16 decoding has meant bf16 weights since issue #11 (autocast before): no resuming across the two
        meta["decoding"] = "bf16 weights"
    output_file.parent.mkdir(parents=True, exist_ok=True)
    return _Evaluation(model_path, output_file, loaded, split, data, settings, batch_size, max_source_length,
                       source_prefix, progress, bf16, device, precision,
                       ids=loaded.column("id"), refs=loaded.column("summary"),  # articles are streamed, never held
                       pred_file=predictions_beside(output_file),
                       meta_file=output_file.parent / PREDICTIONS_META_FILE, meta=meta)


def _predictions_so_far(ev: _Evaluation, overwrite: bool, log) -> dict[str, str]:
    """``{id: prediction}`` already in predictions.jsonl; under several processes each rank decodes a share
    first and rank 0 writes them (``peftsum.generation.sharded``)."""
    if not is_distributed():
        return _read_done(ev.pred_file, ev.meta_file, ev.meta, overwrite)
    from peftsum.distributed import world
    from peftsum.generation.sharded import sharded_predictions

    rank_device = f"cuda:{world().local_rank}" if ev.device == "cuda" else ev.device  # one GPU per rank
    return sharded_predictions(str(ev.model_path), ev.loaded, ev.ids, ev.refs, ev.pred_file, ev.meta_file, ev.meta,
                               overwrite, ev.settings, ev.max_source_length, ev.source_prefix, ev.batch_size, ev.progress,
                               log, device=rank_device, bf16=ev.bf16)


def _decode_missing(ev: _Evaluation, done: dict[str, str], log) -> None:
    """Decode the rows not in ``done`` (adding them to it), appending to predictions.jsonl batch by batch."""
    from peftsum.modeling.load import load_for_inference

    ids, refs = ev.ids, ev.refs
    todo = [i for i, rid in enumerate(ids) if rid not in done]
    if done and not is_distributed():
        log(f"continuing: {len(ids) - len(todo)} of {len(ids)} predictions already in {ev.pred_file}")
    if not todo:
        return
    write_json_atomic(ev.meta_file, ev.meta)
    model, tokenizer = load_for_inference(ev.model_path, ev.device, bf16=ev.bf16)
    log(f"decoding on {ev.device} in {ev.precision['evaluated']}")
    # rewrite what is kept (drops a line cut by a kill), then append batch by batch
    with ev.pred_file.open("w", encoding="utf-8") as fh:
        for i, rid in enumerate(ids):
            if rid in done:
                fh.write(prediction_line(rid, refs[i], done[rid]))
        texts = (r["text"] for r in ev.loaded.iter_rows(todo, columns=["text"]))
        for idx, preds in iter_generate(model, tokenizer, texts, ev.settings, ev.max_source_length,
                                        ev.source_prefix, ev.batch_size, ev.progress, bf16=ev.bf16,
                                        total=len(todo)):
            for j, pred in zip(idx, preds):
                rid = ids[todo[j]]
                done[rid] = pred
                fh.write(prediction_line(rid, refs[todo[j]], pred))
            fh.flush()


def _score(ev: _Evaluation, done: dict[str, str], stemmer: bool | None, n_resamples: int, seed: int) -> dict:
    """ROUGE with bootstrap CIs, the paired comparison with LEAD-1 and how the predictions were made."""
    from peftsum.metrics import score_texts
    from peftsum.metrics.baselines import compare_to_lead1

    loaded = ev.loaded
    predictions = [done[rid] for rid in ev.ids]
    result = score_texts(predictions, ev.refs, loaded.language, stemmer=stemmer, n_resamples=n_resamples,
                         seed=seed)
    # model vs LEAD-1 on the same references; the articles are streamed again for their first sentences
    result["paired"] = compare_to_lead1(result, loaded.iter_rows(columns=["id", "text", "summary"]))
    result.update({"model_path": str(ev.model_path), "split": ev.split, "data": str(ev.data),
                   "source": loaded.source, "dropped_rows": dict(loaded.dropped), "generation": asdict(ev.settings),
                   "max_source_length": ev.max_source_length, "precision": ev.precision, "device": ev.device,
                   "ids": ev.ids})
    return result


def _write(ev: _Evaluation, result: dict) -> dict:
    """Write results.json (stamped with the schema version); refresh the run's model card when it is a run's."""
    result = write_results(ev.output_file, result)
    run_dir = Path(ev.model_path)
    if ev.output_file.resolve().is_relative_to(run_dir.resolve()):  # an evaluation of a run, in the run folder
        from peftsum.training.record import refresh_model_card

        refresh_model_card(run_dir)  # the card lists every evaluation with its precision and device
    return result


def evaluate_model(model_path: str, language: str, output_file: str | Path, split: str | None = None,
                   data: str = "sample", num_samples: int | None = None,
                   settings: GenerationSettings = GenerationSettings(), batch_size: int = DEFAULT_BATCH_SIZE,
                   max_source_length: int | None = None, source_prefix: str | None = None,
                   stemmer: bool | None = None, n_resamples: int = 1000, seed: int = 0, overwrite: bool = False,
                   progress: bool = True, log=print, bf16: bool | None = None, device: str | None = None) -> dict:
    """Generate summaries for one language/split, stream them to disk, score them.

    Predictions go to ``predictions.jsonl`` beside ``output_file`` (``{"id", "reference",
    "prediction"}`` per line, appended batch by batch so memory stays flat). An interrupted run
    continues from the predictions already written when it is started again with the same settings.
    Under several processes (torchrun / accelerate launch) the batches are split over the ranks and
    rank 0 writes the same files a single process would (``peftsum.generation.sharded``).

    Args:
        model_path: run folder, full checkpoint, adapter folder or hub id.
        language: XL-Sum language of the evaluation rows (may differ from training: zero-shot).
        output_file: the results JSON (score JSON of ``docs/run_format.md`` plus generation settings).
        split: ``test``/``validation``; default test where present, else validation.
        data: ``sample``, ``hub`` or a local path.
        num_samples: evaluate the first N rows (``None`` = all).
        settings: decoding settings (XL-Sum's by default).
        batch_size: articles per generate call.
        max_source_length, source_prefix: default to the run's training config, else 512 and "".
        stemmer: ``None`` = the language's XL-Sum default.
        n_resamples, seed: bootstrap settings.
        overwrite: replace existing results and predictions.
        bf16: decode under bf16 autocast; ``None`` = the run's training precision
            (:func:`peftsum.runtime.inference_bf16`).
        device: ``cpu``, ``cuda``, ``cuda:N``; ``None`` = CUDA when available, else CPU.

    Returns:
        The results dict that was written; ``precision`` (``{"trained", "evaluated"}``: ``"bf16"``,
        ``"fp32"`` or ``None`` when unknown) and ``device`` say how it was computed.

    Raises:
        PeftsumError: existing results without ``overwrite``, bad language/split/data, unloadable model.
    """
    ev = _resolve(model_path, language, output_file, split, data, num_samples, settings, batch_size,
                  max_source_length, source_prefix, overwrite, progress, bf16, device)
    done = _predictions_so_far(ev, overwrite, log)
    _decode_missing(ev, done, log)
    if not is_main():  # rank 0 scores and writes; the others get its result
        return broadcast(None)
    result = _score(ev, done, stemmer, n_resamples, seed)
    return broadcast(_write(ev, result))


def write_samples(model_path: str, language: str, output_file: str | Path, num_samples: int = 10,
                  split: str | None = None, data: str = "sample", settings: GenerationSettings = GenerationSettings(),
                  article_chars: int = 400, overwrite: bool = False, progress: bool = True,
                  bf16: bool | None = None, device: str | None = None) -> Path:
    """Write a human-readable file of sample summaries: article start, reference, prediction.

    ``bf16`` and ``device`` as in :func:`evaluate_model` (default: the run's precision, the best device).

    Raises:
        PeftsumError: output exists without ``overwrite``; bad language/split/data; unloadable model.
    """
    from peftsum.data.xlsum import eval_split, load_split
    from peftsum.generation.decode import generate_summaries
    from peftsum.io import write_text_atomic
    from peftsum.modeling.load import load_for_inference

    output_file = Path(output_file)
    ensure_writable_target(output_file, overwrite, alternative=None)
    trained = run_config(model_path)
    bf16, device, precision = _decoding(trained, bf16, device)
    split = split or eval_split(language, data)
    rows = load_split(language, split, data, num_samples).rows
    model, tokenizer = load_for_inference(model_path, device, bf16=bf16)
    preds = generate_summaries(model, tokenizer, [r["text"] for r in rows], settings,
                               trained.get("max_source_length", 512), trained.get("source_prefix", ""),
                               progress=progress, bf16=bf16)
    trained_in = f", trained in {precision['trained']}" if precision["trained"] else ""
    parts = [f"# {model_path}: decoded on {device} in {precision['evaluated']}{trained_in}\n"]
    for i, (row, pred) in enumerate(zip(rows, preds), 1):
        article = row["text"][:article_chars] + ("..." if len(row["text"]) > article_chars else "")
        parts.append(f"=== sample {i} ({language}/{split}, id {row['id']}) ===\n"
                     f"ARTICLE:    {article}\nREFERENCE:  {row['summary']}\nPREDICTION: {pred}\n")
    write_text_atomic(output_file, "\n".join(parts))
    return output_file
