"""ROUGE inside training: greedy decoding of a capped validation subset at every evaluation.

:class:`peftsum.training.seq2seq.PeftsumTrainer` adds these metrics to each evaluation, so the best
checkpoint is kept by ROUGE-L (``--load-best``).
"""

from __future__ import annotations


def rouge_evaluator(cfg, rows_by_lang: dict[str, list[dict]], tokenizer):
    """ROUGE on the first ``eval_rouge_samples`` validation rows per language, greedy decoding.

    Args:
        cfg: the resolved :class:`peftsum.config.TrainConfig` (``eval_rouge_samples``, lengths,
            ``source_prefix``, ``batch_size``, ``bf16``).
        rows_by_lang: validation rows (``text``, ``summary``) per language.
        tokenizer: the run's tokenizer.

    Returns:
        A callable ``evaluate(model) -> dict`` giving ``eval_rouge1/2/L/Lsum``: F1 (0-100) averaged
        over languages; it leaves the model in the train/eval mode it found it in.
    """
    from peftsum.generation.decode import GenerationSettings, generate_summaries
    from peftsum.run_format import ROUGE_KEYS

    subset = {lang: rows[: cfg.eval_rouge_samples] for lang, rows in rows_by_lang.items()}
    greedy = GenerationSettings(num_beams=1, length_penalty=1.0, no_repeat_ngram_size=0,
                                max_new_tokens=cfg.max_target_length)

    def evaluate(model) -> dict:
        from peftsum.metrics import score_texts

        totals: dict[str, list[float]] = {}
        was_training = model.training
        for lang, rows in subset.items():
            preds = generate_summaries(model, tokenizer, [r["text"] for r in rows], greedy,
                                       max_source_length=cfg.max_source_length, source_prefix=cfg.source_prefix,
                                       batch_size=cfg.batch_size * 2, progress=False, bf16=cfg.bf16)
            res = score_texts(preds, [r["summary"] for r in rows], lang, n_resamples=0)
            for key in ROUGE_KEYS:
                totals.setdefault(key, []).append(res[key]["f1"])
        model.train(was_training)
        return {f"eval_{k}": sum(v) / len(v) for k, v in totals.items()}

    return evaluate
