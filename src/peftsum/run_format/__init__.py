"""The one definition of the run record: folder layout, file names, the keys of every JSON file.

Training (``metrics.json``), the experiment runner (``status.json``, ``baselines/``) and
evaluation (``results.json``, ``predictions.jsonl``) write through the ``write_*`` functions
here; the report reads through the ``read_*`` functions. The field tables (:class:`Field`)
drive both the validation on read and ``docs/run_format.md``
(:func:`peftsum.run_format.docs.render_docs`, ``scripts/gen_run_format_doc.py``), so the
documentation cannot drift from the code.

Schema version: every JSON file of the record carries ``"schema_version":``
:data:`SCHEMA_VERSION`. Files written before the field existed have none and are read as
version 1 (the format up to peftsum's session-4 release; version 2 has the same keys plus the
version), so old runs still load. ``predictions.jsonl`` rows carry no version: the
``results.json`` beside it holds the one for the pair (rows stay plain ``{"id", "reference",
"prediction"}`` lines that ``peftsum score`` reads like any predictions file).

Why one file (about 400 lines): it is the one definition of the run record. The folder layout, the
field tables, the writers and the readers change together whenever the format changes (and
``docs/run_format.md`` is generated from the tables), so they stay side by side; only the document
renderer lives apart (:mod:`peftsum.run_format.docs`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from peftsum.errors import DataError
from peftsum.io import iter_jsonl, read_json_object, write_json_atomic, write_text_atomic

SCHEMA_VERSION = 2
"""Version of the run-record format written now. 1 = files without a ``schema_version`` key
(everything before it was recorded); 2 = the same keys, with the version in every JSON file."""
VERSION_KEY = "schema_version"

#: The four ROUGE variants of a score JSON, in display order.
ROUGE_KEYS: tuple[str, ...] = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# --------------------------------------------------------------------------- layout: run folder
CONFIG_FILE = "peftsum_config.json"
"""The resolved config of a run, compared on ``--resume``."""
METRICS_FILE = "metrics.json"
TRAINING_LOG_FILE = "training_log.jsonl"
STATUS_FILE = "status.json"
MODEL_CARD_FILE = "README.md"
MODEL_DIR = "model"
CHECKPOINTS_DIR = "checkpoints"
INIT_ADAPTER_DIR = "adapter_init"
"""Where a method with ``convert_on_save`` (PiSSA) keeps its initial adapter, inside the run folder."""
TENSORBOARD_DIR = "tensorboard"
EVAL_DIR = "eval"
RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.jsonl"
PREDICTIONS_META_FILE = ".predictions.meta.json"
"""Beside ``predictions.jsonl``: the settings it was decoded with, so that an interrupted evaluation continues."""
COMPLETE_MARKER = ".peftsum_complete"
"""File written into a checkpoint folder after all of its files are saved and synced."""
COUNTERS_FILE = "peftsum_counters.json"
"""Tokens and examples seen up to a checkpoint (restored on resume)."""
RUN_MARKERS = (CONFIG_FILE, METRICS_FILE, TRAINING_LOG_FILE, CHECKPOINTS_DIR, STATUS_FILE, MODEL_DIR)
"""Files of which a run folder holds at least one: only such a folder is replaced by ``--overwrite``."""

# --------------------------------------------------------------------------- layout: experiment folder
EXPERIMENT_FILE = "experiment.yaml"
RUNS_DIR = "runs"
BASELINES_DIR = "baselines"
SEED_SCORER_DIR = "seed_scorer"
SEED_SCORER_ALL_FILE = "all_languages.json"
REPORT_FILES = ("report.md", "report.html")
FIGURES_DIR = "figures"
EXPERIMENT_MARKERS = (EXPERIMENT_FILE, RUNS_DIR, REPORT_FILES[0])
"""What an experiment folder holds at least one of: only such a folder is replaced by ``--overwrite``."""


def run_id(label: str, train_languages: Iterable[str], seed: int) -> str:
    """A run's folder name: ``<label>-<train languages joined by +>-s<seed>`` (``lora-english+hindi-s42``)."""
    return f"{label}-{'+'.join(train_languages)}-s{seed}"


def eval_dir(run_dir: Path, language: str) -> Path:
    """``<run_dir>/eval/<language>``: one evaluation of a run."""
    return Path(run_dir) / EVAL_DIR / language


