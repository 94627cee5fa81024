"""peftsum.metrics: known values, stemming, normalization, sentences, statistics, sanity, baselines."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

import peftsum
from peftsum.errors import ConfigError, DataError, PeftsumError
from peftsum.metrics import (
    MultilingualRouge,
    bootstrap_ci,
    compare_systems,
    paired_bootstrap,
    score_texts,
    script_share,
    split_sentences,
)
from peftsum.metrics.baselines import baseline_scores
from peftsum.metrics.stemmers import stem_bengali, stem_hindi

SAMPLE = Path(peftsum.__file__).parent / "data" / "sample" / "xlsum"
VARIANTS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def rows(language: str, split: str = "train") -> list[dict]:
    text = (SAMPLE / language / f"{split}.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def f1s(result: dict) -> dict[str, float]:
    return {v: result[v]["f1"] for v in VARIANTS}


# ----------------------------------------------------------------------------- known values
def test_identical_hindi_sentence_scores_100_with_six_tokens():
    # Six space-separated Hindi words ("India's capital is New Delhi"); the danda is punctuation.
    sentence = "भारत की राजधानी नई दिल्ली है।"
    scorer = MultilingualRouge("hindi")
    assert len(scorer.tokenizer.tokenize(sentence)) == 6
    assert len(MultilingualRouge("hindi", stemmer=False).tokenizer.tokenize(sentence)) == 6
    result = score_texts([sentence], [sentence], "hindi")
    assert f1s(result) == {v: 100.0 for v in VARIANTS}


def test_chinese_is_segmented_into_words():
    # 10 characters. jieba: 北京/今天/下/了/一场/大雨 vs 北京/昨天/下/了/一场/大雨, so 5 of 6
    # words match (ROUGE-1 83.3) and 3 of 5 bigrams (ROUGE-2 60.0), the XL-Sum scorer's values
    # (its parity on these exact strings is in test_metrics_parity.py).
    same = "北京今天下了一场大雨"
    assert len(same) == 10
    assert f1s(score_texts([same], [same], "chinese_simplified")) == {v: 100.0 for v in VARIANTS}
    changed = score_texts(["北京今天下了一场大雨"], ["北京昨天下了一场大雨"], "chinese_simplified")
    assert all(0 < f1 < 100 for f1 in f1s(changed).values())
    assert round(changed["rouge1"]["f1"], 1) == 83.3
    assert round(changed["rouge2"]["f1"], 1) == 60.0
    assert changed["rougeL"]["f1"] == pytest.approx(500 / 6)
    assert changed["rougeLsum"]["f1"] == pytest.approx(500 / 6)


def test_russian_swapped_sentences_lsum_100_but_l_below():
    # Same two sentences, swapped, on one line: the LCS covers only one of them (ROUGE-L 50),
    # the summary-level LCS matches each sentence in full once the line is split (Lin 2004, 3.2).
    pred = "Кошка спит на диване. Собака гуляет в парке."
    ref = "Собака гуляет в парке. Кошка спит на диване."
    result = score_texts([pred], [ref], "russian")
    assert result["rougeL"]["f1"] < 100
    assert result["rougeL"]["f1"] == pytest.approx(50.0)
    assert result["rougeLsum"]["f1"] == pytest.approx(100.0)
    assert result["rouge1"]["f1"] == pytest.approx(100.0)


def test_english_prediction_for_bengali_reference_scores_zero():
    english = [row["summary"] for row in rows("english")]
    bengali = [row["summary"] for row in rows("bengali")]
    result = score_texts(english, bengali, "bengali")
    assert result["rouge1"]["f1"] == 0.0
    assert max(result["per_example"]["rouge1"]) == 0.0
    assert result["sanity"]["script_share"] == 0.0


def test_english_stemming_hand_checked():
    # Snowball English: ministers/minister -> minist, running/runs -> run, meetings/meeting -> meet;
    # "the", "a" (<= 3 characters) are left alone. Prediction tokens: the minist were run the meet
    # (6), reference: the minist run a meet (5). Unigrams in common: the, minist, run, meet = 4,
    # F1 = 2*(4/6)(4/5)/(4/6+4/5) = 72.73. Bigrams: only (the, minist): P 1/5, R 1/4, F1 22.22.
    # Without stemming only "the" matches: P 1/6, R 1/5, F1 18.18.
    pred, ref = "The ministers were running the meetings", "The minister runs a meeting"
    stemmed = score_texts([pred], [ref], "english")
    assert stemmed["stemmer"] == "snowball-english"
    assert stemmed["rouge1"]["f1"] == pytest.approx(800 / 11)
    assert stemmed["rouge2"]["f1"] == pytest.approx(200 / 9)
    plain = score_texts([pred], [ref], "english", stemmer=False)
    assert plain["stemmer"] == "none"
    assert plain["rouge1"]["f1"] == pytest.approx(200 / 11)


def test_russian_stemming_hand_checked():
    # Snowball Russian: министры/министр -> министр, подписали/подписал -> подписа,
    # договоры/договор -> договор: every word matches once stemmed, none without.
    pred, ref = "Министры подписали договоры", "Министр подписал договор"
    assert f1s(score_texts([pred], [ref], "russian")) == {v: pytest.approx(100.0) for v in VARIANTS}
    assert f1s(score_texts([pred], [ref], "russian", stemmer=False)) == {v: 0.0 for v in VARIANTS}


def test_stemmer_choice_follows_xlsum_and_is_recorded():
    pair = (["a b"], ["a b"])
    assert score_texts(*pair, "hindi")["stemmer"] == "hindi-light"
    assert score_texts(*pair, "bengali")["stemmer"] == "bengali-rules"
    assert score_texts(*pair, "turkish")["stemmer"] == "turkishstemmer"
    assert score_texts(*pair, "spanish")["stemmer"] == "snowball-spanish"
    for language in ("korean", "swahili", "vietnamese", "japanese"):
        assert score_texts(*pair, language)["stemmer"] == "none"
        assert score_texts(*pair, language, stemmer=True)["stemmer"] == "none"  # XL-Sum has none


def test_stemmer_and_segmenter_registries_cover_the_profiles_and_refuse_unknown_names():
    from peftsum.metrics.profiles import SEGMENTERS, STEMMERS
    from peftsum.metrics.segmenters import _FACTORIES as SEGMENTER_FACTORIES, get_segmenter
    from peftsum.metrics.stemmers import _FACTORIES as STEMMER_FACTORIES, get_stemmer

    assert set(STEMMERS.values()) == set(STEMMER_FACTORIES) and set(SEGMENTERS.values()) == set(SEGMENTER_FACTORIES)
    for lookup, kind in ((get_stemmer, "stemmer"), (get_segmenter, "segmenter")):
        with pytest.raises(ConfigError, match=f"unknown {kind} 'porter'; choose one of: ") as err:
            lookup("porter")
        assert "\n" not in str(err.value)


def test_hindi_and_bengali_stemmers():
    # Ramanathan & Rao (2003): longest suffix first, stem keeps 2+ characters.
    assert stem_hindi("लड़कियों") == "लड़क"  # -ियों (plural oblique)
    assert stem_hindi("जाएंगे") == "जा"  # 6 characters: -ाएंगे would leave 1, so -एंगे (future)
    assert stem_hindi("है") == "है"  # too short to stem
    assert stem_bengali("বইগুলো") == "বই"  # classifier -গুলো
    assert stem_bengali("রহিমের") == "রহিম"  # genitive -ের
    assert stem_bengali("করেছিলেন") == "কর"  # past perfect -েছিলেন


# ----------------------------------------------------------------------------- normalization
def test_nfd_reference_scores_100_against_its_nfc_form_when_normalized():
    # A real Vietnamese title stored decomposed (NFD) in the sample; a model writes it composed.
    # The XL-Sum scorer (normalize=False here) does not match them: 44.4 on this title.
    title = rows("vietnamese", "test")[0]["title"]
    assert not unicodedata.is_normalized("NFC", title)
    composed = unicodedata.normalize("NFC", title)
    assert score_texts([composed], [title], "vietnamese")["rouge1"]["f1"] == 100.0
    raw = score_texts([composed], [title], "vietnamese", normalize=False)
    assert round(raw["rouge1"]["f1"], 1) == 44.4
    assert raw["normalization"] is None


# ----------------------------------------------------------------------------- sentences
@pytest.mark.parametrize(
    ("language", "text", "expected"),
    [
        ("english", "He left. U.S. officials said 3.5 percent, e.g. more! Why?",
         ["He left.", "U.S. officials said 3.5 percent, e.g. more!", "Why?"]),
        ("hindi", "वो नेपाल जा रहे हैं। वो 12 को रहेंगे।", ["वो नेपाल जा रहे हैं।", "वो 12 को रहेंगे।"]),
        ("chinese_simplified", "微软庆祝。“用户升级。”与此同时", ["微软庆祝。", "“用户升级。”", "与此同时"]),
        ("japanese", "救出した。タイ海軍が報告！", ["救出した。", "タイ海軍が報告！"]),
        ("arabic", "هل انتهى؟ نعم انتهى.", ["هل انتهى؟", "نعم انتهى."]),
        ("urdu", "فوج کو اختیارات دے دیئے گئے ہیں۔ ریڈیو کے مطابق", ["فوج کو اختیارات دے دیئے گئے ہیں۔", "ریڈیو کے مطابق"]),
        ("burmese", "ပါဝင် ခဲ့ပါတယ်။ ဆီးရီးယား", ["ပါဝင် ခဲ့ပါတယ်။", "ဆီးရီးယား"]),
        ("amharic", "አስደንጋጭ ነበር። ማቆሙም ፈተና ሆኗል።", ["አስደንጋጭ ነበር።", "ማቆሙም ፈተና ሆኗል።"]),
        ("thai", "ต่าง ๆ และดู ที่ปรึกษา", ["ต่าง ๆ", "และดู", "ที่ปรึกษา"]),  # no break before ๆ
        ("russian", "Первое.\nВторое", ["Первое.", "Второе"]),
    ],
)
def test_split_sentences(language, text, expected):
    assert split_sentences(text, language) == expected


def test_split_sentences_on_real_articles():
    for language in ("english", "hindi", "chinese_simplified", "amharic", "burmese", "thai"):
        for row in rows(language):
            sentences = split_sentences(row["text"], language)
            assert len(sentences) >= 2, language
            assert "".join(sentences).replace(" ", "") == "".join(row["text"].split())


# ----------------------------------------------------------------------------- score JSON
def test_score_json_structure_and_ranges():
    data = rows("russian") + rows("russian", "validation")
    preds, refs = [row["title"] for row in data], [row["summary"] for row in data]
    result = score_texts(preds, refs, "ru", n_resamples=200, seed=3)
    assert list(result) == ["language", "stemmer", "normalization", "num_examples", *VARIANTS,
                            "per_example", "sanity", "bootstrap"]
    assert result["language"] == "russian" and result["normalization"] == "NFKC"
    assert result["num_examples"] == len(data)
    for variant in VARIANTS:
        s = result[variant]
        assert set(s) == {"f1", "precision", "recall", "ci_low", "ci_high"}
        per = result["per_example"][variant]
        assert len(per) == len(data) and all(0 <= x <= 100 for x in per)
        assert s["f1"] == pytest.approx(sum(per) / len(per))
        assert 0 <= s["ci_low"] <= s["f1"] <= s["ci_high"] <= 100
    assert result["rouge1"]["ci_low"] < result["rouge1"]["ci_high"]
    assert result["bootstrap"] == {"n_resamples": 200, "seed": 3, "confidence": 0.95}
    assert result["sanity"] == {"expected_script": "Cyrillic", "script_share": 1.0,
                                "empty_predictions": 0, "sentinel_predictions": 0}
    json.dumps(result)  # plain JSON types only


@pytest.mark.parametrize(
    ("preds", "refs", "language", "message"),
    [
        (["a"], ["a", "b"], "english", "1 predictions but 2 references"),
        ([], [], "english", "nothing to score"),
        (["a"], ["a"], "klingon", "unknown language 'klingon'"),
        ([None], ["a"], "english", "prediction 1 is NoneType"),
    ],
)
def test_bad_input_is_a_clear_error(preds, refs, language, message):
    with pytest.raises(PeftsumError, match=message):
        score_texts(preds, refs, language)


# ----------------------------------------------------------------------------- statistics
def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    values = [0.0, 10.0, 20.0, 30.0, 90.0, 55.0, 42.0, 7.0]
    assert bootstrap_ci(values, seed=1) == bootstrap_ci(values, seed=1)
    assert bootstrap_ci(values, seed=1) != bootstrap_ci(values, seed=2)
    low, high = bootstrap_ci(values)
    assert low < sum(values) / len(values) < high
    assert bootstrap_ci([40.0] * 5) == (40.0, 40.0)
    with pytest.raises(ConfigError):
        bootstrap_ci(values, n_resamples=0)


def test_paired_bootstrap():
    base = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 15.0] * 3
    same = paired_bootstrap(base, base)
    assert same == {"mean_diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": 1.0}
    better = [x + 5 + (i % 3) for i, x in enumerate(base)]  # always 5-7 points better
    result = paired_bootstrap(better, base, seed=7)
    assert result["mean_diff"] == pytest.approx(6.0)
    assert 5.0 <= result["ci_low"] <= 6.0 <= result["ci_high"] <= 7.0
    assert result["p_value"] == 0.0
    assert paired_bootstrap(base, better, seed=7)["mean_diff"] == pytest.approx(-6.0)
    noisy = [x + (3 if i % 2 else -3) for i, x in enumerate(base)]  # no real difference
    assert paired_bootstrap(noisy, base)["p_value"] > 0.2
    with pytest.raises(DataError, match="30 scores, system B has 29"):
        paired_bootstrap(base, base[:-1])


def test_compare_systems_on_real_rows():
    data = rows("spanish") + rows("spanish", "validation")
    refs = [row["summary"] for row in data]
    titles = score_texts([row["title"] for row in data], refs, "spanish", n_resamples=100)
    leads = score_texts([split_sentences(row["text"], "spanish")[0] for row in data], refs, "spanish", n_resamples=100)
    paired = compare_systems(titles, leads, n_resamples=100)
    for variant in VARIANTS:
        assert paired[variant]["mean_diff"] == pytest.approx(titles[variant]["f1"] - leads[variant]["f1"])
        assert 0.0 <= paired[variant]["p_value"] <= 1.0
    # 10 pairs: below MIN_PAIRED_N (30), so the result says no significance may be called
    assert paired["n"] == len(data) == 10 and paired["significance_called"] is False
    with pytest.raises(DataError, match="same references"):
        compare_systems(titles, score_texts(["x"], ["y"], "spanish", n_resamples=10))


# ----------------------------------------------------------------------------- sanity
def test_output_sanity_counts():
    hindi = [row["summary"] for row in rows("hindi")]
    preds = hindi[:3] + ["", "   ", "<extra_id_0> नेपाल", "An English sentence."]
    sanity = score_texts(preds, hindi + hindi[:2], "hindi", n_resamples=10)["sanity"]
    # In Devanagari: the 3 real summaries only. The sentinel line has 7 Latin letters
    # (extra, id) against 3 Devanagari ones (नेपाल: न, प, ल; its vowel signs are category M,
    # not letters), so it is not mostly Devanagari; blank lines have no letters.
    assert sanity == {"expected_script": "Devanagari", "script_share": pytest.approx(3 / 7),
                      "empty_predictions": 2, "sentinel_predictions": 1}


def test_script_share_per_script():
    assert script_share([rows("japanese")[0]["summary"]], "japanese") == 1.0  # kana + kanji
    assert script_share([rows("chinese_traditional")[0]["summary"]], "chinese_traditional") == 1.0
    assert script_share([rows("serbian_latin")[0]["summary"]], "serbian_latin") == 1.0
    assert script_share([rows("serbian_cyrillic")[0]["summary"]], "serbian_latin") == 0.0
    assert script_share([], "english") == 0.0


# ----------------------------------------------------------------------------- baselines
def test_baselines_on_real_rows():
    data = rows("english") + rows("english", "validation")
    result = baseline_scores(data, "english", n_resamples=50)
    lead, oracle = result["lead1"], result["oracle"]
    assert lead["num_examples"] == oracle["num_examples"] == len(data)
    assert lead["stemmer"] == "snowball-english"
    # The oracle picks the best ROUGE-L sentence, so it is at least LEAD-1 on every example.
    for a, b in zip(oracle["per_example"]["rougeL"], lead["per_example"]["rougeL"]):
        assert a >= b - 1e-9
    assert oracle["rougeL"]["f1"] > lead["rougeL"]["f1"]
    first = split_sentences(data[0]["text"], "english")[0]
    assert lead["per_example"]["rouge1"][0] == score_texts([first], [data[0]["summary"]], "english")["rouge1"]["f1"]


def test_baselines_reject_rows_without_text():
    with pytest.raises(DataError, match="row 1"):
        baseline_scores([{"summary": "x"}], "english")


def test_compare_to_lead1_gives_the_paired_block():
    from peftsum.metrics.baselines import compare_to_lead1, lead1

    data = rows("portuguese") + rows("portuguese", "validation")
    refs = [row["summary"] for row in data]
    model = score_texts([row["title"] for row in data], refs, "portuguese", n_resamples=100, seed=5)
    paired = compare_to_lead1(model, data)
    assert paired["against"] == "lead1" and paired["n_resamples"] == 100 and paired["seed"] == 5
    leads = score_texts([lead1(row["text"], "portuguese") for row in data], refs, "portuguese", n_resamples=100)
    for variant in VARIANTS:
        assert paired[variant]["mean_diff"] == pytest.approx(model[variant]["f1"] - leads[variant]["f1"])
    same = compare_to_lead1(leads, data)  # LEAD-1 against itself: no difference
    assert all(same[v]["mean_diff"] == 0.0 and same[v]["p_value"] == 1.0 for v in VARIANTS)
    with pytest.raises(DataError, match="same references"):
        compare_to_lead1(model, data[:-1])


def test_zero_resamples_skips_intervals_but_keeps_means():
    from peftsum.metrics import score_texts

    with_ci = score_texts(["a b c"], ["a b d"], "english", n_resamples=10)
    without = score_texts(["a b c"], ["a b d"], "english", n_resamples=0)
    assert without["rouge1"]["f1"] == with_ci["rouge1"]["f1"] and without["rouge1"]["ci_low"] is None
