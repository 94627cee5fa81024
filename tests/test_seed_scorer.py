"""The seed study's scorer next to peftsum's, and the run files the experiment writes for it."""

from __future__ import annotations

import pytest

from peftsum.errors import DataError
from peftsum.metrics.seed_scorer import seed_rouge, seed_token_share, side_by_side


def test_identical_russian_text_scores_100_with_peftsum_and_0_with_the_seed_scorer():
    text = ["Экономика Великобритании выросла на полпроцента во втором квартале."]
    res = side_by_side({"copy": text}, text, "russian")
    entry = res["systems"]["copy"]
    assert entry["peftsum"]["rouge1"] == pytest.approx(100.0)
    assert entry["seed"]["rouge1"] == 0.0 and entry["difference"]["rouge1"] == pytest.approx(100.0)
    assert res["reference_token_share"] == 0.0


def test_identical_english_text_scores_100_both_ways():
    text = ["The UK economy grew by 0.5% in the second quarter."]
    entry = side_by_side({"copy": text}, text, "english")["systems"]["copy"]
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert entry["peftsum"][key] == pytest.approx(100.0) and entry["seed"][key] == pytest.approx(100.0)
    assert seed_token_share(text, "english") == pytest.approx(1.0)


def test_seed_rouge_stems_like_rouge_score_with_porter():
    # "running" and "runs" stem to "run" with use_stemmer=True: a full unigram match
    assert seed_rouge(["runs"], ["running"])["rouge1"] == pytest.approx(100.0)


def test_mismatched_counts_are_a_data_error():
    with pytest.raises(DataError, match="2 predictions but 1 references"):
        seed_rouge(["a", "b"], ["a"])


def test_all_bundled_languages_lead1(tmp_path):
    from peftsum.languages import LANGUAGES
    from peftsum.experiments.seed_check import all_languages_lead1

    data = all_languages_lead1()
    langs = data["languages"]
    assert set(langs) == set(LANGUAGES) and len(langs) == 45
    assert langs["russian"]["reference_token_share"] < 0.1
    assert langs["hindi"]["reference_token_share"] < 0.1
    assert abs(langs["english"]["difference"]["rouge1"]) < 5
    # the report's table and figure, sorted by the difference
    from peftsum.io import write_json_atomic
    from peftsum.reporting.seed_section import all_languages_blocks

    write_json_atomic(tmp_path / "seed_scorer" / "all_languages.json", data)
    blocks, figs = all_languages_blocks(tmp_path, tmp_path / "figures", "figures")
    table = next(b for b in blocks if hasattr(b, "rows"))
    diffs = [float(row[-4]) for row in table.rows]  # ROUGE-1 Δ column
    assert diffs == sorted(diffs, reverse=True)
    assert [p.read_bytes()[:4] for p in figs.values()] == [b"\x89PNG"]