def results_path(run_dir: Path, language: str) -> Path:
    """``<run_dir>/eval/<language>/results.json``."""
    return eval_dir(run_dir, language) / RESULTS_FILE


def predictions_beside(results_file: Path) -> Path:
    """The ``predictions.jsonl`` that goes with a results file (same folder)."""
    return Path(results_file).parent / PREDICTIONS_FILE


def baseline_path(exp_dir: Path, language: str) -> Path:
    """``<exp_dir>/baselines/<language>.json``."""
    return Path(exp_dir) / BASELINES_DIR / f"{language}.json"


# --------------------------------------------------------------------------- field tables
_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "number": (int, float), "bool": (bool,), "list": (list,), "object": (dict,),
    "any": (object,),
}


@dataclass(frozen=True)
class Field:
    """One key of a record file.

    Attributes:
        name: the JSON key.
        type: ``str``, ``int``, ``number``, ``bool``, ``list``, ``object`` or ``any``.
        required: a file without it is refused on read (version 1 files too).
        meaning: what it holds, with its unit.
        nullable: ``null`` is a valid value.
    """

    name: str
    type: str
    required: bool
    meaning: str
    nullable: bool = False

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` has this field's type (``bool`` is not a number)."""
        if value is None:
            return self.nullable
        if isinstance(value, bool) and self.type in ("int", "number"):
            return False
        return isinstance(value, _TYPES[self.type])


@dataclass(frozen=True)
class FileSchema:
    """The keys of one record file: its name in docs, where it lives, its field table."""

    title: str
    where: str
    fields: tuple[Field, ...]
    note: str = ""

    @property
    def required(self) -> tuple[str, ...]:
        """Names of the required keys."""
        return tuple(f.name for f in self.fields if f.required)


_VERSION = Field(VERSION_KEY, "int", False,
                 f"format version ({SCHEMA_VERSION}); absent in files written before it (= 1)")

STATUS = FileSchema("status.json", "runs/<run_id>/status.json (experiments only)", (
    _VERSION,
    Field("status", "str", True, '"done" or "failed"'),
    Field("error", "str", False, "failed runs: the error's first line (500 characters at most); else null", True),
    Field("traceback", "str", False, "failed runs: the last 5 frames of the traceback"),
    Field("seconds", "number", False, "wall time of training and evaluation, s; null when the run's process died",
          True),
    Field("pid", "int", False, "the process that ran it (each run trains in its own process)"),
    Field("run_id", "str", False, "the folder name"),
    Field("label", "str", False, "the experiment's name for this variant (`lora-r16`); the report groups by it"),
    Field("train_languages", "list", False, "XL-Sum config names trained on"),
    Field("eval_languages", "list", False, "XL-Sum config names evaluated on"),
))

METRICS = FileSchema("metrics.json", "runs/<run_id>/metrics.json (training)", (
    _VERSION,
    Field("method", "str", True, "registry name: `full`, `lora`, `ia3`, ..."),
    Field("model", "str", False, "base model: hub id, or a local folder as its absolute, resolved path"),
    Field("model_as_given", "str", False, "the base model as the user gave it (a relative path stays relative "
          "here); `tiny` and an experiment's base are recorded as the folder they resolved to"),
    Field("data", "str", False, "`sample`, `hub` or the local data path"),
    Field("train_languages", "list", True, "XL-Sum config names (non-empty)"),
    Field("language_sampling", "object", False, '`{"alpha", "rows_per_language"}`: exponent smoothing of the mix'),
    Field("train_rows", "int", False, "training rows used"),
    Field("val_rows", "int", False, "validation rows used"),
    Field("dropped_rows", "object", False, "rows left out, by reason"),
    Field("trainable_params", "int", False, "trainable parameters, counted from the model"),
    Field("total_params", "int", False, "all parameters (a PEFT model counts its frozen base too)"),
    Field("trainable_pct", "number", False, "100 * trainable / total"),
    Field("checkpoint_size_mb", "number", False, "size of the weight files written in `model/`, MB (10^6 bytes)"),
    Field("train_runtime_s", "number", False, "training wall time, seconds"),
    Field("global_step", "int", False, "optimizer steps done"),
    Field("resumed_from_step", "int", False, "the checkpoint step training resumed from, or null", True),
    Field("best_checkpoint_step", "int", False, "with `--load-best`: the kept checkpoint, or null", True),
    Field("best_metric", "number", False, "with `--load-best`: its ROUGE-L, or null", True),
    Field("precision", "str", False, '"bf16" (autocast, fp32 master weights) or "fp32"'),
    Field("device", "str", False, "the device trained on (`cpu`, `cuda:0`, ...)"),
    Field("peak_rss_mb", "number", False, "peak resident memory of the process, MB"),
    Field("peak_gpu_mb", "number", False, "peak GPU memory, MB, or null on CPU", True),
    Field("train_loss", "number", False, "final training loss (mean over the last logging window)", True),
    Field("eval_loss", "number", False, "final validation loss (plain cross-entropy, no label smoothing), or null",
          True),
    *(Field(f"eval_{k}", "number", False,
            f"final in-training {k} F1 (greedy, capped subset) with `--eval-rouge`, or null", True) for k in ROUGE_KEYS),
    Field("tokens_seen", "int", False, "non-padding source+target tokens trained on"),
    Field("examples_seen", "int", False, "examples trained on"),
    Field("tokens_per_second", "number", False, "training throughput, tokens/s", True),
    Field("examples_per_second", "number", False, "training throughput, examples/s", True),
    Field("lm_head", "object", False, '`{"lm_head_tied", "checkpoint_has_lm_head", ...}`: the tie check after loading'),
    Field("hyperparameters", "object", False, "the method's hyperparameters (r, lora_alpha, target_modules, "
          "learning_rate, ...) and the budget: `total_steps`, `world_size`, `effective_batch_size` (batch_size x "
          "world_size x gradient_accumulation_steps, see [distributed.md](distributed.md)), `bf16`"),
    Field("config", "object", False, "the exact resolved config (as in `peftsum_config.json`, with `model_as_given`)"),
    Field("versions", "object", False, "library versions"),
    Field("git_commit", "str", False, "peftsum's commit (`-dirty` with local changes), or null", True),
    Field("diverged", "bool", False, "true when the training loss ended far above its start or sits at ln(vocabulary "
          'size); the report leaves such runs out of "When to use which" (`peftsum.training.divergence`)'),
    Field("divergence_reason", "str", False, "the numbers behind `diverged`, or null", True),
))

SCORE = FileSchema("results.json", "runs/<run_id>/eval/<language>/results.json (evaluation; `peftsum evaluate`)", (
    _VERSION,
    Field("language", "str", False, "XL-Sum language name (default: the folder name)"),
    Field("stemmer", "str", False, '"none" or the stemmer\'s name'),
    Field("normalization", "str", False, '"NFKC" or null', True),
    Field("num_examples", "int", False, "examples scored"),
    *(Field(k, "object", True, '`{"f1", "precision", "recall", "ci_low", "ci_high"}`, 0-100; the 95% CI is for f1')
      for k in ROUGE_KEYS),
    Field("per_example", "object", True, "per ROUGE key, the per-example F1 list (0-100), in prediction order"),
    Field("sanity", "object", False,
          '`{"expected_script", "script_share", "empty_predictions", "sentinel_predictions"}`'),
    Field("bootstrap", "object", False, '`{"n_resamples", "seed", "confidence"}`'),
    Field("paired", "object", False, 'paired bootstrap against LEAD-1 (Koehn, 2004): `{"against": "lead1", "rouge1": '
          '{"mean_diff", "ci_low", "ci_high", "p_value"}, ..., "n", "n_resamples", "seed", '
          '"significance_called"}`, model minus LEAD-1; `significance_called` is false below 30 pairs'),
    Field("model_path", "str", False, "what was evaluated"),
    Field("split", "str", False, "`test` or `validation`", True),
    Field("data", "str", False, "`sample`, `hub` or the local data path"),
    Field("source", "str", False, "the file or dataset the rows came from"),
    Field("dropped_rows", "object", False, "rows left out, by reason"),
    Field("generation", "object", False, "decoding settings (num_beams, length_penalty, max_new_tokens, ...)"),
    Field("max_source_length", "int", False, "article tokens kept"),
    Field("precision", "object", False, '`{"trained", "evaluated"}`: "bf16", "fp32" or null'),
    Field("device", "str", False, "the device decoding ran on"),
    Field("ids", "list", False, "row ids, in `per_example` order"),
), note="The score part (`language` to `bootstrap`) is also what `peftsum score` writes. Its `schema_version` "
        "covers the `predictions.jsonl` beside it.")

