#!/usr/bin/env python
"""Render a peftsum report and save a browser screenshot of it (for the README).

    python scripts/report_screenshot.py EXP_DIR [--out docs/report_screenshot.png]
    python scripts/report_screenshot.py --demo /tmp/synthetic-demo

EXP_DIR is an experiment folder (``peftsum experiment --output-dir``); its report is
(re)written with ``peftsum.reporting.write_report`` unless ``--no-write``. The page is opened
in headless Chromium (Debian: ``apt-get install -y chromium``), every figure is checked to have
loaded, and the top ``--height`` pixels are saved.

``--demo DIR`` first writes a SYNTHETIC experiment into DIR (made-up scores shaped like an
mT5-base XL-Sum run: full / LoRA / IA3, three languages, two seeds, a zero-shot evaluation, a
failed run), for when no real experiment is at hand. The report title then reads
"peftsum report: <DIR name>"; name the folder so that it says it is synthetic.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import zlib
from pathlib import Path

import numpy as np

ROUGE = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# --------------------------------------------------------------------------- synthetic demo
# Target mean F1 (ROUGE-1, -2, -L, -Lsum) per (method, eval language) for in-language runs,
# and for the english-trained runs evaluated zero-shot on spanish. Made up, XL-Sum-like.
_DEMO_SCORES = {
    ("full", "english"): (36.1, 14.2, 28.9, 29.4),
    ("lora", "english"): (34.6, 13.1, 27.6, 28.0),
    ("ia3", "english"): (31.2, 10.9, 24.8, 25.1),
    ("full", "russian"): (31.4, 13.0, 25.3, 25.8),
    ("lora", "russian"): (29.9, 12.1, 24.1, 24.4),
    ("ia3", "russian"): (26.0, 9.6, 21.0, 21.3),
    ("full", "spanish"): (29.8, 10.6, 22.5, 22.9),
    ("lora", "spanish"): (28.9, 10.0, 21.9, 22.2),
    ("ia3", "spanish"): (25.7, 8.1, 19.6, 19.9),
    ("full", "english->spanish"): (14.2, 3.4, 11.6, 11.8),
    ("lora", "english->spanish"): (16.9, 4.4, 13.5, 13.7),
    ("ia3", "english->spanish"): (15.1, 3.8, 12.2, 12.4),
}
_DEMO_BASE = {
    "english": ((22.1, 6.4, 16.0, 16.5), (42.0, 20.1, 34.6, 35.2)),
    "russian": ((19.4, 5.9, 14.1, 14.5), (37.9, 17.0, 31.0, 31.6)),
    "spanish": ((21.0, 5.5, 14.9, 15.3), (37.2, 15.8, 29.9, 30.4)),
}
# trainable, total, checkpoint MB, train s, peak RSS MB, peak GPU MB, tokens/s (mT5-base shaped)
_DEMO_COST = {
    "full": (582_401_280, 582_401_280, 2329.6, 5412.0, 11_840.0, 38_214.0, 5_230.0),
    "lora": (884_736, 583_286_016, 3.55, 3_958.0, 8_105.0, 21_402.0, 7_180.0),
    "ia3": (172_032, 582_573_312, 0.70, 3_604.0, 7_930.0, 20_188.0, 7_640.0),
}
_HYPER = {
    "full": {"learning_rate": 0.0005},
    "lora": {
        "r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.05,
        "target_modules": ["q", "v"],
        "learning_rate": 0.001,
    },
    "ia3": {"target_modules": ["k", "v", "wo"], "feedforward_modules": ["wo"], "learning_rate": 0.003},
}


def _dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")


def _score(lang: str, means, rng, n: int, split: str) -> dict:
    out = {"language": lang, "stemmer": "none", "normalization": "NFKC", "num_examples": n, "split": split}
    per = {}
    # per-example difficulty shared by every method on this language, plus the run's own noise
    shared = np.random.default_rng(zlib.crc32(lang.encode())).normal(0, 1, n)
    noise = 0.8 * shared + 0.6 * rng.normal(0, 1, n)
    for key, mu in zip(ROUGE, means):
        vals = np.clip(mu + (0.45 * mu) * (0.7 * noise + 0.3 * rng.normal(0, 1, n)), 0, 100)
        vals = vals - vals.mean() + mu
        boot = np.random.default_rng(0).integers(0, n, (1000, n))
        means_b = vals[boot].mean(1)
        f = float(vals.mean())
        out[key] = {
            "f1": round(f, 4),
            "precision": round(f * 1.08, 4),
            "recall": round(f * 0.93, 4),
            "ci_low": round(float(np.percentile(means_b, 2.5)), 4),
            "ci_high": round(float(np.percentile(means_b, 97.5)), 4),
        }
        per[key] = [round(float(v), 4) for v in vals]
    out["per_example"] = per
    out["sanity"] = {
        "expected_script": "Cyrillic" if lang == "russian" else "Latin",
        "script_share": 0.99,
        "empty_predictions": 0,
        "sentinel_predictions": 0,
    }
    out["bootstrap"] = {"n_resamples": 1000, "seed": 0, "confidence": 0.95}
    return out


def _sample_rows(lang: str) -> list[dict]:
    from peftsum.data.xlsum import sample_dir

    path = Path(sample_dir()) / lang / "validation.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _prediction(text: str, method: str) -> str:
    words = text.split()
    n = {"full": 24, "lora": 21, "ia3": 15}[method]
    return " ".join(words[:n]).rstrip(",;:") + "."


def make_demo(root: Path) -> Path:
    """Write a synthetic experiment folder (see the module docstring) and return it."""
    if root.exists():
        shutil.rmtree(root)
    rng = np.random.default_rng(7)
    rows = {lang: _sample_rows(lang) for lang in _DEMO_BASE}
    # 200 scored examples; the 5 bundled rows give the predictions shown in the sample table.
    n = 200
    for seed in (0, 1):
        for method in ("full", "lora", "ia3"):
            for lang in ("english", "russian", "spanish"):
                run = root / "runs" / f"{method}-{lang}-s{seed}"
                trainable, total, size, secs, rss, gpu, tps = _DEMO_COST[method]
                jitter = 1 + 0.02 * rng.normal()
                final = {"full": 1.92, "lora": 2.05, "ia3": 2.31}[method] + 0.03 * seed
                _dump(
                    run / "status.json",
                    {"status": "done", "error": None, "seconds": round(secs * jitter + 240, 1)},
                )
                _dump(
                    run / "metrics.json",
                    {
                        "method": method,
                        "model": "google/mt5-base",
                        "train_languages": [lang],
                        "trainable_params": trainable,
                        "total_params": total,
                        "trainable_pct": 100 * trainable / total,
                        "checkpoint_size_mb": size,
                        "train_runtime_s": round(secs * jitter, 1),
                        "peak_rss_mb": rss,
                        "peak_gpu_mb": gpu,
                        "train_loss": final,
                        "eval_loss": final + 0.12,
                        "tokens_per_second": round(tps / jitter, 1),
                        "examples_per_second": round(tps / jitter / 610, 2),
                        "hyperparameters": _HYPER[method],
                        "config": {"seed": seed, "method": method},
                        "versions": {},
                        "git_commit": "demo",
                    },
                )
                log = []
                for step in range(50, 3050, 50):
                    loss = (
                        final
                        + 6.5 * math.exp(-step / (350 if method == "full" else 600))
                        + 0.08 * rng.normal()
                    )
                    log.append(
                        {
                            "step": step,
                            "epoch": step / 1000,
                            "loss": round(loss, 4),
                            "learning_rate": 1e-3,
                            "elapsed_s": step * 1.3,
                        }
                    )
                    if step % 500 == 0:
                        log.append(
                            {
                                "step": step,
                                "eval_loss": round(
                                    final + 0.12 + 5.5 * math.exp(-step / (400 if method == "full" else 650)),
                                    4,
                                ),
                                "elapsed_s": step * 1.3 + 5,
                            }
                        )
                (run / "training_log.jsonl").write_text(
                    "\n".join(json.dumps(x) for x in log) + "\n", encoding="utf-8"
                )
                evals = [(lang, _DEMO_SCORES[(method, lang)])]
                if lang == "english":
                    evals.append(("spanish", _DEMO_SCORES[(method, "english->spanish")]))
                for ev_lang, means in evals:
                    means = tuple(m + 0.25 * rng.normal() for m in means)
                    res = _score(
                        ev_lang,
                        means,
                        np.random.default_rng(zlib.crc32(f"{method}-{lang}-{ev_lang}-{seed}".encode())),
                        n,
                        "test",
                    )
                    res.update(
                        {
                            "generation": {"num_beams": 4, "max_new_tokens": 64},
                            "model_path": str(run / "model"),
                        }
                    )
                    _dump(run / "eval" / ev_lang / "results.json", res)
                    src = rows[ev_lang]
                    preds = [
                        {
                            "id": src[i % len(src)]["id"] + ("" if i < len(src) else f"#{i}"),
                            "reference": src[i % len(src)]["summary"],
                            "prediction": _prediction(src[i % len(src)]["text"], method),
                        }
                        for i in range(n)
                    ]
                    (run / "eval" / ev_lang / "predictions.jsonl").write_text(
                        "\n".join(json.dumps(p, ensure_ascii=False) for p in preds) + "\n", encoding="utf-8"
                    )
    _dump(
        root / "runs" / "prefix-english-s0" / "status.json",
        {
            "status": "failed",
            "error": "ValueError: prefix tuning needs num_virtual_tokens > 0",
            "seconds": 8.2,
        },
    )
    for lang, (lead, oracle) in _DEMO_BASE.items():
        r = np.random.default_rng(11)
        _dump(
            root / "baselines" / f"{lang}.json",
            {
                "language": lang,
                "split": "test",
                "lead1": _score(lang, lead, r, n, "test"),
                "oracle": _score(lang, oracle, r, n, "test"),
            },
        )
    return root


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("exp_dir", nargs="?", type=Path, help="experiment folder to report on")
    ap.add_argument("--demo", type=Path, help="write a synthetic experiment here first and report on it")
    ap.add_argument("--out", type=Path, default=Path("docs/report_screenshot.png"), help="PNG to write")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument(
        "--height", type=int, default=1500, help="pixels from the top of the page; 0 = whole page"
    )
    ap.add_argument("--no-write", action="store_true", help="use the existing report.html")
    args = ap.parse_args(argv)
    if (args.exp_dir is None) == (args.demo is None):
        ap.error("give EXP_DIR or --demo DIR")

    from peftsum.errors import PeftsumError
    from peftsum.reporting import write_report
    from peftsum.reporting.browser import check_images, find_chromium, screenshot

    try:
        exp = make_demo(args.demo) if args.demo else args.exp_dir
        if not args.no_write:
            write_report(exp)
        html = Path(exp) / "report.html"
        if find_chromium() is None:
            raise PeftsumError("Chromium not found (Debian: apt-get install -y chromium)")
        check = check_images(html, width=args.width)
        if check.broken or check.loaded != check.total:
            raise PeftsumError(
                f"{check.total - check.loaded} of {check.total} figures did not load: {check.broken}"
            )
        height = args.height or check.page_height
        screenshot(html, args.out, width=args.width, height=height)
    except PeftsumError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{args.out}: {args.width}x{height} screenshot of {html} ({check.loaded}/{check.total} figures loaded)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
