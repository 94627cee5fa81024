"""The generated "when to use which" text. It only restates numbers from the tables."""

from __future__ import annotations

from peftsum.reporting.analysis import (
    ALPHA,
    PRIMARY,
    EfficiencyRow,
    Group,
    LanguageSection,
    PairedTest,
)
from peftsum.display import ROUGE_LABELS
from peftsum.modeling.methods import REFERENCE_METHOD
from peftsum.reporting.formatting import (
    fmt_ci,
    fmt_diff,
    fmt_mb,
    fmt_p_eq,
    fmt_pct,
    fmt_ratio,
    fmt_score,
    fmt_seconds,
)


def train_label(train_languages: tuple[str, ...]) -> str:
    """Training languages joined with ``+`` (as in run ids)."""
    return "+".join(train_languages)


def group_label(g: Group) -> str:
    """``"LoRA"`` for an in-language run, ``"LoRA (trained on english, zero-shot)"`` otherwise."""
    name = g.name
    if g.train_languages == (g.language,):
        return name
    extra = ", zero-shot" if g.zero_shot else ""
    return f"{name} (trained on {train_label(g.train_languages)}{extra})"


def describe_tests(tests: list[PairedTest]) -> str:
    """One clause describing the paired tests of one group and metric."""
    done = [t for t in tests if t.p_value is not None]
    if not done:
        reasons = sorted({t.reason for t in tests if t.reason})
        return "no paired test" + (f" ({'; '.join(reasons)})" if reasons else "")
    from peftsum.metrics.bootstrap import too_few_note

    if len(done) == 1:
        t = done[0]
        if t.too_few:
            return (f"paired bootstrap: {fmt_diff(t.mean_diff)} points, 95% CI {fmt_ci(t.ci_low, t.ci_high)}, "
                    f"{too_few_note(t.n)}")
        verdict = "significant" if t.significant else "not significant"
        return f"paired bootstrap: {fmt_diff(t.mean_diff)} points, 95% CI {fmt_ci(t.ci_low, t.ci_high)}, {fmt_p_eq(t.p_value)}, {verdict} at p<{ALPHA:g}"
    if any(t.too_few for t in done):
        return f"paired bootstrap per seed: {too_few_note(min(t.n for t in done))}"
    k = sum(1 for t in done if t.significant)
    return f"paired bootstrap significant at p<{ALPHA:g} for {k} of {len(done)} seeds"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or a <= 0 or b <= 0:
        return None
    return a / b


def _bigger_smaller(ratio: float | None, more: str, less: str, same: str, tolerance: float = 0.05) -> str | None:
    """``ratio`` = method / full. Phrase it as "N× <less>", "N× <more>" or ``same``.

    Within ``tolerance`` of 1 (where a ratio would read "1.0× slower") it is ``same``, with
    "about " in front unless the two are equal to 0.5%.
    """
    if ratio is None:
        return None
    if abs(ratio - 1) < 0.005:
        return same
    if 1 / (1 + tolerance) < ratio < 1 + tolerance:
        return f"about {same}"
    if ratio < 1:
        return f"{fmt_ratio(1 / ratio)} {less}"
    return f"{fmt_ratio(ratio)} {more}"


