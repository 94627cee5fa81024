"""Data loading and validation on the bundled real XL-Sum rows."""

from __future__ import annotations

import json

import pytest

from peftsum.languages import LANGUAGES, get_language, parse_languages
from peftsum.data.xlsum import load_split, read_jsonl, sample_dir, validate_rows
from peftsum.errors import DataError


def test_sample_has_all_45_languages_with_five_rows_per_split():
    # Row counts from ../shared/data/README.md: 5 per split; english/russian have no test split.
    assert len(LANGUAGES) == 45
    for name in LANGUAGES:
        for split in ("train", "validation", "test"):
            path = sample_dir() / name / f"{split}.jsonl"
            if name in ("english", "russian") and split == "test":
                assert not path.exists()
                continue
            assert len(load_split(name, split).rows) == 5, (name, split)


def test_unknown_language_lists_closest_names():
    with pytest.raises(DataError, match="russian"):
        get_language("rusian")
    assert get_language("RU").name == "russian"
    assert parse_languages("english, hindi") == ["english", "hindi"]


def test_six_rows_keep_two_and_count_four_drops_by_reason(tmp_path):
    good = [json.loads(line) for line in (sample_dir() / "english" / "train.jsonl").read_text().splitlines()[:2]]
    bad = [
        {"id": "a", "summary": "A summary.", "text": ""},          # empty text
        {"id": "b", "summary": "   \t ", "text": "Some text."},     # whitespace-only summary
        {"id": "c", "text": "Some text."},                           # missing summary field
        {"id": "d", "summary": "", "text": "Some text."},           # empty summary
    ]
    path = tmp_path / "english_train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in good + bad), encoding="utf-8")
    loaded = load_split("english", "train", tmp_path)
    assert [r["id"] for r in loaded.rows] == [good[0]["id"], good[1]["id"]]
    assert loaded.num_dropped == 4
    assert dict(loaded.dropped) == {"empty text": 1, "empty summary": 2, "missing field 'summary'": 1}


def test_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "summary": "b"}\n{"text": "a", summary}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl: invalid JSON on line 2"):
        read_jsonl(path)


def test_all_rows_dropped_is_an_error(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"text": " ", "summary": "s"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="no valid rows"):
        load_split("english", "train", tmp_path / "x.jsonl")


def test_empty_file_is_an_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        read_jsonl(tmp_path / "empty.jsonl")


def test_official_layout_and_per_language_layout(tmp_path):
    src = (sample_dir() / "hindi" / "validation.jsonl").read_text(encoding="utf-8")
    (tmp_path / "hindi_val.jsonl").write_text(src, encoding="utf-8")
    rows = load_split("hindi", "validation", tmp_path).rows
    assert rows == load_split("hindi", "validation").rows
    with pytest.raises(DataError, match="no test file for hindi"):
        load_split("hindi", "test", tmp_path)


def test_hub_without_network_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError) as err:
        load_split("english", "train", "hub")
    message = str(err.value)
    assert "\n" not in message and "--data sample" in message


def test_validate_rows_keeps_ids_and_strips_line_numbers():
    rows, dropped = validate_rows([{"text": "t", "summary": "s", "_line": 3}], "f.jsonl")
    assert rows == [{"text": "t", "summary": "s", "id": "f.jsonl:3"}] and not dropped
