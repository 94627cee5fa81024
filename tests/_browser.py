"""Open a report in headless Chromium: check that every figure loads, take a screenshot.

Used by the test-suite and ``scripts/report_screenshot.py`` (not part of the installed package). Needs a Chromium binary
(Debian: ``apt-get install -y chromium``); :func:`find_chromium` returns ``None`` without one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from peftsum.errors import PeftsumError

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

# Runs after the page's load event; records how many <img> decoded (naturalWidth > 0).
_PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (im) { return !(im.complete && im.naturalWidth > 0); });
  var root = document.documentElement;
  root.setAttribute('data-images-total', String(imgs.length));
  root.setAttribute('data-images-loaded', String(imgs.length - broken.length));
  root.setAttribute('data-images-broken', broken.map(function (im) { return im.alt; }).join(' | '));
  root.setAttribute('data-page-height', String(Math.ceil(document.documentElement.scrollHeight)));
});
</script>"""


@dataclass
class ImageCheck:
    """Result of :func:`check_images`.

    Attributes:
        total: number of ``<img>`` elements in the page.
        loaded: how many decoded (``naturalWidth > 0``) after the load event.
        broken: alt texts of the images that did not load.
        page_height: document height in CSS pixels at a 1280-pixel-wide window.
    """

    total: int
    loaded: int
    broken: list[str]
    page_height: int


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary: ``$PEFTSUM_CHROMIUM`` if set, else the first of
    ``chromium``, ``chromium-browser``, ``google-chrome``... on ``PATH``; ``None`` if none."""
    env = os.environ.get("PEFTSUM_CHROMIUM")
    if env:
        return env if Path(env).is_file() else shutil.which(env)
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _flags(user_data_dir: str) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        # Nothing may be fetched from the network: an external resource then fails to load.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={user_data_dir}",
    ]


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    binary = find_chromium()
    if binary is None:
        raise PeftsumError(
            "Chromium not found (Debian: apt-get install -y chromium; or set PEFTSUM_CHROMIUM)"
        )
    with tempfile.TemporaryDirectory(prefix="peftsum-chromium-") as profile:
        try:
            return subprocess.run(
                [binary, *_flags(profile), *args],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise PeftsumError(f"Chromium did not finish within {timeout:.0f} s") from None


def check_images(html_path: Path, *, width: int = 1280, timeout: float = 120) -> ImageCheck:
    """Load a copy of ``html_path`` (alone in a temp folder, network blocked) in headless
    Chromium and count the ``<img>`` elements that decoded.

    Because the copy sits alone in an empty folder, an image only loads if it is embedded in
    the page itself; a relative ``figures/...`` link or an http URL counts as broken.

    Args:
        html_path: the report page.
        width: window width in pixels.
        timeout: seconds before giving up.

    Returns:
        An :class:`ImageCheck`.

    Raises:
        PeftsumError: Chromium is missing, times out, or its DOM dump lacks the probe's result.
    """
    page = Path(html_path).read_text(encoding="utf-8")
    probed = page.replace("</body>", _PROBE + "</body>", 1) if "</body>" in page else page + _PROBE
    with tempfile.TemporaryDirectory(prefix="peftsum-report-check-") as tmp:
        copy = Path(tmp) / "report.html"
        copy.write_text(probed, encoding="utf-8")
        proc = _run(
            ["--dump-dom", "--virtual-time-budget=15000", f"--window-size={width},1000", copy.as_uri()],
            timeout,
        )
    head = proc.stdout[:4000]
    attrs = dict(re.findall(r'data-(images-total|images-loaded|images-broken|page-height)="([^"]*)"', head))
    if "images-total" not in attrs:
        tail = (proc.stderr or "").strip().splitlines()[-3:]
        raise PeftsumError(
            f"Chromium did not report image status for {html_path} (exit {proc.returncode}): {' / '.join(tail)}"
        )
    broken = [b for b in attrs.get("images-broken", "").split(" | ") if b]
    return ImageCheck(
        total=int(attrs["images-total"]),
        loaded=int(attrs["images-loaded"]),
        broken=broken,
        page_height=int(float(attrs.get("page-height") or 0)),
    )


def screenshot(
    html_path: Path, png_path: Path, *, width: int = 1280, height: int = 1600, timeout: float = 120
) -> Path:
    """Save a PNG screenshot of the top ``width`` x ``height`` pixels of ``html_path``.

    Args:
        html_path: the page to open (as a ``file://`` URL).
        png_path: where to write the PNG (parent folders are created).
        width, height: window size in pixels (pass the :class:`ImageCheck` ``page_height`` for
            the whole page).
        timeout: seconds before giving up.

    Returns:
        ``png_path``.

    Raises:
        PeftsumError: Chromium is missing, times out, or writes no screenshot.
    """
    png_path = Path(png_path).resolve()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="peftsum-shot-") as tmp:
        out = Path(tmp) / "shot.png"
        proc = _run(
            [
                f"--screenshot={out}",
                f"--window-size={width},{height}",
                "--virtual-time-budget=15000",
                Path(html_path).resolve().as_uri(),
            ],
            timeout,
        )
        if not out.is_file() or out.stat().st_size == 0:
            tail = (proc.stderr or "").strip().splitlines()[-3:]
            raise PeftsumError(
                f"Chromium wrote no screenshot of {html_path} (exit {proc.returncode}): {' / '.join(tail)}"
            )
        os.replace(out, png_path) if out.stat().st_dev == png_path.parent.stat().st_dev else shutil.move(
            str(out), png_path
        )
    return png_path
