#!/usr/bin/env python
"""Render a peftsum report of a REAL experiment and save a browser screenshot of it (for the README).

    peftsum experiment --output-dir peftsum_runs/demo          # the shipped default, for real
    python scripts/report_screenshot.py peftsum_runs/demo [--out docs/report_screenshot.png]

EXP_DIR is an experiment folder (``peftsum experiment --output-dir``); its report is
(re)written with ``peftsum.reporting.write_report`` unless ``--no-write``. The page is opened
in headless Chromium (Debian: ``apt-get install -y chromium fonts-noto-core fonts-noto-cjk``),
every figure is checked to have loaded, and the top ``--height`` pixels are saved.

Next to the PNG a sidecar ``<out>.json`` records what the screenshot shows: the experiment's
``experiment.yaml`` (name, base, methods, languages, budgets), the base model each run
recorded, the experiment's wall time and when the screenshot was taken; the test suite
checks that it matches the shipped default experiment, so the README never shows a stale or
made-up run. There is no synthetic mode: every number in the picture comes from a run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path


def run_summary(exp_dir: Path) -> dict:
    """What the screenshot shows, read from the experiment folder.

    Returns:
        ``{"experiment": <experiment.yaml>, "base_models": [...], "runs": {run_id: status},
        "seconds": {run_id: s}}``.

    Raises:
        PeftsumError: no ``experiment.yaml`` (not an experiment folder).
    """
    import yaml

    from peftsum.errors import PeftsumError

    cfg_path = exp_dir / "experiment.yaml"
    if not cfg_path.is_file():
        raise PeftsumError(f"{exp_dir}: no experiment.yaml; run `peftsum experiment --output-dir {exp_dir}` first")
    cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    models, runs, seconds = set(), {}, {}
    for status in sorted(exp_dir.glob("runs/*/status.json")):
        data = json.loads(status.read_text(encoding="utf-8"))
        runs[status.parent.name] = data.get("status")
        seconds[status.parent.name] = data.get("seconds")
        metrics = status.parent / "metrics.json"
        if metrics.is_file():
            models.add(Path(str(json.loads(metrics.read_text(encoding="utf-8")).get("model", ""))).name)
    return {"experiment": cfg, "base_models": sorted(models), "runs": runs, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("exp_dir", type=Path, help="experiment folder to report on")
    ap.add_argument("--out", type=Path, default=Path("docs/report_screenshot.png"), help="PNG to write")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=1700, help="pixels from the top of the page; 0 = whole page")
    ap.add_argument("--no-write", action="store_true", help="use the existing report.html")
    ap.add_argument("--wall-time", type=float, help="the experiment's measured wall time in seconds (recorded)")
    args = ap.parse_args(argv)

    from peftsum.errors import PeftsumError
    from peftsum.io import write_json_atomic
    from peftsum.reporting import write_report

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the browser helper lives with the tests
    from _browser import check_images, find_chromium, screenshot

    try:
        summary = run_summary(args.exp_dir)
        if not args.no_write:
            write_report(args.exp_dir)
        html = Path(args.exp_dir) / "report.html"
        if find_chromium() is None:
            raise PeftsumError("Chromium not found (Debian: apt-get install -y chromium)")
        check = check_images(html, width=args.width)
        if check.broken or check.loaded != check.total:
            raise PeftsumError(
                f"{check.total - check.loaded} of {check.total} figures did not load: {check.broken}"
            )
        height = args.height or check.page_height
        screenshot(html, args.out, width=args.width, height=height)
        summary.update(screenshot=str(args.out.name), width=args.width, height=height,
                       taken_utc=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                       wall_time_s=args.wall_time)
        write_json_atomic(args.out.with_suffix(".json"), summary)
    except PeftsumError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {args.width}x{height} screenshot of {html} ({check.loaded}/{check.total} figures loaded); "
          f"sidecar {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
