#!/usr/bin/env bash
# The test command (README and CI): the whole suite in fp32, then the precision-sensitive files again
# with bf16 autocast forced on, so a green run means green on AVX2-only CPUs (bf16 emulated, auto off),
# on CPUs with AMX/AVX512-BF16 (auto on) and on bf16 GPUs alike. PEFTSUM_BF16 is peftsum's precision
# switch (peftsum.runtime.PRECISION_ENV); explicit --bf16/--no-bf16 in a test still wins.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PEFTSUM_BF16=0 "$PY" -m pytest -q "$@"
if [ $# -eq 0 ]; then
  PEFTSUM_BF16=1 "$PY" -m pytest -q -p no:cacheprovider \
    tests/test_training.py tests/test_methods.py tests/test_resume.py tests/test_merge_cli.py \
    tests/test_evaluate.py tests/test_fast_path.py tests/test_fast_training.py
fi
