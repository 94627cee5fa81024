"""Time to first training step and peak memory of ``peftsum train`` as the training set grows.

Builds local folders in peftsum's per-language layout whose rows are the bundled XL-Sum rows
repeated with their words shuffled and their ids made unique, about 2.3 KB of JSON each (the size
of a real XL-Sum English row; lengths spread over 1.5-3.1 KB), then runs the command a new user
would (``peftsum train --method lora --model tiny -l LANGS --data FOLDER --max-steps 2
--batch-size 4``) twice per size: with an empty data cache (cold) and again with the cache the
first run left (cached). For each run it prints the wall time until the first training step is
logged, the whole run's wall time and the process's peak RSS (``os.wait4``'s ``ru_maxrss``).

    python benchmarks/data_scale.py --rows 5000 25000 100000 --workdir /tmp/scale
    python benchmarks/data_scale.py --rows 300000 --workdir /tmp/scale          # ~700 MB of JSONL
    python benchmarks/data_scale.py --rows 1000000 --languages all --workdir /tmp/scale

Folders and caches are deleted after each size unless ``--keep``. Results: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

TARGET_BYTES = (1500, 3100)
"""Each row's JSON size is drawn uniformly from this range (mean 2.3 KB)."""
VALIDATION_ROWS = 200
"""Validation rows per language (the run ends with one evaluation over them)."""
ISSUE_TABLE = {25_000: ("24 s", "5.5 GB"), 100_000: ("92 s", "20.4 GB"), 300_000: ("killed after 99 s", "> 24 GB")}
"""The row-list path before the Arrow data path (issue #18: wall time of the whole command, peak RSS)."""


def _base_rows(language: str) -> list[dict]:
    from peftsum.data.xlsum import read_jsonl, sample_dir

    rows = []
    for split in ("train", "validation", "test"):
        path = sample_dir() / language / f"{split}.jsonl"
        if path.is_file():
            rows += [{k: v for k, v in r.items() if k != "_line"} for r in read_jsonl(path)]
    return rows


def synthetic_rows(language: str, n: int, seed: int = 0, prefix: str = "x"):
    """Yield ``n`` rows of ``language``: bundled rows with their words shuffled, unique ids, ~2.3 KB JSON each.

    Args:
        language: an XL-Sum language with bundled rows.
        n: rows to make.
        seed: seeds the shuffles and the sizes.
        prefix: part of every id (keep ids unique across files).
    """
    rng = random.Random(seed)
    bases = _base_rows(language)
    for i in range(n):
        base = bases[i % len(bases)]
        words = base["text"].split()
        target = rng.randint(*TARGET_BYTES)
        row = {"id": f"{prefix}-{base['id']}-{i}", "url": base["url"], "title": base["title"],
               "summary": base["summary"], "text": ""}
        budget = target - len(json.dumps(row, ensure_ascii=False).encode("utf-8"))
        out, used = [], 0
        while used < budget:
            rng.shuffle(words)
            for w in words:
                out.append(w)
                used += len(w.encode("utf-8")) + 1
                if used >= budget:
                    break
        row["text"] = " ".join(out)
        yield row