PREDICTION = FileSchema("predictions.jsonl", "runs/<run_id>/eval/<language>/predictions.jsonl, one object a line", (
    Field("id", "any", True, "XL-Sum row id"),
    Field("reference", "str", True, "the reference summary"),
    Field("prediction", "str", True, "the generated summary"),
), note="Same order as `per_example`; no version of its own (the `results.json` beside it holds it).")

TRAINING_LOG = FileSchema("training_log.jsonl", "runs/<run_id>/training_log.jsonl, one object per logging step", (
    Field("step", "int", True, "optimizer step"),
    Field("epoch", "number", False, "training rows: epochs done"),
    Field("loss", "number", False, "training rows: the loss over the logging window"),
    Field("learning_rate", "number", False, "training rows: the learning rate"),
    Field("eval_loss", "number", False, "validation rows: validation loss (plus `eval_rougeL` etc. with ROUGE)"),
    Field("elapsed_s", "number", False, "seconds since training started"),
    Field("grad_norm", "number", False, "training rows: gradient norm before clipping"),
), note="Versioned by the `metrics.json` beside it. Rows also carry what the Hugging Face Trainer logs "
        "(`eval_runtime`, `eval_samples_per_second`, `eval_steps_per_second`; on the last row `train_loss`, "
        "`train_runtime`, `train_samples_per_second`, `train_steps_per_second`), kept as it logs them.")

