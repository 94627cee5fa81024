"""The demo base's pretraining data: lead bias over train rows only (evaluation rows never trained on)."""

from __future__ import annotations

import json

from peftsum.data.xlsum import SPLITS, sample_dir


def _ids(split: str) -> set[str]:
    out = set()
    for path in sample_dir().glob(f"*/{split}.jsonl"):
        out |= {json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
    return out


def test_pretraining_uses_train_rows_only():
    from peftsum.modeling.pretrain import pretraining_rows

    rows = pretraining_rows()
    ids = {row["id"] for _, row in rows}
    assert ids == _ids("train") and len({lang for lang, _ in rows}) == 45
    for split in SPLITS[1:]:
        assert not ids & _ids(split), split


def test_lead_bias_example_is_first_sentence_from_the_rest(tiny_tokenizer):
    from peftsum.metrics.sentences import split_sentences
    from peftsum.modeling.pretrain import LEAD_REPEATS, lead_bias_examples, pretraining_examples, pretraining_rows

    examples = lead_bias_examples(tiny_tokenizer, max_source=512, max_target=512)
    language, row = next((lang, r) for lang, r in pretraining_rows() if len(split_sentences(r["text"], lang)) >= 3)
    first, *rest = split_sentences(row["text"], language)
    ex = examples[0]
    decode = lambda ids: tiny_tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    assert " ".join(decode(ex["labels"]).split()) == " ".join(first.split())
    assert decode(ex["input_ids"]).split()[:5] == " ".join(rest).split()[:5]
    assert len(pretraining_examples(tiny_tokenizer)) == LEAD_REPEATS * len(lead_bias_examples(tiny_tokenizer))
