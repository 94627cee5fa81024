"""Tests for ``peftsum.reporting`` and ``peftsum report`` on a synthetic experiment folder.

The folder is written here, by hand, following ``docs/run_format.md``; the expected strings
are computed from the values written, formatted with ``peftsum.reporting.formatting``.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest

from peftsum.errors import DataError, PeftsumError
from peftsum.reporting import write_report
from peftsum.reporting.formatting import (
    fmt_ci,
    fmt_count,
    fmt_diff,
    fmt_mb,
    fmt_mean_std,
    fmt_p,
    fmt_pct,
    fmt_score_ci,
    fmt_seconds,
    fmt_share_pct,
)

ROUGE = ("rouge1", "rouge2", "rougeL", "rougeLsum")
# Per-example deviations from the F1 (each sums to 0, so the list's mean is the F1 written).
OFFSETS = {"full": (2.8, -3.4, 5.5, -6.0, 1.1), "lora": (1.9, -4.6, 6.4, -4.8, 1.1)}

# (method, train language) -> eval language -> F1 per ROUGE key (0-100)
SCORES = {
    ("full", "english"): {"english": (35.20, 13.10, 28.40, 28.90), "russian": (12.30, 3.10, 10.20, 10.50)},
    ("lora", "english"): {"english": (32.00, 11.20, 25.70, 26.10), "russian": (14.10, 3.90, 11.80, 12.00)},
    ("full", "russian"): {"russian": (30.10, 12.00, 24.50, 24.90)},
    ("lora", "russian"): {"russian": (26.30, 10.10, 21.00, 21.40)},
}
BASELINES = {
    "english": ((21.50, 6.10, 15.80, 16.20), (40.10, 18.70, 33.20, 33.90)),
    "russian": ((18.90, 5.40, 13.60, 14.00), (36.40, 16.20, 29.80, 30.40)),
}
PARAMS = {
    "full": (300_176_768, 300_176_768, 1200.71, 5400.2, 9100.0, 30512.0, 5400.0),
    "lora": (884_736, 301_061_504, 3.54, 3900.5, 6200.0, 18230.0, 7200.0),
}
REFS = {
    "english": [
        "The UK economy grew by 0.5% in the second quarter.",
        "A storm has closed schools across Wales.",
        "Scientists found water ice on the Moon's south pole.",
        "The election will be held in May.",
        "Fans gathered to mark the band's anniversary.",
    ],
    "russian": [
        "Экономика Великобритании выросла на 0,5%.",
        "Шторм закрыл школы в Уэльсе.",
        "Учёные нашли лёд на южном полюсе Луны.",
        "Выборы пройдут в мае.",
        "Фанаты отметили юбилей группы.",
    ],
}


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")


def _score(lang: str, f1s, *, split: str = "test", shift: float = 0.0, offsets=OFFSETS["full"]) -> dict:
    out = {"language": lang, "stemmer": "none", "normalization": "NFKC", "num_examples": 5, "split": split}
    per = {}
    for key, f in zip(ROUGE, f1s):
        f = round(f + shift, 2)
        out[key] = {
            "f1": f,
            "precision": round(f + 1.5, 2),
            "recall": round(f - 1.2, 2),
            "ci_low": round(f - 2.9, 2),
            "ci_high": round(f + 2.7, 2),
        }
        per[key] = [round(f + o, 2) for o in offsets]
    out["per_example"] = per
    out["sanity"] = {
        "expected_script": "Cyrillic" if lang == "russian" else "Latin",
        "script_share": 0.98,
        "empty_predictions": 0,
        "sentinel_predictions": 0,
    }
    out["bootstrap"] = {"n_resamples": 1000, "seed": 0, "confidence": 0.95}
    return out


def add_run(root: Path, method: str, lang: str, seed: int = 0, shift: float = 0.0) -> Path:
    run = root / "runs" / f"{method}-{lang}-s{seed}"
    trainable, total, size, secs, rss, gpu, tps = PARAMS[method]
    _write(run / "status.json", {"status": "done", "error": None, "seconds": secs + 60})
    _write(
        run / "metrics.json",
        {
            "method": method,
            "model": "google/mt5-small",
            "train_languages": [lang],
            "trainable_params": trainable,
            "total_params": total,
            "trainable_pct": 100.0 * trainable / total,
            "checkpoint_size_mb": size,
            "train_runtime_s": secs + 10 * seed,
            "peak_rss_mb": rss,
            "peak_gpu_mb": gpu,
            "train_loss": 2.1 if method == "full" else 2.4,
            "eval_loss": 2.3 if method == "full" else 2.5,
            "tokens_per_second": tps,
            "examples_per_second": tps / 600,
            "hyperparameters": {
                "learning_rate": 0.0005 if method == "full" else 0.001,
                "r": 8,
                "lora_alpha": 16,
                "target_modules": ["q", "v"],
            }
            if method == "lora"
            else {"learning_rate": 0.0005},
            "config": {"seed": seed, "method": method},
            "versions": {"peft": "0.17.0"},
            "git_commit": "abc1234",
        },
    )
    lines = []
    for step in range(10, 110, 10):
        lines.append(
            {
                "step": step,
                "epoch": step / 100,
                "loss": round(4.0 - step / 50, 3),
                "learning_rate": 5e-4,
                "elapsed_s": step * 1.5,
            }
        )
        if step % 50 == 0:
            lines.append({"step": step, "eval_loss": round(3.8 - step / 60, 3), "elapsed_s": step * 1.5 + 1})
    (run / "training_log.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    for ev_lang, f1s in SCORES[(method, lang)].items():
        res = _score(ev_lang, f1s, shift=shift, offsets=OFFSETS[method])
        res.update({"generation": {"num_beams": 4, "max_new_tokens": 64}, "model_path": str(run / "model")})
        _write(run / "eval" / ev_lang / "results.json", res)
        preds = [
            {"id": f"{ev_lang}-{i}", "reference": r, "prediction": f"[{method}] {r[:-1]} said officials."}
            for i, r in enumerate(REFS[ev_lang])
        ]
        (run / "eval" / ev_lang / "predictions.jsonl").write_text(
            "\n".join(json.dumps(p, ensure_ascii=False) for p in preds) + "\n", encoding="utf-8"
        )
    return run


def make_experiment(root: Path, *, zero_shot: bool = False, seeds=(0,)) -> Path:
    """full and lora on english and russian, a failed ia3 run, baselines for both languages.

    ``zero_shot`` adds the english-trained runs' russian evaluations; ``seeds`` adds seeds.
    """
    for seed in seeds:
        shift = 0.3 * seed
        for method, lang in SCORES:
            run = add_run(root, method, lang, seed, shift)
            if not zero_shot and lang == "english":
                import shutil

                shutil.rmtree(run / "eval" / "russian")
    _write(
        root / "runs" / "ia3-english-s0" / "status.json",
        {
            "status": "failed",
            "error": "RuntimeError: CUDA out of memory while allocating 2.0 GiB",
            "seconds": 12.5,
        },
    )
    for lang, (lead, oracle) in BASELINES.items():
        _write(
            root / "baselines" / f"{lang}.json",
            {"language": lang, "split": "test", "lead1": _score(lang, lead), "oracle": _score(lang, oracle)},
        )
    return root


def _load(root: Path, run_id: str, lang: str) -> dict:
    return json.loads((root / "runs" / run_id / "eval" / lang / "results.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One report for the read-only checks (write_report takes a second or two)."""
    root = make_experiment(tmp_path_factory.mktemp("exp"))
    paths = write_report(root)
    return (
        root,
        paths,
        (root / "report.md").read_text(encoding="utf-8"),
        (root / "report.html").read_text(encoding="utf-8"),
    )


