#!/usr/bin/env bash
# One lent GPU machine's checks, as one prepared script (the device tool's advice: one short run).
#
# Usage, from the repository root on the GPU machine:  bash benchmarks/gpu_session.sh OUTDIR [STAGES]
#   STAGES (default "env smoke pipeline steps tests"): any of
#     env       nvidia-smi, library versions, bf16 support
#     smoke     `peftsum train` (LoRA and full, tiny model) and `peftsum evaluate` on the GPU; prints each
#               run's device and precision from its record
#     pipeline  benchmarks/pipeline.py, its Markdown written into OUTDIR/RESULTS.md (a copy of
#               benchmarks/RESULTS.md whose GPU section it replaces) and its JSON into OUTDIR/pipeline.json
#     pipeline-b32  the same at a GPU-sized batch (32 per step, 128 rows a window, training only), into
#               OUTDIR/pipeline_b32.json and OUTDIR/RESULTS_b32.md
#     steps     benchmarks/steps.py on cuda: full and LoRA step phases, a profile by self CUDA time,
#               greedy generation in fp32 and with bf16 weights
#     tests     the test files with a CUDA side (device choice, training record, serving) on the GPU
# Python packages the machine lacks travel as wheels in .wheels-dir (default .whl; see the device tool's
# README) and are installed into /tmp/site. Every stage has its own time limit, runs even if an earlier
# one failed, and logs into OUTDIR/log.txt (the device tool brings back at most 8 files).
set -u
# Here, before the device call: `bash benchmarks/gpu_session.sh --fetch-wheels` downloads into .whl (ignored by
# git; name it in the call's `carry`) the wheels of peftsum's dependencies that the CUDA image lacks or holds at
# other versions, at the versions this checkout's .venv has (~50 MB; the device tool carries 64 MB at most).
if [ "${1:-}" = "--fetch-wheels" ]; then
  PKGS="transformers huggingface_hub tokenizers peft accelerate datasets dill multiprocess nltk pyonmttok fastapi
        starlette pydantic pydantic_core annotated-types typing-inspection uvicorn multilingual-rouge TurkishStemmer
        httpx2 httpcore2 hf-xet kernels opentelemetry-api regex typing_extensions defusedxml fsspec click anyio
        annotated-doc idna tomlkit truststore"
  mkdir -p .whl
  for name in $PKGS; do
    version=$(.venv/bin/python -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name") || exit 1
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d .whl "$name==$version" || exit 1
  done
  # rouge-score publishes no wheel: build it (pure Python)
  .venv/bin/python -m pip wheel -q --no-deps --no-build-isolation -w .whl "rouge-score==$(.venv/bin/python -c \
    'import importlib.metadata as m; print(m.version("rouge-score"))')" || exit 1
  du -sh .whl
  exit 0
fi
OUTDIR=${1:?usage: gpu_session.sh OUTDIR [STAGES]  |  gpu_session.sh --fetch-wheels}
STAGES=${2:-env smoke pipeline steps tests}
mkdir -p "$OUTDIR"
LOG="$OUTDIR/log.txt"
exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PEFTSUM_HOME=/tmp/peftsum_home
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} || echo "wheel install failed"
fi
# peftsum itself: its metadata and console script from a plain install, its code from src/
$PY -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target /tmp/peftsum_pkg . \
  || echo "peftsum install failed (src/ on PYTHONPATH still works)"
export PYTHONPATH=$PWD/src:/tmp/peftsum_pkg${PYTHONPATH:+:$PYTHONPATH} PATH=/tmp/peftsum_pkg/bin:$PATH

stage() {  # stage NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@"
  echo "=== $name: rc=$? in $((SECONDS - t0)) s"
}
want() { [[ " $STAGES " == *" $1 "* ]]; }

if want env; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  $PY -c 'import torch, transformers, peft, accelerate; print("torch", torch.__version__, "cuda", torch.version.cuda,
"transformers", transformers.__version__, "peft", peft.__version__, "accelerate", accelerate.__version__,
"bf16", torch.cuda.is_bf16_supported(), torch.cuda.get_device_name(0))'
fi

if want smoke; then
  R=/tmp/gpu_runs
  rm -rf $R
  stage smoke-lora 100 $PY -m peftsum train --method lora --model tiny -l russian --max-steps 30 --eval-steps 0 \
    --output-dir $R/lora-ru
  stage smoke-full 80 $PY -m peftsum train --method full --model tiny -l russian --max-steps 30 --eval-steps 0 \
    --output-dir $R/full-ru
  stage smoke-eval 80 $PY -m peftsum evaluate --model-path $R/lora-ru -l russian --output-file $R/lora-ru/eval.json
  $PY - "$R" <<'EOF'
import json, sys
from pathlib import Path
for f in sorted(Path(sys.argv[1]).glob("*/metrics.json")):
    m = json.loads(f.read_text())
    print(f.parent.name, {k: m.get(k) for k in ("device", "precision", "train_runtime_s", "examples_per_second",
                                                "peak_gpu_mb", "train_loss", "diverged")})
e = Path(sys.argv[1]) / "lora-ru/eval.json"
if e.is_file():
    d = json.loads(e.read_text())
    print("eval", d.get("num_examples"), {k: d[k]["f1"] for k in ("rouge1", "rouge2", "rougeL") if k in d},
          {k: v for k, v in d.items() if not isinstance(v, (list, dict))})
EOF
fi

if want pipeline; then
  cp benchmarks/RESULTS.md "$OUTDIR/RESULTS.md"
  stage pipeline 300 $PY benchmarks/pipeline.py --json "$OUTDIR/pipeline.json" --markdown "$OUTDIR/RESULTS.md"
fi

if want pipeline-b32; then
  stage pipeline-b32 200 $PY benchmarks/pipeline.py --batch-size 32 --train-rows 128 --no-eval \
    --json "$OUTDIR/pipeline_b32.json" --markdown "$OUTDIR/RESULTS_b32.md"
fi

if want steps; then
  stage steps-full 60 $PY benchmarks/steps.py train --device cuda --method full --steps 10
  stage steps-full-touched 60 $PY benchmarks/steps.py train --device cuda --method full --touched-rows --steps 10
  stage steps-lora 60 $PY benchmarks/steps.py train --device cuda --method lora --steps 10
  stage steps-lora-profile 60 $PY benchmarks/steps.py train --device cuda --method lora --steps 3 --profile 20
  stage gen-fp32 60 $PY benchmarks/steps.py generate --device cuda --rows 32 --new-tokens 40 --precision fp32
  stage gen-bf16 60 $PY benchmarks/steps.py generate --device cuda --rows 32 --new-tokens 40 --precision bf16-weights
fi

if want tests; then
  XDIST=$($PY -c 'import xdist' 2>/dev/null && echo "-n 8")
  stage tests 150 $PY -m pytest -q -p no:cacheprovider $XDIST tests/test_precision.py tests/test_serving.py \
    tests/test_training.py
fi
echo "=== done"