def write_folder(folder: Path, rows_per_language: dict[str, int], seed: int = 0) -> int:
    """Write ``<folder>/<language>/{train,validation}.jsonl``; returns the training JSONL's bytes."""
    total = 0
    for k, (lang, n) in enumerate(rows_per_language.items()):
        (folder / lang).mkdir(parents=True, exist_ok=True)
        for split, count in (("train", n), ("validation", min(VALIDATION_ROWS, max(1, n // 10)))):
            path = folder / lang / f"{split}.jsonl"
            with path.open("w", encoding="utf-8") as fh:
                for row in synthetic_rows(lang, count, seed=seed + 7 * k + (split == "validation"), prefix=split):
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            if split == "train":
                total += path.stat().st_size
    return total


def language_mix(total: int, languages: str) -> dict[str, int]:
    """Rows per language: all English, or all 45 languages in proportion to XL-Sum's training sizes."""
    if languages == "english":
        return {"english": total}
    from peftsum.languages import LANGUAGES

    # approximate XL-Sum training rows per language (English exact); only the proportions matter here
    sizes = {"amharic": 5761, "arabic": 37519, "azerbaijani": 6478, "bengali": 8102, "burmese": 4569,
             "chinese_simplified": 37362, "chinese_traditional": 37373, "english": 306522, "french": 8697,
             "gujarati": 9119, "hausa": 6418, "hindi": 70778, "igbo": 4183, "indonesian": 38242,
             "japanese": 7113, "kirundi": 5746, "korean": 4407, "kyrgyz": 2266, "marathi": 10903,
             "nepali": 5808, "oromo": 6063, "pashto": 14353, "persian": 47251, "pidgin": 9208,
             "portuguese": 57402, "punjabi": 8215, "russian": 62243, "scottish_gaelic": 1313,
             "serbian_cyrillic": 7275, "serbian_latin": 7276, "sinhala": 3249, "somali": 5962,
             "spanish": 38110, "swahili": 7898, "tamil": 16222, "telugu": 10421, "thai": 6616,
             "tigrinya": 5451, "turkish": 27176, "ukrainian": 43201, "urdu": 67665, "uzbek": 4728,
             "vietnamese": 32111, "welsh": 9732, "yoruba": 6350}
    assert set(sizes) == set(LANGUAGES), set(sizes) ^ set(LANGUAGES)
    scale = total / sum(sizes.values())
    return {lang: max(1, round(n * scale)) for lang, n in sizes.items()}


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a running process so far (Linux ``/proc/<pid>/stat``), or ``None``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_once(folder: Path, languages: list[str], cache: Path, out: Path, env: dict) -> dict:
    """One ``peftsum train`` process; returns seconds to the first logged step, total seconds, peak RSS (MiB)."""
    cmd = [sys.executable, "-m", "peftsum.cli", "train", "--method", "lora", "--model", "tiny",
           "-l", ",".join(languages), "--data", str(folder), "--max-steps", "2", "--batch-size", "4",
           "--output-dir", str(out), "--overwrite"]
    log_file = out.parent / f"{out.name}.log"
    shutil.rmtree(out, ignore_errors=True)  # a log left by an earlier run would read as the first step
    env = dict(env, PEFTSUM_DATA_CACHE=str(cache))
    start = time.perf_counter()
    with log_file.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        first_step = first_step_cpu = None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if first_step is None and (out / "training_log.jsonl").is_file() and \
                    (out / "training_log.jsonl").stat().st_size > 0:
                first_step = time.perf_counter() - start
                first_step_cpu = _cpu_seconds(proc.pid)
            time.sleep(0.05)
    total = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = log_file.read_text(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}); log {log_file}:\n{text[-3000:]}")
    said = [line for line in text.splitlines() if line.startswith(("training rows", "data cache"))]
    return {"first_step_s": first_step, "first_step_cpu_s": first_step_cpu, "total_s": total,
            "peak_rss_mib": usage.ru_maxrss / 1024, "said": said}


def main() -> None:
    """Parse arguments, build each folder, run cold and cached, print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[5000, 25000, 100000])
    parser.add_argument("--languages", choices=["english", "all"], default="english")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--keep", action="store_true", help="keep the folders and caches")
    args = parser.parse_args()
    from peftsum.modeling.tiny import ensure_tiny_model

    ensure_tiny_model()  # built once, outside the timings
    # fp32 and one torch thread: on a shared 2-core machine two spinning OpenMP threads make every step of
    # the tiny model ~10x slower; tokenization (Rust) keeps both cores
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PEFTSUM_BF16": os.environ.get("PEFTSUM_BF16", "0"),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    rows_out = []
    for total in args.rows:
        mix = language_mix(total, args.languages)
        folder = args.workdir / f"{args.languages}-{total}"
        cache = args.workdir / f"cache-{args.languages}-{total}"
        for path in (folder, cache):
            shutil.rmtree(path, ignore_errors=True)
        t0 = time.perf_counter()
        size = write_folder(folder, mix)
        print(f"{total:,} rows ({len(mix)} languages): {size / 2**20:,.0f} MiB of training JSONL, "
              f"built in {time.perf_counter() - t0:.0f} s", flush=True)
        cold = run_once(folder, list(mix), cache, args.workdir / f"run-{total}-cold", env)
        cached = run_once(folder, list(mix), cache, args.workdir / f"run-{total}-cached", env)
        cache_mb = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) / 2**20
        row = {"rows": total, "languages": len(mix), "jsonl_mib": size / 2**20, "cold": cold, "cached": cached,
               "cache_mib": cache_mb}
        rows_out.append(row)
        print(json.dumps(row), flush=True)
        if not args.keep:
            for path in (folder, cache):
                shutil.rmtree(path, ignore_errors=True)
    print("\n| training rows | JSONL | cold: first step, wall (CPU) | cold: peak RSS | cached: first step, wall (CPU) "
          "| cached: peak RSS | data cache | before (issue #18): wall time, peak RSS |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows_out:
        before = ISSUE_TABLE.get(r["rows"], ("-", "-")) if r["languages"] == 1 else ("-", "-")
        cold, cached = r["cold"], r["cached"]
        print(f"| {r['rows']:,} | {r['jsonl_mib']:,.0f} MiB | {cold['first_step_s']:.1f} s ({cold['first_step_cpu_s']:.1f} s) "
              f"| {cold['peak_rss_mib']:,.0f} MiB | {cached['first_step_s']:.1f} s ({cached['first_step_cpu_s']:.1f} s) "
              f"| {cached['peak_rss_mib']:,.0f} MiB | {r['cache_mib']:,.0f} MiB | {before[0]}, {before[1]} |")


if __name__ == "__main__":
    main()