# --------------------------------------------------------------------------- content
def test_scores_with_ci_from_files(report):
    root, _, md, html = report
    for run_id, lang in (("full-english-s0", "english"), ("lora-russian-s0", "russian")):
        res = _load(root, run_id, lang)
        for key in ROUGE:
            cell = fmt_score_ci(res[key]["f1"], res[key]["ci_low"], res[key]["ci_high"])
            assert cell in md, (run_id, key, cell)
            assert cell in html
    assert "28.40 [25.50, 31.10]" in md  # full, english, ROUGE-L, as written in the fixture


def test_baselines_shown(report):
    root, _, md, _ = report
    base = json.loads((root / "baselines" / "russian.json").read_text(encoding="utf-8"))
    for name, sc in (("LEAD-1 (baseline)", base["lead1"]), ("oracle (baseline)", base["oracle"])):
        cell = fmt_score_ci(sc["rougeL"]["f1"], sc["rougeL"]["ci_low"], sc["rougeL"]["ci_high"])
        row = next(line for line in md.splitlines() if line.startswith(f"| {name}") and cell in line)
        assert row


def test_relative_to_full(report):
    root, _, md, _ = report
    for lang in ("english", "russian"):
        full = _load(root, f"full-{lang}-s0", lang)["rougeL"]["f1"]
        lora = _load(root, f"lora-{lang}-s0", lang)["rougeL"]["f1"]
        pct = fmt_pct(100 * lora / full)
        assert f"LoRA reaches {pct} of the ROUGE-L of Full FT (" in md
        row = next(line for line in md.splitlines() if line.startswith("| LoRA | " + lang))
        assert pct in row
    assert "90.5%" in md  # 25.70 / 28.40


