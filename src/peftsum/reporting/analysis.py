"""Turn run records into the report's tables: groups, relative scores, paired tests.

Everything here derives from :mod:`peftsum.reporting.records`; no number is made up.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from peftsum.modeling.methods import REFERENCE_METHOD
from peftsum.reporting.formatting import variant_label, variant_sort_key
from peftsum.reporting.records import (
    ROUGE_KEYS,
    Baseline,
    Experiment,
    RunRecord,
    read_predictions,
)

#: The metric the report ranks methods by and uses in its prose.
PRIMARY = "rougeL"
#: Significance level used in the prose.
ALPHA = 0.05

EFFICIENCY_KEYS: tuple[str, ...] = (
    "trainable_params",
    "total_params",
    "trainable_pct",
    "checkpoint_size_mb",
    "train_runtime_s",
    "peak_rss_mb",
    "peak_gpu_mb",
    "tokens_per_second",
    "examples_per_second",
    "train_loss",
    "eval_loss",
)


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _std(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) >= 2 else None


@dataclass
class Group:
    """All finished runs (one per seed) of one method and training-language set, evaluated
    on one language and split.

    Attributes:
        method: registry name.
        train_languages: the languages it was trained on.
        language, split: what was evaluated.
        runs: the runs, sorted by seed.
    """

    method: str
    train_languages: tuple[str, ...]
    language: str
    split: str | None
    runs: list[RunRecord] = field(default_factory=list)
    label: str = ""

    @property
    def key(self) -> tuple[str, tuple[str, ...]]:
        """``(label, train_languages)``, which identifies the group within a language (label = the
        experiment's variant name, ``lora-r16``, or the method)."""
        return (self.label or self.method, self.train_languages)

    @property
    def name(self) -> str:
        """Display name: ``"LoRA"``, or ``"lora-r16 (LoRA)"`` for a named variant."""
        return variant_label(self.method, self.label)

    @property
    def zero_shot(self) -> bool:
        """True when the evaluated language is not among the training languages."""
        return self.language not in self.train_languages

    @property
    def seeds(self) -> list[int | None]:
        """Seeds of the runs, in order."""
        return [r.seed for r in self.runs]

    def values(self, metric: str) -> list[float]:
        """Per-run F1 (0-100) of ``metric``, one value per seed."""
        return [r.evals[self.language].score.f1[metric] for r in self.runs]

    def mean(self, metric: str) -> float | None:
        """Mean F1 over seeds (the single value when there is one run)."""
        return _mean(self.values(metric))

    def std(self, metric: str) -> float | None:
        """Sample standard deviation of F1 over seeds; ``None`` for a single run."""
        return _std(self.values(metric))

    def run_for_seed(self, seed: int | None) -> RunRecord | None:
        """The run with this seed, if any."""
        for r in self.runs:
            if r.seed == seed:
                return r
        return None


@dataclass
class PairedTest:
    """A paired bootstrap of one method run against the full fine-tuning run with the same
    training languages and seed, on one language and metric.

    Attributes:
        seed: the shared training seed.
        metric: ROUGE key.
        mean_diff, ci_low, ci_high: method minus full, ROUGE points (0-100), and its CI.
        p_value: two-sided p-value from :func:`peftsum.metrics.paired_bootstrap`.
        n: number of paired examples.
        n_resamples, bootstrap_seed: bootstrap settings used.
        reason: why no test was run (then the numbers are ``None``).
    """

    seed: int | None
    metric: str
    mean_diff: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    n: int = 0
    n_resamples: int | None = None
    bootstrap_seed: int | None = None
    reason: str | None = None

    @property
    def too_few(self) -> bool:
        """True when the test ran on fewer than :data:`peftsum.metrics.bootstrap.MIN_PAIRED_N` pairs."""
        from peftsum.metrics.bootstrap import significance_called

        return self.p_value is not None and not significance_called(self.n)

    @property
    def significant(self) -> bool | None:
        """``p < 0.05``; ``None`` when there is no test or too few pairs to call one (see :attr:`too_few`)."""
        return None if self.p_value is None or self.too_few else self.p_value < ALPHA


@dataclass
class LanguageSection:
    """Everything the report shows for one evaluated language and split.

    Attributes:
        language, split: the evaluation.
        baseline: LEAD-1/oracle scores, or ``None`` when ``baselines/<language>.json`` is absent
            or was scored on another split.
        baseline_note: why a baseline file was not used, or ``None``.
        groups: method groups, full fine-tuning first.
        reference: for each group key, the full fine-tuning group with the same training
            languages (absent for full itself and when there is none).
        tests: for each group key, the paired tests against its reference (per seed x metric).
    """

    language: str
    split: str | None
    baseline: Baseline | None
    baseline_note: str | None
    groups: list[Group]
    reference: dict[tuple, Group] = field(default_factory=dict)
    tests: dict[tuple, list[PairedTest]] = field(default_factory=dict)

    def relative(self, group: Group, metric: str) -> float | None:
        """Group mean F1 as a percentage of its full fine-tuning reference's mean F1."""
        ref = self.reference.get(group.key)
        if ref is None:
            return None
        a, b = group.mean(metric), ref.mean(metric)
        if a is None or not b:
            return None
        return 100.0 * a / b

    def tests_for(self, group: Group, metric: str) -> list[PairedTest]:
        """The paired tests of ``group`` on ``metric`` (one per shared seed)."""
        return [t for t in self.tests.get(group.key, []) if t.metric == metric]

    @property
    def num_examples(self) -> list[int]:
        """Distinct example counts among the evaluations (normally one value)."""
        return sorted(
            {
                r.evals[self.language].score.num_examples
                or len(r.evals[self.language].score.per_example[PRIMARY])
                for g in self.groups
                for r in g.runs
            }
        )


@dataclass
class EfficiencyRow:
    """Training cost of one method and training-language set, over its finished runs.

    Attributes:
        method, train_languages: the group.
        runs: the runs (one per seed).
        values: per ``metrics.json`` key, the non-null values across runs.
    """

    method: str
    train_languages: tuple[str, ...]
    runs: list[RunRecord]
    values: dict[str, list[float]]
    label: str = ""

    @property
    def name(self) -> str:
        """Display name, as :attr:`Group.name`."""
        return variant_label(self.method, self.label)

    def mean(self, key: str) -> float | None:
        """Mean over runs of a ``metrics.json`` number, or ``None`` if no run has it."""
        return _mean(self.values.get(key, []))

    def std(self, key: str) -> float | None:
        """Sample standard deviation over runs, or ``None`` for fewer than two values."""
        return _std(self.values.get(key, []))


def _pred_ids(run: RunRecord, language: str) -> list | None:
    path = run.evals[language].predictions_path
    if path is None:
        return None
    return [row.get("id") for row in read_predictions(path)]


def paired_tests(group: Group, ref: Group) -> list[PairedTest]:
    """Paired bootstrap of every seed of ``group`` against ``ref``'s run with the same seed.

    Uses :func:`peftsum.metrics.paired_bootstrap` on the ``per_example`` F1 lists, with the
    ``n_resamples`` and ``seed`` recorded in the method's ``results.json`` (defaults 1000, 0).
    A seed is skipped (with a ``reason``) when full has no run with it, the splits differ, the
    lists differ in length, or ``predictions.jsonl`` ids differ.

    Returns:
        One :class:`PairedTest` per seed and ROUGE key.
    """
    from peftsum.metrics import paired_bootstrap  # written alongside; imported lazily

    lang = group.language
    out: list[PairedTest] = []
    for run in group.runs:
        other = ref.run_for_seed(run.seed)
        a = run.evals[lang].score
        reason = None
        if other is None:
            reason = f"no full fine-tuning run with seed {run.seed}"
        else:
            b = other.evals[lang].score
            if a.split != b.split:
                reason = f"different splits ({a.split} vs {b.split})"
            elif any(len(a.per_example[m]) != len(b.per_example[m]) for m in ROUGE_KEYS):
                reason = f"different numbers of examples ({len(a.per_example[PRIMARY])} vs {len(b.per_example[PRIMARY])})"
            elif not a.per_example[PRIMARY]:
                reason = "no per-example scores"
            else:
                ids_a, ids_b = _pred_ids(run, lang), _pred_ids(other, lang)
                if ids_a is not None and ids_b is not None and ids_a != ids_b:
                    reason = "predictions.jsonl ids differ (examples not paired)"
        if reason is not None:
            out.extend(PairedTest(seed=run.seed, metric=m, reason=reason) for m in ROUGE_KEYS)
            continue
        n_res = int(a.bootstrap.get("n_resamples", 1000) or 1000)
        bseed = int(a.bootstrap.get("seed", 0) or 0)
        for m in ROUGE_KEYS:
            res = paired_bootstrap(a.per_example[m], b.per_example[m], n_resamples=n_res, seed=bseed)
            out.append(
                PairedTest(
                    seed=run.seed,
                    metric=m,
                    mean_diff=float(res["mean_diff"]),
                    ci_low=float(res["ci_low"]),
                    ci_high=float(res["ci_high"]),
                    p_value=float(res["p_value"]),
                    n=len(a.per_example[m]),
                    n_resamples=n_res,
                    bootstrap_seed=bseed,
                )
            )
    return out


def _group_sort_key(g: Group):
    return (g.zero_shot, len(g.train_languages) > 1, g.train_languages, variant_sort_key(g.method, g.label))


def _full_reference(groups: dict[tuple, Group], train_languages: tuple[str, ...]) -> Group | None:
    """The full fine-tuning group every other variant is compared with: the one labelled ``full``, else the
    first full fine-tuning variant in report order."""
    if (REFERENCE_METHOD, train_languages) in groups:
        return groups[(REFERENCE_METHOD, train_languages)]
    fulls = sorted((g for g in groups.values()
                    if g.method == REFERENCE_METHOD and g.train_languages == train_languages), key=_group_sort_key)
    return fulls[0] if fulls else None


def build_sections(exp: Experiment) -> list[LanguageSection]:
    """Group finished runs by evaluated language/split and method, attach baselines,
    full fine-tuning references and paired tests.

    Returns:
        One :class:`LanguageSection` per (language, split), sorted by language.
    """
    buckets: dict[tuple, dict[tuple, Group]] = {}
    for run in exp.ok_runs:
        for lang, ev in run.evals.items():
            sec = buckets.setdefault((lang, ev.split or ""), {})
            key = (run.label or run.method, run.train_languages)  # a sweep's variants are groups of their own
            g = sec.setdefault(key, Group(run.method, run.train_languages, lang, ev.split, label=run.label or run.method))
            g.runs.append(run)
    sections: list[LanguageSection] = []
    for (lang, split), groups in sorted(buckets.items()):
        for g in groups.values():
            g.runs.sort(key=lambda r: (r.seed is None, r.seed or 0, r.run_id))
        ordered = sorted(groups.values(), key=_group_sort_key)
        base = exp.baselines.get(lang)
        note = None
        if base is not None and split and base.split and base.split != split:
            note = f"baselines/{lang}.json was scored on the {base.split} split, not {split}; not shown"
            base = None
        sec = LanguageSection(
            language=lang, split=split or None, baseline=base, baseline_note=note, groups=ordered
        )
        for g in ordered:
            if g.method == REFERENCE_METHOD:
                continue
            ref = _full_reference(groups, g.train_languages)
            if ref is not None:
                sec.reference[g.key] = ref
                sec.tests[g.key] = paired_tests(g, ref)
        sections.append(sec)
    return sections


def build_efficiency(exp: Experiment) -> list[EfficiencyRow]:
    """One :class:`EfficiencyRow` per (method, training languages) over finished runs,
    full fine-tuning first within each training-language set."""
    rows: dict[tuple, EfficiencyRow] = {}
    for run in exp.ok_runs:
        key = (run.label or run.method, run.train_languages)
        row = rows.setdefault(key, EfficiencyRow(run.method, run.train_languages, [], {}, label=run.label or run.method))
        row.runs.append(run)
        for k in EFFICIENCY_KEYS:
            v = run.metric(k)
            if k == "trainable_pct" and v is None:
                t, n = run.metric("trainable_params"), run.metric("total_params")
                v = (
                    100.0 * t / n
                    if isinstance(t, (int, float)) and isinstance(n, (int, float)) and n
                    else None
                )
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                row.values.setdefault(k, []).append(float(v))
    return sorted(
        rows.values(),
        key=lambda r: (len(r.train_languages) > 1, r.train_languages, variant_sort_key(r.method, r.label)),
    )


def efficiency_lookup(rows: list[EfficiencyRow]) -> dict[tuple, EfficiencyRow]:
    """Index efficiency rows by ``(label, train_languages)`` (label = variant name or method)."""
    return {(r.label or r.method, r.train_languages): r for r in rows}
