"""``--overwrite`` replaces peftsum's own outputs only: never the working folder, the home folder, a folder
of someone's files or a plain file given as an output folder (found by a fresh-user pass: ``train
--output-dir . --overwrite`` emptied the working folder)."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from peftsum.cli import app
from peftsum.errors import PeftsumError
from peftsum.io import check_replaceable


def _train(tiny_model_dir, out, *extra):
    return CliRunner().invoke(app, ["train", "--method", "lora", "--model", str(tiny_model_dir), "--max-steps", "1",
                                    "--train-samples", "2", "--val-samples", "1", "--max-source-length", "32",
                                    "--max-target-length", "8", "--eval-steps", "0", "--output-dir", str(out),
                                    "--overwrite", *extra], env={"COLUMNS": "400"})


def test_overwrite_never_deletes_the_working_folder_or_foreign_files(tiny_model_dir, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "precious.txt").write_text("keep")
    monkeypatch.chdir(work)
    res = _train(tiny_model_dir, ".")
    assert res.exit_code == 2 and "refusing to replace the working folder" in res.output
    assert (work / "precious.txt").read_text() == "keep"
    res = _train(tiny_model_dir, "..")
    assert res.exit_code == 2 and (work / "precious.txt").is_file()

    docs = work / "mydocs"
    docs.mkdir()
    (docs / "thesis.txt").write_text("important")
    res = _train(tiny_model_dir, docs)
    assert res.exit_code == 2 and "does not look like peftsum output" in res.output
    assert (docs / "thesis.txt").read_text() == "important"

    plain = work / "f.json"
    plain.write_text("{}")
    res = _train(tiny_model_dir, plain)
    assert res.exit_code == 2 and "is a file" in res.output and plain.read_text() == "{}"


def test_overwrite_still_replaces_a_run(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    assert _train(tiny_model_dir, run).exit_code == 0
    first = (run / "metrics.json").stat().st_mtime_ns
    res = _train(tiny_model_dir, run)
    assert res.exit_code == 0, res.output
    assert (run / "metrics.json").stat().st_mtime_ns != first


def test_replaceable_rules(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for path in (tmp_path, tmp_path.parent, os.path.expanduser("~"), "/"):
        with pytest.raises(PeftsumError, match="refusing to replace"):
            check_replaceable(path)
    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "notes.txt").write_text("x")
    with pytest.raises(PeftsumError, match="none of config.json"):
        check_replaceable(merged, ("config.json",))
    (merged / "config.json").write_text("{}")
    check_replaceable(merged, ("config.json",))  # a model folder may be replaced
    check_replaceable(merged)  # no markers: any folder but the protected ones


def test_a_missing_local_path_is_named_not_sent_to_the_hub(tmp_path, monkeypatch):
    """``./local/path`` is a path (``Path`` drops the ``./``, which made it look like a hub id ``local/path``)."""
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["evaluate", "--model-path", "./local/path", "-l", "english", "--split",
                                   "validation", "--output-file", str(tmp_path / "r.json")], env={"COLUMNS": "400"})
    assert res.exit_code == 2 and "./local/path: no such model folder" in res.output and "hub" not in res.output
    res = CliRunner().invoke(app, ["merge", "--adapter", "./nope", "--output-dir", str(tmp_path / "m")],
                             env={"COLUMNS": "400"})
    assert res.exit_code == 2 and "nope: no such folder" in res.output