def test_paired_bootstrap_against_full(report):
    from peftsum.metrics import paired_bootstrap

    root, _, md, _ = report
    a = _load(root, "lora-english-s0", "english")["per_example"]["rougeL"]
    b = _load(root, "full-english-s0", "english")["per_example"]["rougeL"]
    res = paired_bootstrap(a, b, n_resamples=1000, seed=0)
    assert res["mean_diff"] == pytest.approx(statistics.fmean(a) - statistics.fmean(b), abs=1e-6)
    expected = f"{fmt_diff(res['mean_diff'])} {fmt_ci(res['ci_low'], res['ci_high'])}"
    row = next(line for line in md.splitlines() if line.startswith("| LoRA | english |"))
    assert expected in row and fmt_p(res["p_value"]) in row
    # 5 pairs: the difference and interval are shown, nothing is called significant
    assert "(n=5<30: not called)" in row
    assert (f"paired bootstrap {expected.split(' ')[0]} points, 95% CI {fmt_ci(res['ci_low'], res['ci_high'])}, "
            "only 5 paired examples, fewer than 30: difference and interval shown, nothing called significant") in md
    assert "significant at p<0.05" not in md and "not significant" not in md


def test_significance_is_called_from_30_pairs_on():
    from peftsum.reporting.analysis import PairedTest
    from peftsum.reporting.summary import describe_tests

    def test(n, p):
        return PairedTest(seed=0, metric="rougeL", mean_diff=-2.0, ci_low=-3.0, ci_high=-1.0, p_value=p, n=n)

    assert describe_tests([test(30, 0.0004)]).endswith("p<0.001, significant at p<0.05")
    assert describe_tests([test(30, 0.2)]).endswith("p=0.200, not significant at p<0.05")
    few = describe_tests([test(29, 0.0004)])
    assert "only 29 paired examples, fewer than 30" in few and "significant at" not in few
    assert test(29, 0.0004).significant is None and test(30, 0.0004).significant is True


def test_efficiency_table(report):
    root, _, md, _ = report
    m = json.loads((root / "runs" / "lora-english-s0" / "metrics.json").read_text(encoding="utf-8"))
    row = next(line for line in md.splitlines() if line.startswith("| LoRA | english | 1 |"))
    for cell in (
        fmt_count(m["trainable_params"]),
        fmt_share_pct(m["trainable_pct"]),
        fmt_mb(m["checkpoint_size_mb"]),
        fmt_seconds(m["train_runtime_s"]),
        fmt_mb(m["peak_rss_mb"]),
        "7,200.0",
    ):
        assert cell in row, cell
    full = json.loads((root / "runs" / "full-english-s0" / "metrics.json").read_text(encoding="utf-8"))
    ratio = full["trainable_params"] / m["trainable_params"]
    assert f"{ratio:,.0f}× fewer trainable parameters" in md
    assert f"{full['checkpoint_size_mb'] / m['checkpoint_size_mb']:,.0f}× smaller on disk" in md
    assert f"{full['train_runtime_s'] / m['train_runtime_s']:.1f}× faster to train" in md


