#!/usr/bin/env bash
# Set up peftsum in ./.venv. Usage: scripts/setup.sh [--test]
#   --test  also installs the test extras, Debian's chromium and Noto fonts (report-in-a-browser test).
# On the CPU-only machines this project is developed on, `pip install torch==2.13.0` takes the
# CPU build from local disk. A GPU user installs their own torch into .venv first; it is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -c 'import sys; assert sys.version_info >= (3, 10), "peftsum needs Python >= 3.10"'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
  .venv/bin/pip install -q torch==2.13.0
fi
if [ "${1:-}" = "--test" ]; then
  .venv/bin/pip install -q -e ".[test]"
  # Chromium for the browser test and the README screenshot; Noto fonts so that every bundled
  # script renders (fonts-noto-core: Arabic, Devanagari, Bengali, Tamil, Thai, Myanmar, Ethiopic...;
  # fonts-noto-cjk: Chinese, Japanese, Korean). Without them those samples render as empty boxes.
  if { ! command -v chromium >/dev/null 2>&1 || ! fc-list 2>/dev/null | grep -q "Noto Sans CJK"; } \
      && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core \
      fonts-noto-core fonts-noto-cjk >/dev/null) \
      || echo "note: chromium or the Noto fonts not installed; the browser test may be skipped" >&2
  fi
else
  .venv/bin/pip install -q -e .
fi
echo "peftsum is set up in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
