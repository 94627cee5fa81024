"""`peftsum score`: files in, table out, score JSON written; bad input is a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import peftsum
from peftsum.cli import app

SAMPLE = Path(peftsum.__file__).parent / "data" / "sample" / "xlsum"
runner = CliRunner()


def french_rows() -> list[dict]:
    lines = (SAMPLE / "french" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture
def files(tmp_path):
    rows = french_rows()
    preds = tmp_path / "pred.txt"
    refs = tmp_path / "ref.txt"
    preds.write_text("".join(row["title"] + "\n" for row in rows), encoding="utf-8")
    refs.write_text("".join(row["summary"] + "\n" for row in rows), encoding="utf-8")
    jsonl = tmp_path / "predictions.jsonl"
    jsonl.write_text(
        "".join(json.dumps({"id": r["id"], "reference": r["summary"], "prediction": r["title"]}) + "\n" for r in rows),
        encoding="utf-8",
    )
    return preds, refs, jsonl


def score(*args: str):
    return runner.invoke(app, ["score", *args])


def test_score_writes_the_score_json(files, tmp_path):
    preds, refs, _ = files
    out = tmp_path / "out" / "scores.json"
    result = score("--language", "french", "--predictions", str(preds), "--references", str(refs),
                   "--output-file", str(out), "--n-resamples", "100")
    assert result.exit_code == 0, result.output
    assert "ROUGE-Lsum" in result.output and "in Latin script" in result.output
    data = json.loads(out.read_text(encoding="utf-8"))
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert set(data[key]) == {"f1", "precision", "recall", "ci_low", "ci_high"}
        assert 0 < data[key]["f1"] < 100
        assert len(data["per_example"][key]) == 5
    assert data["language"] == "french" and data["stemmer"] == "snowball-french"
    assert data["normalization"] == "NFKC" and data["num_examples"] == 5
    assert data["sanity"]["empty_predictions"] == 0 and data["sanity"]["sentinel_predictions"] == 0
    assert data["bootstrap"]["n_resamples"] == 100


def test_jsonl_input_and_stemmer_switch(files, tmp_path):
    preds, refs, jsonl = files
    plain, from_jsonl = tmp_path / "a.json", tmp_path / "b.json"
    assert score("-l", "fr", "--predictions", str(preds), "--references", str(refs), "--no-stemmer",
                 "--output-file", str(plain)).exit_code == 0
    assert score("-l", "fr", "--predictions", str(jsonl), "--references", str(jsonl), "--no-stemmer",
                 "--output-file", str(from_jsonl)).exit_code == 0
    a, b = (json.loads(p.read_text(encoding="utf-8")) for p in (plain, from_jsonl))
    assert a["stemmer"] == b["stemmer"] == "none"
    assert a["per_example"] == b["per_example"]


def test_compare_predictions_adds_a_paired_test(files, tmp_path):
    preds, refs, _ = files
    out = tmp_path / "paired.json"
    result = score("-l", "french", "--predictions", str(refs), "--references", str(refs),
                   "--compare-predictions", str(preds), "--output-file", str(out), "--n-resamples", "200")
    assert result.exit_code == 0, result.output
    paired = json.loads(out.read_text(encoding="utf-8"))["paired"]
    assert paired["against"] == str(preds)
    # 5 pairs: the difference is shown, nothing is called significant (fewer than MIN_PAIRED_N = 30)
    assert paired["n"] == 5 and paired["significance_called"] is False
    text = " ".join(result.output.split())
    assert "only 5 pairs, fewer than 30" in text
    assert "nothing called significant" in text
    assert paired["rouge1"]["mean_diff"] > 0  # references scored against themselves win
    assert set(paired["rougeL"]) == {"mean_diff", "ci_low", "ci_high", "p_value"}


def _error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:")
    return lines[0]


def test_mismatched_line_counts(files, tmp_path):
    preds, refs, _ = files
    short = tmp_path / "short.txt"
    short.write_text("one line\n", encoding="utf-8")
    line = _error_line(score("-l", "french", "--predictions", str(short), "--references", str(refs)))
    assert "short.txt has 1 texts" in line and "ref.txt has 5" in line


def test_unknown_language(files):
    preds, refs, _ = files
    line = _error_line(score("-l", "frnech", "--predictions", str(preds), "--references", str(refs)))
    assert "unknown language 'frnech'" in line and "french" in line


def test_empty_file(files, tmp_path):
    preds, _, _ = files
    empty = tmp_path / "empty.txt"
    empty.write_text("\n", encoding="utf-8")
    line = _error_line(score("-l", "french", "--predictions", str(preds), "--references", str(empty)))
    assert "empty.txt: empty file" in line


def test_bad_json_line_names_file_and_line(files, tmp_path):
    preds, _, jsonl = files
    broken = tmp_path / "broken.jsonl"
    lines = jsonl.read_text(encoding="utf-8").splitlines()
    broken.write_text("\n".join(lines[:2] + ["{not json"] + lines[3:]) + "\n", encoding="utf-8")
    line = _error_line(score("-l", "french", "--predictions", str(broken), "--references", str(jsonl)))
    assert "broken.jsonl:3: not a JSON object" in line


def test_missing_file_and_blank_reference(files, tmp_path):
    preds, refs, _ = files
    line = _error_line(score("-l", "french", "--predictions", str(tmp_path / "nope.txt"), "--references", str(refs)))
    assert "nope.txt: file not found" in line
    gap = tmp_path / "gap.txt"
    gap.write_text("a\n\nc\nd\ne\n", encoding="utf-8")
    line = _error_line(score("-l", "french", "--predictions", str(preds), "--references", str(gap)))
    assert "gap.txt:2: empty text" in line


def _rows(language: str, split: str) -> list[dict]:
    lines = (SAMPLE / language / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize("language", ["russian", "english"])
def test_compare_seed_scorer_side_by_side(tmp_path, language):
    from rouge_score import rouge_scorer

    rows = _rows(language, "validation")
    preds, refs, out = tmp_path / "generated_predictions.txt", tmp_path / "refs.txt", tmp_path / "s.json"
    preds.write_text("".join(r["title"].replace("\n", " ") + "\n" for r in rows), encoding="utf-8")
    refs.write_text("".join(r["summary"].replace("\n", " ") + "\n" for r in rows), encoding="utf-8")
    result = score("-l", language, "--predictions", str(preds), "--references", str(refs),
                   "--compare-seed-scorer", "--output-file", str(out), "--n-resamples", "50")
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text(encoding="utf-8"))
    block = data["seed_scorer"]
    # the seed study's scorer, called as its users call it
    seed = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    expected = [seed.score(r["summary"], r["title"]) for r in rows]
    for key in ("rouge1", "rougeL"):
        mean = 100 * sum(e[key].fmeasure for e in expected) / len(rows)
        assert block["seed"][key] == pytest.approx(mean)
        assert block["peftsum"][key] == pytest.approx(data[key]["f1"])
        assert block["difference"][key] == pytest.approx(data[key]["f1"] - mean)
    assert "Same texts, two scorers" in result.output
    if language == "russian":  # every Cyrillic word deleted: only digits and Latin names ("nokia") are left
        assert block["reference_token_share"] < 0.1
    else:
        assert block["reference_token_share"] > 0.9 and abs(block["difference"]["rouge1"]) < 5
