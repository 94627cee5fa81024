"""`peftsum data` commands and the statistics behind `data stats`."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from peftsum.cli import app
from peftsum.data.stats import language_stats, novel_ngram_share, percentiles

runner = CliRunner()


def test_novel_ngram_share_hand_computed():
    # summary "a b c" vs article "a b d": unigram c is novel (1/3); bigram (b c) is novel (1/2)
    assert novel_ngram_share(["a", "b", "c"], ["a", "b", "d"], 1) == 100 / 3
    assert novel_ngram_share(["a", "b", "c"], ["a", "b", "d"], 2) == 50.0
    assert novel_ngram_share(["a"], ["a"], 2) is None


def test_percentiles_linear_interpolation():
    # numpy's default (linear) method: p50 of 1..5 is 3, p25 is 2
    assert percentiles([1, 2, 3, 4, 5])["p50"] == 3 and percentiles([1, 2, 3, 4, 5])["p25"] == 2


def test_stats_on_real_russian_rows(tiny_tokenizer):
    stats = language_stats("russian", "sample", tiny_tokenizer)
    assert set(stats["splits"]) == {"train", "validation"}
    train = stats["splits"]["train"]
    assert train["rows"] == 5
    assert train["article_tokens"]["p50"] > train["summary_tokens"]["p50"] > 0
    assert train["compression_ratio"] > 1
    # Cyrillic words are counted (an English-only tokenizer would find no words at all)
    assert 0 < train["novel_unigrams_pct"] < train["novel_bigrams_pct"] <= 100


def test_data_stats_cli_writes_json(tiny_model_dir, tmp_path):
    out = tmp_path / "stats.json"
    res = runner.invoke(app, ["data", "stats", "-l", "hindi", "--tokenizer", str(tiny_model_dir),
                              "--output-file", str(out)])
    assert res.exit_code == 0, res.output
    assert "compression ratio" in res.output
    assert json.loads(out.read_text())["splits"]["test"]["rows"] == 5


def test_data_validate_cli_reports_drops_and_bad_lines(tmp_path):
    good = tmp_path / "ok.jsonl"
    good.write_text('{"id": "1", "text": "t", "summary": "s"}\n{"id": "2", "text": "", "summary": "s"}\n')
    res = runner.invoke(app, ["data", "validate", str(good)], env={"COLUMNS": "400"})
    assert res.exit_code == 2 and "1 valid row, 1 dropped" in res.output
    assert "dropped 1 row: empty text (line 2)" in res.output and "--allow-drops" in res.output
    res = runner.invoke(app, ["data", "validate", str(good), "--allow-drops"], env={"COLUMNS": "400"})
    assert res.exit_code == 0, res.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "text": "t", "summary": "s"}\nnot json\n\n[1, 2]\n{"id": "3", "text": "t", "summary": "s"}\n'
                   '{"id": "4", "text": "t"\n')
    res = runner.invoke(app, ["data", "validate", str(bad)], env={"COLUMNS": "400"})
    # every bad line is listed at once (lines 2, 4 and 6; the blank line 3 is fine), with its column
    assert res.exit_code == 2 and "2 valid rows, 0 dropped, 3 malformed lines" in res.output
    assert f"{bad}:2:1: invalid JSON" in res.output and f"{bad}:4:1: expected a JSON object" in res.output
    assert f"{bad}:6:24: invalid JSON" in res.output  # the cut-off end of the line, not column 1
    assert "Traceback" not in res.output and res.output.strip().splitlines()[-1].startswith("error: 3 malformed lines")


def test_unknown_language_is_one_line_with_suggestions():
    res = runner.invoke(app, ["data", "stats", "-l", "hindu"])
    assert res.exit_code == 2 and "did you mean hindi" in res.output and "Traceback" not in res.output
