"""Tokenization, truncation with EOS kept, -100 label padding, dynamic padding, language mixing."""

from __future__ import annotations

from collections import Counter

from peftsum.data.features import LABEL_PAD, make_collator, mix_languages, smoothing_probabilities, tokenize_rows
from peftsum.data.xlsum import load_split


def _summary_of_n_tokens(tokenizer, text: str, n: int) -> str:
    """A prefix of ``text`` that tokenizes to exactly ``n`` tokens (EOS not counted)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    for k in range(1, len(ids) + 1):
        cand = tokenizer.decode(ids[:k], skip_special_tokens=True)
        if len(tokenizer(cand, add_special_tokens=False)["input_ids"]) == n:
            return cand
    raise AssertionError("no prefix with that many tokens")


def test_bengali_labels_have_n_plus_eos_positions_and_rest_minus_100(tiny_tokenizer):
    rows = load_split("bengali", "train").rows[:2]
    rows = [dict(rows[0], summary=_summary_of_n_tokens(tiny_tokenizer, rows[0]["summary"], 3)),
            dict(rows[1], summary=_summary_of_n_tokens(tiny_tokenizer, rows[1]["summary"], 10))]
    feats = tokenize_rows(rows, tiny_tokenizer, 512, 84)
    batch = make_collator(tiny_tokenizer)(feats)
    labels = batch["labels"]
    assert labels.shape == (2, 11)
    assert (labels != LABEL_PAD).sum(dim=1).tolist() == [4, 11]  # 3 and 10 tokens + EOS
    assert labels[0, 3].item() == tiny_tokenizer.eos_token_id and labels[1, 10].item() == tiny_tokenizer.eos_token_id
    assert (labels[0, 4:] == LABEL_PAD).all()
    # inputs are padded with the pad id (dynamic: to the longest of this batch)
    assert batch["input_ids"].shape[1] == max(len(f["input_ids"]) for f in feats)


def test_long_russian_article_truncates_to_512_ending_in_eos(tiny_tokenizer):
    rows = load_split("russian", "train").rows
    text = " ".join(r["text"] for r in rows)
    while len(tiny_tokenizer(text)["input_ids"]) < 5000:
        text += " " + text
    feat = tokenize_rows([{"text": text, "summary": rows[0]["summary"]}], tiny_tokenizer, 512, 84)[0]
    assert len(feat["input_ids"]) == 512
    assert feat["input_ids"][-1] == tiny_tokenizer.eos_token_id
    assert feat["labels"][-1] == tiny_tokenizer.eos_token_id and len(feat["labels"]) <= 84


def test_source_prefix_is_prepended(tiny_tokenizer):
    row = load_split("english", "train").rows[0]
    plain = tokenize_rows([row], tiny_tokenizer, 64, 16)[0]["input_ids"]
    prefixed = tokenize_rows([row], tiny_tokenizer, 64, 16, source_prefix="summarize: ")[0]["input_ids"]
    assert prefixed != plain
    assert tiny_tokenizer.decode(prefixed, skip_special_tokens=True).startswith("summarize:")


def test_exponent_smoothing_probabilities():
    # p_i = n_i^0.5 / sum: 100 and 25 rows -> 10/15 and 5/15 (hand-computed)
    p = smoothing_probabilities({"english": 100, "russian": 25}, 0.5)
    assert abs(p["english"] - 10 / 15) < 1e-12 and abs(p["russian"] - 5 / 15) < 1e-12


def test_mix_languages_upsamples_small_language_deterministically():
    big = [{"id": f"e{i}", "text": "t", "summary": "s"} for i in range(100)]
    small = [{"id": f"r{i}", "text": "t", "summary": "s"} for i in range(25)]
    mixed = mix_languages({"english": big, "russian": small}, alpha=0.5, seed=1)
    counts = Counter(r["language"] for r in mixed)
    assert counts == {"english": round(125 * 10 / 15), "russian": round(125 * 5 / 15)}
    assert mixed == mix_languages({"english": big, "russian": small}, alpha=0.5, seed=1)