BASELINE = FileSchema("baselines/<language>.json", "baselines/<language>.json (experiments)", (
    _VERSION,
    Field("language", "str", False, "XL-Sum language name (default: the file name)"),
    Field("split", "str", False, "the split scored", True),
    Field("lead1", "object", True, "LEAD-1 (first sentence) as a score JSON (results.json's score keys)"),
    Field("oracle", "object", True, "the extractive oracle as a score JSON"),
))

SCHEMAS = (STATUS, METRICS, SCORE, PREDICTION, TRAINING_LOG, BASELINE)


# --------------------------------------------------------------------------- validation
def check(data: Any, schema: FileSchema, path: Path, where: str = "") -> dict:
    """Check one decoded record against its field table.

    Args:
        data: the decoded JSON value.
        schema: the file's table.
        path: the file (named in errors).
        where: a prefix for the message (``"line 3: "`` for JSON-lines rows).

    Returns:
        ``data`` (a dict).

    Raises:
        DataError: one line naming the file and the missing key(s), or a key with the wrong type,
            or a ``schema_version`` newer than this peftsum reads.
    """
    if not isinstance(data, dict):
        raise DataError(f"{path}: {where}expected a JSON object, found {type(data).__name__}")
    missing = [name for name in schema.required if name not in data]
    if missing:
        raise DataError(f"{path}: {where}missing required key{'s' if len(missing) > 1 else ''} "
                        + ", ".join(repr(m) for m in missing))
    for f in schema.fields:
        if f.name in data and not f.accepts(data[f.name]):
            raise DataError(f"{path}: {where}{f.name!r} must be {_type_text(f)}, found {data[f.name]!r}"[:300])
    version = data.get(VERSION_KEY, 1)
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise DataError(f"{path}: written by a newer peftsum (schema_version {version}; this one reads up to "
                        f"{SCHEMA_VERSION}); upgrade peftsum")
    return data


def _type_text(f: Field) -> str:
    return ("a number" if f.type == "number" else f"a JSON {f.type}" if f.type in ("list", "object")
            else f"{'an' if f.type == 'int' else 'a'} {f.type}") + (" or null" if f.nullable else "")


def version_of(data: dict) -> int:
    """The schema version of a decoded record (1 when the file has none: written before it was recorded)."""
    value = data.get(VERSION_KEY)
    return value if isinstance(value, int) and not isinstance(value, bool) else 1


# --------------------------------------------------------------------------- writers
def stamped(obj: dict) -> dict:
    """``obj`` with ``schema_version`` first (a new dict; ``obj`` is not changed)."""
    return {VERSION_KEY: SCHEMA_VERSION, **{k: v for k, v in obj.items() if k != VERSION_KEY}}


def write_record(path: Path, obj: dict) -> dict:
    """Write one JSON file of the record, stamped with :data:`SCHEMA_VERSION`, atomically
    (:func:`peftsum.io.write_json_atomic`). Returns the dict written."""
    out = stamped(obj)
    write_json_atomic(path, out)
    return out