def test_when_to_use_and_failed_runs(report):
    _, _, md, _ = report
    assert "## When to use which" in md
    assert "english (test, 5 examples): the highest ROUGE-L is Full FT with 28.40." in md
    assert "no method scores below LEAD-1" in md
    failed = md.split("## Failed runs", 1)[1].split("##", 1)[0]
    assert "ia3-english-s0" in failed and "CUDA out of memory while allocating 2.0 GiB" in failed
    assert "12.5 s" in failed


def test_samples_side_by_side(report):
    _, _, md, html = report
    samples = md.split("## Sample summaries", 1)[1]
    for lang in ("english", "russian"):
        for i in range(3):
            assert f"| {lang}-{i} | {REFS[lang][i]}" in samples
        assert f"{lang}-3" not in samples
    assert "[lora] Шторм закрыл школы в Уэльсе said officials." in html


def test_figures_are_valid_pngs(report):
    from PIL import Image

    root, paths, md, html = report
    figs = {k: v for k, v in paths.items() if k.startswith("figures/")}
    names = {Path(k).name for k in figs}
    # ROUGE bars per language, the frontier, loss curves per training-language set
    assert names == {
        "rouge_english_test.png",
        "rouge_russian_test.png",
        "efficiency_frontier.png",
        "loss_english.png",
        "loss_russian.png",
    }
    for rel, path in figs.items():
        assert path == root / rel and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.size[0] > 300 and im.size[1] > 200
        assert f"]({rel})" in md
    assert html.count("<img ") == len(figs)


def test_html_is_self_contained(report):
    _, _, _, html = report
    refs = re.findall(r"""(?:src|href|srcset|poster|data)\s*=\s*["']([^"']*)["']""", html, flags=re.I)
    assert refs
    for ref in refs:
        assert ref.startswith("data:image/png;base64,") or ref.startswith("#"), ref[:80]
    lower = html.lower()
    for bad in ("<link", "@import", "url(", "<script", "<iframe", "http://", "https://"):
        assert bad not in lower, bad