def language_sentence(sec: LanguageSection) -> str:
    """The "when to use which" sentence(s) for one evaluated language."""
    metric = ROUGE_LABELS[PRIMARY]
    n = sec.num_examples
    head = (
        f"{sec.language}"
        + (f" ({sec.split}" if sec.split else " (")
        + (f", {n[0]} examples)" if len(n) == 1 else ")")
    )
    top = max(g.mean(PRIMARY) for g in sec.groups)
    best = [g for g in sec.groups if g.mean(PRIMARY) == top]
    seeds = " (mean over seeds)" if any(len(g.runs) > 1 for g in best) else ""
    if len(best) == 1:
        parts = [f"{head}: the highest {metric} is {group_label(best[0])} with {fmt_score(top)}{seeds}."]
    else:
        names = ", ".join(group_label(g) for g in best)
        parts = [f"{head}: the highest {metric}, {fmt_score(top)}{seeds}, is shared by {names}."]
    if sec.baseline is not None:
        lead = sec.baseline.lead1.f1[PRIMARY]
        below = [group_label(g) for g in sec.groups if g.mean(PRIMARY) < lead]
        parts.append(
            f"LEAD-1 scores {fmt_score(lead)} and the oracle {fmt_score(sec.baseline.oracle.f1[PRIMARY])}; "
            + (f"below LEAD-1: {', '.join(below)}." if below else "no method scores below LEAD-1.")
        )
    for g in sec.groups:
        ref = sec.reference.get(g.key)
        if ref is None:
            continue
        rel = sec.relative(g, PRIMARY)
        tests = sec.tests_for(g, PRIMARY)
        done = [t for t in tests if t.p_value is not None]
        if len(done) == 1:
            detail = describe_tests(tests).replace("paired bootstrap: ", "paired bootstrap ", 1)
        else:
            diff = g.mean(PRIMARY) - ref.mean(PRIMARY)
            mean_of = " between seed means" if len(g.runs) > 1 or len(ref.runs) > 1 else ""
            detail = f"{fmt_diff(diff)} points{mean_of}; {describe_tests(tests)}"
        if rel is None:
            parts.append(
                f"{group_label(g)} scores {fmt_score(g.mean(PRIMARY))} {metric} against "
                f"{fmt_score(ref.mean(PRIMARY))} for {group_label(ref)}, so no share of it is given ({detail})."
            )
        else:
            parts.append(
                f"{group_label(g)} reaches {fmt_pct(rel)} of the {metric} of {group_label(ref)} ({detail})."
            )
    orphans = [group_label(g) for g in sec.groups if g.method != REFERENCE_METHOD and g.key not in sec.reference]
    if orphans:
        parts.append(
            f"No full fine-tuning run with the same training languages to compare {', '.join(orphans)} with."
        )
    return " ".join(parts)


def efficiency_sentence(row: EfficiencyRow, full: EfficiencyRow) -> str | None:
    """How one method's training cost compares with full fine-tuning on the same languages."""
    bits = []
    for key, words, shown in (
        ("trainable_params", ("more trainable parameters", "fewer trainable parameters",
                              "as many trainable parameters"), None),
        ("checkpoint_size_mb", ("larger on disk", "smaller on disk", "the same size on disk"), fmt_mb),
    ):
        text = _bigger_smaller(_ratio(row.mean(key), full.mean(key)), *words)
        if text:
            bits.append(f"{text} ({shown(row.mean(key))} vs {shown(full.mean(key))})" if shown else text)
    t = _ratio(row.mean("train_runtime_s"), full.mean("train_runtime_s"))
    if t is not None:
        # timings on a shared machine vary by several percent: within 10% reads "about as fast"
        speed = _bigger_smaller(t, "slower to train", "faster to train", "as fast to train", tolerance=0.10)
        speed = "about as fast to train" if speed == "as fast to train" else speed
        bits.append(
            f"{speed} ({fmt_seconds(row.mean('train_runtime_s'))} vs {fmt_seconds(full.mean('train_runtime_s'))})"
        )
    tok = _ratio(row.mean("tokens_per_second"), full.mean("tokens_per_second"))
    if tok is not None:
        bits.append("about the tokens per second of full fine-tuning" if abs(tok - 1) < 0.10
                    else f"{fmt_ratio(tok)} the tokens per second of full fine-tuning")
    for key, name in (("peak_gpu_mb", "peak GPU memory"), ("peak_rss_mb", "peak process memory")):
        a, b = row.mean(key), full.mean(key)
        if a is not None and b is not None:
            bits.append(f"{name} {fmt_mb(a)} vs {fmt_mb(b)}")
            break
    if not bits:
        return None
    langs = train_label(row.train_languages)
    return f"{row.name} (trained on {langs}) vs full fine-tuning: " + "; ".join(bits) + "."


def when_to_use(
    sections: list[LanguageSection], efficiency: list[EfficiencyRow]
) -> tuple[list[str], list[str]]:
    """All "when to use which" statements.

    Returns:
        ``(quality, cost)``: one sentence per evaluated language (best method, share of full
        fine-tuning's ROUGE-L, significance), and one per PEFT method and training-language set
        (parameters, size, time, throughput, memory relative to full fine-tuning). Plain text,
        each derived from the report's tables.
    """
    quality = [language_sentence(s) for s in sections]
    cost = []
    full_rows: dict = {}
    for r in efficiency:  # sorted: the variant labelled "full" (or the first full one) is the reference
        if r.method == REFERENCE_METHOD:
            full_rows.setdefault(r.train_languages, r)
    for row in efficiency:
        if row.train_languages not in full_rows or row is full_rows[row.train_languages]:
            continue
        sent = efficiency_sentence(row, full_rows[row.train_languages])
        if sent:
            cost.append(sent)
    return quality, cost
