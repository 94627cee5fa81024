"""``docs/run_format.md``, rendered from :mod:`peftsum.run_format` (layout and field tables).

``scripts/gen_run_format_doc.py`` writes it; a test checks that the file in the repository is
exactly :func:`render_docs`'s text, so the documentation cannot drift from the code.
"""

from __future__ import annotations

from peftsum import run_format as rf

_HEADER = """# Run records: the files peftsum writes

<!-- Generated from src/peftsum/run_format/ by scripts/gen_run_format_doc.py; do not edit by hand. -->

Every number in a report is read from these files. Paths are relative to an
experiment folder (`peftsum experiment --output-dir DIR`) or a single run folder
(`peftsum train --output-dir DIR`, which holds the files of `runs/<run_id>/` directly, without `status.json`).
The names, keys and types below are defined once, in `peftsum.run_format`: training, the experiment
runner and evaluation write through it, the report reads through it.
"""


def _layout() -> list[tuple[str, str]]:
    run = f"  {rf.RUNS_DIR}/<run_id>/"
    ev = f"    {rf.EVAL_DIR}/<language>/"
    return [
        (f"  {rf.EXPERIMENT_FILE}", "resolved experiment config (experiments only)"),
        (f"  {rf.BASELINES_DIR}/<language>.json", "LEAD-1 and the extractive oracle (below)"),
        (f"  {rf.SEED_SCORER_DIR}/{rf.SEED_SCORER_ALL_FILE}", "LEAD-1 of all 45 bundled languages scored by "
         "peftsum and by the seed study's scorer (below)"),
        (f"  {rf.SEED_SCORER_DIR}/<language>.json", "each run's predictions, LEAD-1 and the oracle scored both ways"),
        (run, 'one training run; run_id = "<label>-<train languages joined by +>-s<seed>" (label: the method, or '
              "the experiment's name for the variant, e.g. `lora-r16`)"),
        (f"    {rf.STATUS_FILE}", "how the run ended (below; experiments only)"),
        (f"    {rf.METRICS_FILE}", "training record (below)"),
        (f"    {rf.TRAINING_LOG_FILE}", "one JSON object per logging step (below)"),
        (f"    {rf.CONFIG_FILE}", 'the resolved TrainConfig (compared on --resume) + "model_as_given", "world_size"'),
        (f"    {rf.CHECKPOINTS_DIR}/checkpoint-N/", f"Trainer checkpoints; `{rf.COMPLETE_MARKER}` marks a finished "
         f"save, `{rf.COUNTERS_FILE}` holds the tokens and examples seen"),
        (f"    {rf.MODEL_DIR}/", "full fine-tuning: standard HF checkpoint (+ README.md model card and a "
         "generation_config.json: XL-Sum's beam settings, max_new_tokens = max_target_length); PEFT: standard "
         "adapter dir"),
        (f"    {rf.INIT_ADAPTER_DIR}/", "PiSSA only: the initial adapter (PiSSA changes the base weights)"),
        (f"    {rf.TENSORBOARD_DIR}/", "with --tensorboard"),
        (f"    {rf.MODEL_CARD_FILE}", "model card"),
        (ev + rf.RESULTS_FILE, "score JSON + how it was decoded (below)"),
        (ev + rf.PREDICTIONS_FILE, '{"id", "reference", "prediction"} per line, same order as per_example'),
        (ev + rf.PREDICTIONS_META_FILE, "the settings the predictions were decoded with (an interrupted "
         "evaluation continues)"),
        ("  " + ", ".join(rf.REPORT_FILES) + f", {rf.FIGURES_DIR}/*.png", "the report"),
    ]


def _tree() -> str:
    rows = _layout()
    width = max(len(path) for path, _ in rows) + 2
    return "```\nDIR/\n" + "".join(f"{path.ljust(width)}{what}\n" for path, what in rows) + "```\n"


def _table(schema: rf.FileSchema) -> str:
    lines = [f"## {schema.title}", "", f"`{schema.where}`", "", "| key | type | required | meaning |",
             "| --- | --- | --- | --- |"]
    for f in schema.fields:
        typ = f.type + (" or null" if f.nullable else "")
        lines.append(f"| `{f.name}` | {typ} | {'yes' if f.required else ''} | {f.meaning} |")
    if schema.note:
        lines += ["", schema.note]
    return "\n".join(lines) + "\n"


_VERSIONS = f"""## Schema version

Every JSON file above carries `"{rf.VERSION_KEY}": {rf.SCHEMA_VERSION}`. Files written before the key existed
have none and are read as version 1 (the same keys), so old runs still load; a file from a newer peftsum is
refused with a one-line error. `predictions.jsonl` and `training_log.jsonl` rows carry no version: the
`results.json` and `metrics.json` beside them hold it. `{rf.CONFIG_FILE}` is the resolved config itself
(copied under `config` in `metrics.json`) and has no version key. A required key that is missing, or a key
of the wrong type, is reported in one line naming the file and the key.
"""

_OTHER = """## Other outputs

`peftsum merge --adapter RUN --output-dir OUT` writes a standalone HF checkpoint to `OUT` with a
`README.md` model card (base model, adapter, method, training data and licence, the run's
`eval/*/results.json` scores) and a `generation_config.json` holding the decoding settings those
scores were made with (XL-Sum's, 4 beams, length_penalty 0.6, no_repeat_ngram_size 2, 84 new
tokens, when the run has none), so that a plain `generate()` decodes as `peftsum generate` does.
While a command writes a folder, a lock file `.<folder name>.peftsum.lock` sits beside it
(holder's pid, host, command; see [failure_modes.md](failure_modes.md)); it is removed when the command ends.

## Scorer check files (experiments)

The seed study's scorer is Google `rouge_score` with its default tokenizer and the Porter
stemmer (`evaluate`'s `rouge`, `use_stemmer=True`); its tokenizer deletes every character outside
`[a-z0-9]`. Both files are recomputed at the end of each experiment from texts already on disk.
F1 values are means of per-example F1, 0-100.

```
seed_scorer/<language>.json:
{"schema_version", "language", "split", "num_examples", "scorers": {"peftsum": str, "seed": str},
 "reference_token_share": float,      # tokens the seed tokenizer keeps / peftsum's tokens, references
 "systems": {"LEAD-1" | "oracle" | "<run_id>": {"kind": "baseline" | "run",
             "peftsum": {"rouge1", "rouge2", "rougeL", "rougeLsum"}, "seed": {...}, "difference": {...}}}}
seed_scorer/all_languages.json:
{"schema_version", "data": "sample", "system": "LEAD-1", "scorers": {...},
 "languages": {"<language>": {"split", "num_examples", "script", "reference_token_share",
                              "peftsum": {...}, "seed": {...}, "difference": {...}}}}
```

`peftsum score --compare-seed-scorer` adds the same block for any predictions/references files as
`"seed_scorer"`; with `--compare-predictions` it adds a `"paired"` block (the second predictions
minus the first) with the same keys as `results.json`'s, `"n"` and `"significance_called"` included
(false below 30 pairs: `peftsum.metrics.bootstrap.MIN_PAIRED_N`). The file `peftsum score
--output-file` writes is a standalone score JSON, not part of a run record: it has no `schema_version`.
"""


def render_docs() -> str:
    """The text of ``docs/run_format.md``: the folder layout, one key table per file, the schema
    version, and the other outputs, all from :mod:`peftsum.run_format`'s constants and tables."""
    parts = [_HEADER, _tree(), *(_table(s) for s in rf.SCHEMAS), _VERSIONS, _OTHER]
    return "\n".join(parts)
