"""The reference pipeline: the seed study's choices, on plain transformers.

What it reproduces (and what ``pipeline.py`` compares peftsum against):

* ``transformers.Seq2SeqTrainer`` for training and for evaluation (``predict`` with
  ``predict_with_generate=True``);
* every article padded to 512 tokens and every summary to 128 (``padding="max_length"``,
  label padding replaced by -100 as in the Hugging Face summarization example), so every batch
  is 4 x 512 / 4 x 128 whatever the text; random batch order (no length grouping);
* fp32 throughout; AdamW as ``optim="adamw_torch"`` (the Trainer default of the transformers
  4.x the seed study ran; transformers 5 defaults to the fused one);
* the slow tokenizer: transformers 5 no longer ships the Python ``T5Tokenizer`` (its
  ``T5Tokenizer`` is the Rust one), so :class:`SlowT5Tokenizer` rebuilds it on
  ``transformers.SentencePieceBackend``: the ``sentencepiece`` library called per text from
  Python, EOS appended, 100 sentinels; it gives the same ids as the fast tokenizer on the rows;
* greedy decoding to 128 tokens (``generation_max_length=128``, ``generation_num_beams=1``);
* Google's ``rouge_score`` with its defaults (``RougeScorer([...])``: no stemmer, the default
  tokenizer that keeps only ``[a-z0-9]``).

Article and summary *content* is truncated at 512/84 tokens, as in peftsum: the two pipelines
learn from exactly the same tokens; the reference pays for padding them to 512/128.
"""

from __future__ import annotations

from pathlib import Path

from _common import GEN_TOKENS, REF_SOURCE_PAD, REF_TARGET_PAD, SOURCE_LEN, TARGET_LEN


def slow_tokenizer(model_dir: str | Path):
    """The Python SentencePiece tokenizer of ``model_dir/spiece.model`` (T5 conventions)."""
    from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

    class SlowT5Tokenizer(SentencePieceBackend):
        """transformers 4.x ``T5Tokenizer`` (slow), rebuilt on ``SentencePieceBackend``."""

        vocab_files_names = {"vocab_file": "spiece.model"}
        model_input_names = ["input_ids", "attention_mask"]

        def __init__(self, vocab_file, extra_ids=100, **kwargs):
            # T5 numbers the sentinels from the end: <extra_id_0> is the last id.
            sentinels = [f"<extra_id_{i}>" for i in reversed(range(extra_ids))]
            super().__init__(vocab_file=vocab_file, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                             extra_special_tokens=sentinels, special_tokens_pattern="eos", legacy=True,
                             model_max_length=512, **kwargs)

        def convert_tokens_to_string(self, tokens):
            # as transformers 4.x T5Tokenizer: SentencePiece decodes pieces (byte fallback included)
            out, current = "", []
            for token in tokens:
                if token in self.all_special_tokens:
                    out += self.sp_model.decode(current) + token
                    current = []
                else:
                    current.append(token)
            return (out + self.sp_model.decode(current)).strip()

    return SlowT5Tokenizer(vocab_file=str(Path(model_dir) / "spiece.model"))


def preprocess(rows: list[dict], tokenizer) -> list[dict]:
    """The seed study's preprocessing: pad to max_length, label padding -> -100."""
    src = tokenizer([r["text"] for r in rows], max_length=SOURCE_LEN, truncation=True)
    tgt = tokenizer(text_target=[r["summary"] for r in rows], max_length=TARGET_LEN, truncation=True)
    pad = tokenizer.pad_token_id
    out = []
    for ids, mask, lab in zip(src["input_ids"], src["attention_mask"], tgt["input_ids"]):
        out.append({
            "input_ids": ids + [pad] * (REF_SOURCE_PAD - len(ids)),
            "attention_mask": mask + [0] * (REF_SOURCE_PAD - len(mask)),
            "labels": lab + [-100] * (REF_TARGET_PAD - len(lab)),
        })
    return out


def training_args(output_dir: str, method: str, batch_size: int, steps: int, seed: int = 42, **overrides):
    """``Seq2SeqTrainingArguments`` of the seed study (fp32, no grouping, padded batches)."""
    import torch
    from transformers import Seq2SeqTrainingArguments

    kw = dict(
        output_dir=output_dir,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=8,
        learning_rate=5e-5 if method == "full" else 5e-4,
        max_steps=steps,
        optim="adamw_torch",
        fp16=False,
        bf16=False,
        use_cpu=not torch.cuda.is_available(),
        save_strategy="no",
        eval_strategy="no",
        logging_steps=500,
        report_to=[],
        disable_tqdm=True,
        predict_with_generate=True,
        generation_max_length=GEN_TOKENS,
        generation_num_beams=1,
        seed=seed,
        dataloader_num_workers=0,
    )
    kw.update(overrides)
    return Seq2SeqTrainingArguments(**kw)


def lora_model(model, r: int = 8, alpha: int = 16, dropout: float = 0.1):
    """LoRA on q, v with peft, as peftsum's default LoRA (same trainable parameters)."""
    from peft import LoraConfig, TaskType, get_peft_model

    cfg = LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, r=r, lora_alpha=alpha, lora_dropout=dropout,
                     target_modules=["q", "v"])
    return get_peft_model(model, cfg)


def make_trainer(model, tokenizer, rows: list[dict], args, trainer_cls=None, callbacks=()):
    """A ``Seq2SeqTrainer`` over the padded features; the collator only stacks (everything is padded)."""
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer

    trainer_cls = trainer_cls or Seq2SeqTrainer
    ds = Dataset.from_list(preprocess(rows, tokenizer)) if rows else None
    return trainer_cls(model=model, args=args, train_dataset=ds,
                       data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100),
                       processing_class=tokenizer, callbacks=list(callbacks))


def evaluate(trainer, tokenizer, rows: list[dict]) -> dict:
    """Generation + scoring as the seed study: ``trainer.predict`` on padded rows, decode, rouge_score."""
    from datasets import Dataset
    from rouge_score import rouge_scorer

    ds = Dataset.from_list(preprocess(rows, tokenizer))
    out = trainer.predict(ds)
    preds = out.predictions
    preds = [[t for t in seq if t >= 0] for seq in preds.tolist()]
    texts = [t.strip() for t in tokenizer.batch_decode(preds, skip_special_tokens=True)]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"])
    totals = {k: 0.0 for k in ("rouge1", "rouge2", "rougeL", "rougeLsum")}
    for pred, row in zip(texts, rows):
        scores = scorer.score(row["summary"], pred)
        for k in totals:
            totals[k] += scores[k].fmeasure
    gen_lengths = [len(p) for p in preds]
    return {"predictions": texts, "rouge": {k: 100 * v / len(rows) for k, v in totals.items()},
            "generated_tokens": gen_lengths}