def test_atomic_writes_leave_no_temp_files(report):
    root, _, _, _ = report
    leftovers = [p for p in root.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []


# --------------------------------------------------------------------------- variants
@pytest.fixture(scope="module")
def variant(tmp_path_factory):
    """Three seeds, and the english-trained runs also evaluated zero-shot on russian."""
    root = make_experiment(tmp_path_factory.mktemp("variant"), zero_shot=True, seeds=(0, 1, 2))
    write_report(root)
    return root, (root / "report.md").read_text(encoding="utf-8")


def _mean(root: Path, method: str, lang: str, key: str = "rougeL") -> float:
    return statistics.fmean(_load(root, f"{method}-english-s{s}", lang)[key]["f1"] for s in (0, 1, 2))


def test_zero_shot_rows_marked(variant):
    root, md = variant
    section = md.split("### russian", 1)[1].split("###", 1)[0]
    row = next(line for line in section.splitlines() if line.startswith("| LoRA | english (zero-shot) |"))
    # compared with full fine-tuning trained on the same languages (english), on russian
    assert fmt_pct(100 * _mean(root, "lora", "russian") / _mean(root, "full", "russian")) in row
    assert "LoRA (trained on english, zero-shot)" in md
    assert "| lora-english-s0 | 0 | russian (zero-shot) |" in md


def test_several_seeds_mean_std(variant):
    root, md = variant
    vals = [_load(root, f"lora-english-s{s}", "english")["rougeL"]["f1"] for s in (0, 1, 2)]
    cell = fmt_mean_std(statistics.fmean(vals), statistics.stdev(vals))
    row = next(line for line in md.splitlines() if line.startswith("| LoRA | english | 0, 1, 2 |"))
    assert cell in row
    assert "n=5<30: not called" in row
    for s in (0, 1, 2):  # per-seed values are still listed, with their CIs
        res = _load(root, f"lora-english-s{s}", "english")["rougeL"]
        assert fmt_score_ci(res["f1"], res["ci_low"], res["ci_high"]) in md
    assert "(one line per seed, 3 seeds)" not in md  # titles live in the PNGs, not the text
    assert "![loss curves, trained on english](figures/loss_english.png)" in md


def test_rerun_replaces_and_removes_stale_figures(report):
    root, paths, md, _ = report
    stale = root / "figures" / "loss_old-run-s9.png"
    stale.write_bytes((root / "figures" / "efficiency_frontier.png").read_bytes())
    mine = root / "figures" / "my_notes.png"
    mine.write_bytes(b"not ours")
    again = write_report(root)
    assert not stale.exists() and mine.exists()
    assert again == paths
    assert (root / "report.md").read_text(encoding="utf-8") == md  # same files, same report
    mine.unlink()


# --------------------------------------------------------------------------- errors
def test_no_runs_error(tmp_path):
    (tmp_path / "runs").mkdir()
    with pytest.raises(PeftsumError) as exc:
        write_report(tmp_path)
    msg = str(exc.value)
    assert msg == f"no runs found in {tmp_path}: expected {tmp_path}/runs/<run_id>/metrics.json"
    assert "\n" not in msg


def test_missing_folder_error(tmp_path):
    with pytest.raises(PeftsumError, match="no such folder"):
        write_report(tmp_path / "nope")


@pytest.mark.parametrize(
    "rel",
    [
        "runs/lora-english-s0/metrics.json",
        "runs/full-russian-s0/eval/russian/results.json",
        "runs/full-english-s0/status.json",
        "baselines/english.json",
    ],
)
def test_corrupt_json_names_the_file(tmp_path, rel):
    root = make_experiment(tmp_path)
    (root / rel).write_text('{"method": "lora", "train_languages": ["english"],,}', encoding="utf-8")
    with pytest.raises(DataError) as exc:
        write_report(root)
    assert str(root / rel) in str(exc.value) and "invalid JSON at line 1" in str(exc.value)
    assert not (root / "report.md").exists()


def test_corrupt_jsonl_names_file_and_line(tmp_path):
    root = make_experiment(tmp_path)
    log = root / "runs" / "lora-russian-s0" / "training_log.jsonl"
    lines = log.read_text(encoding="utf-8").splitlines()
    lines[2] = '{"step": 30, "loss": 3.'
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{log}: invalid JSON on line 3")):
        write_report(root)


def test_missing_key_names_file_and_key(tmp_path):
    root = make_experiment(tmp_path)
    path = root / "runs" / "lora-english-s0" / "eval" / "english" / "results.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    del data["rougeL"]["ci_high"]
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{path}: missing 'rougeL.ci_high'")):
        write_report(root)


def test_cli_report(tmp_path):
    from typer.testing import CliRunner

    from peftsum.cli import app

    runner = CliRunner()
    root = make_experiment(tmp_path / "exp")
    ok = runner.invoke(app, ["report", str(root), "--samples", "2"])
    assert ok.exit_code == 0, ok.output
    assert (root / "report.md").is_file() and (root / "report.html").is_file()
    assert (
        "russian-2" not in (root / "report.md").read_text(encoding="utf-8").split("## Sample summaries", 1)[1]
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = runner.invoke(app, ["report", str(empty)])
    assert bad.exit_code == 2
    assert "error: no runs found in" in bad.output and "Traceback" not in bad.output


# --------------------------------------------------------------------------- browser
def test_report_renders_in_headless_chromium(report, tmp_path):
    from _browser import check_images, find_chromium, screenshot

    if find_chromium() is None:
        pytest.skip(
            "Chromium is not installed (Debian: apt-get install -y chromium); cannot open report.html in a browser"
        )
    root, paths, _, _ = report
    n_figs = sum(1 for k in paths if k.startswith("figures/"))
    check = check_images(root / "report.html")
    assert check.broken == []
    assert check.total == check.loaded == n_figs
    shot = screenshot(
        root / "report.html", tmp_path / "report.png", height=min(max(check.page_height, 800), 6000)
    )
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size[0] == 1280 and im.size[1] >= 800
        colors = im.convert("L").getextrema()
        assert colors[0] < 100 and colors[1] > 200  # not a blank page


def test_single_run_folder(tmp_path):
    root = make_experiment(tmp_path)
    run = root / "runs" / "lora-russian-s0"
    paths = write_report(run)
    md = paths["markdown"].read_text(encoding="utf-8")
    res = _load(root, "lora-russian-s0", "russian")["rougeL"]
    assert paths["markdown"] == run / "report.md"
    assert fmt_score_ci(res["f1"], res["ci_low"], res["ci_high"]) in md
    assert "No baselines/russian.json" in md


# --------------------------------------------------------------------------- noise
def _empty_predictions(root: Path) -> None:
    """Every run predicts empty strings: all F1 0, sanity says so (as score_texts writes it)."""
    for res_path in root.glob("runs/*/eval/*/results.json"):
        data = json.loads(res_path.read_text(encoding="utf-8"))
        n = data["num_examples"]
        for key in ROUGE:
            data[key] = {"f1": 0.0, "precision": 0.0, "recall": 0.0, "ci_low": 0.0, "ci_high": 0.0}
            data["per_example"][key] = [0.0] * n
        data["sanity"].update(script_share=0.0, empty_predictions=n)
        _write(res_path, data)
        preds_path = res_path.parent / "predictions.jsonl"
        rows = [json.loads(line) for line in preds_path.read_text(encoding="utf-8").splitlines()]
        preds_path.write_text("\n".join(json.dumps({**r, "prediction": ""}, ensure_ascii=False) for r in rows)
                              + "\n", encoding="utf-8")


def test_empty_predictions_conclude_nothing(tmp_path):
    root = make_experiment(tmp_path)
    _empty_predictions(root)
    write_report(root)
    md = (root / "report.md").read_text(encoding="utf-8")
    when = md.split("## When to use which", 1)[1].split("\n## ", 1)[0]
    for lang in ("english", "russian"):
        assert f"{lang} (test): no conclusion is drawn; the comparison is noise" in when
        assert "every method scores below LEAD-1" in when and "5 of 5 predictions empty" in when
    assert "pretrained base" in when and "more training rows" in when  # what would make it informative
    for concluding in ("the highest ROUGE-L", "reaches", "% of the ROUGE-L", "significant at p<", "is shared by"):
        assert concluding not in md, concluding
    for lang in ("english", "russian"):
        row = next(line for line in md.splitlines() if line.startswith(f"| LoRA | {lang} |"))
        assert row.split("|")[8].strip() == "not stated (noise)"
    # the paired tests are still shown in the tables
    assert "Paired bootstrap against full fine-tuning" in md


def test_identical_predictions_are_noise(tmp_path):
    from peftsum.reporting.analysis import build_sections
    from peftsum.reporting.noise import most_common_share, noise_reasons
    from peftsum.reporting.records import load_experiment

    assert most_common_share(["a", "a ", "b", ""]) == 0.5 and most_common_share(["", ""]) == 0.0
    root = make_experiment(tmp_path)
    path = root / "runs" / "lora-english-s0" / "eval" / "english" / "predictions.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    path.write_text("\n".join(json.dumps({**r, "prediction": "The the the."}) for r in rows) + "\n", encoding="utf-8")
    sections = {s.language: s for s in build_sections(load_experiment(root))}
    assert noise_reasons(sections["english"]) == ["LoRA: 5 of 5 predictions are the same text"]
    assert noise_reasons(sections["russian"]) == []