def write_status(run_dir: Path, status: dict) -> dict:
    """Write ``<run_dir>/status.json`` (keys: :data:`STATUS`). Returns the dict written."""
    return write_record(Path(run_dir) / STATUS_FILE, status)


def write_metrics(run_dir: Path, metrics: dict) -> dict:
    """Write ``<run_dir>/metrics.json`` (keys: :data:`METRICS`). Returns the dict written."""
    return write_record(Path(run_dir) / METRICS_FILE, metrics)


def write_results(path: Path, result: dict) -> dict:
    """Write an evaluation's ``results.json`` (keys: :data:`SCORE`) to ``path``. Returns the dict written."""
    return write_record(path, result)


def write_baseline(exp_dir: Path, language: str, result: dict) -> dict:
    """Write ``<exp_dir>/baselines/<language>.json`` (keys: :data:`BASELINE`). Returns the dict written."""
    return write_record(baseline_path(exp_dir, language), result)


def prediction_line(row_id: Any, reference: str, prediction: str) -> str:
    """One ``predictions.jsonl`` line (keys: :data:`PREDICTION`), newline included."""
    return json.dumps({"id": row_id, "reference": reference, "prediction": prediction}, ensure_ascii=False) + "\n"


def write_predictions(path: Path, rows: Iterable[tuple[Any, str, str]]) -> Path:
    """Write a whole ``predictions.jsonl`` atomically from ``(id, reference, prediction)`` triples.

    (``peftsum evaluate`` in one process appends :func:`prediction_line` rows batch by batch
    instead, so that an interrupted evaluation keeps what it decoded.)"""
    return write_text_atomic(path, "".join(prediction_line(*row) for row in rows))


# --------------------------------------------------------------------------- readers
def read_record(path: Path, schema: FileSchema) -> dict:
    """Read and check one JSON file of the record (any version up to :data:`SCHEMA_VERSION`).

    Raises:
        DataError: unreadable or invalid JSON, or :func:`check` fails (file and key named).
    """
    return check(read_json_object(path), schema, Path(path))


def read_status(path: Path) -> dict:
    """Read a ``status.json`` (:data:`STATUS`); ``status`` must be ``done`` or ``failed``.

    Raises:
        DataError: as :func:`read_record`, or another ``status`` value.
    """
    data = read_record(path, STATUS)
    if data["status"] not in ("done", "failed"):
        raise DataError(f'{path}: \'status\' must be "done" or "failed", found {data["status"]!r}')
    return data


def read_optional(path: Path) -> dict:
    """A JSON object from ``path``, or ``{}`` when it is missing, unreadable or not an object: for readers
    that only describe a run (model cards, serving's metadata and cost), where a partial record says less."""
    import json

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_files(path: Path) -> tuple[dict, dict]:
    """``(peftsum_config.json, metrics.json)`` of the run folder ``path`` or of the run holding ``path``
    (a run's ``model/``), each ``{}`` when absent or unreadable (:func:`read_optional`)."""
    for folder in (Path(path), Path(path).parent):
        if (folder / CONFIG_FILE).is_file() or (folder / METRICS_FILE).is_file():
            return read_optional(folder / CONFIG_FILE), read_optional(folder / METRICS_FILE)
    return {}, {}


def read_metrics(path: Path) -> dict:
    """Read a ``metrics.json`` (:data:`METRICS`); ``train_languages`` must be a non-empty list of names.

    Raises:
        DataError: as :func:`read_record`.
    """
    data = read_record(path, METRICS)
    langs = data["train_languages"]
    if not langs or not all(isinstance(x, str) for x in langs):
        raise DataError(f"{path}: 'train_languages' must be a non-empty list of language names")
    return data


def read_results(path: Path) -> dict:
    """Read a ``results.json`` (:data:`SCORE`). Raises DataError as :func:`read_record`."""
    return read_record(path, SCORE)


def read_baseline(path: Path) -> dict:
    """Read ``baselines/<language>.json`` (:data:`BASELINE`). Raises DataError as :func:`read_record`."""
    return read_record(path, BASELINE)


def read_predictions(path: Path) -> list[dict]:
    """Read ``predictions.jsonl`` rows (:data:`PREDICTION`), in file order.

    Raises:
        DataError: a line is not a JSON object or misses ``id``/``reference``/``prediction`` (file and line named).
    """
    return [check(obj, PREDICTION, Path(path), f"line {lineno}: ") for lineno, obj in iter_jsonl(path)]

