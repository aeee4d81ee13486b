#!/usr/bin/env bash
# GPU check (issue 12): on one CUDA GPU, in under 8 minutes including set-up, measure
#   - letter and cloze eval throughput at batch 64 in bf16, SmolLM2-135M and Gemma3-270M;
#   - the time of a LoRA training step (SmolLM2, r 8, batch 16, cloze CE, bf16 autocast);
#   - the time of one small compare grid (base, sft, ts x 1 task x 1 seed);
# and write the figures to a JSON file (default benchmarks/gpu_check.<mode>.json, or $OUT/ when set).
#
# Usage: benchmarks/gpu_check.sh [--cpu-smoke] [--out FILE] [--python PY]
#   --cpu-smoke  the same code path on the tiny random test model on the CPU, in seconds (tests run it)
#   --python     the interpreter (default .venv/bin/python when present, else python3); it needs a CUDA torch
#                for the GPU run. calibtune is installed into it (pip install -e .) when it cannot import it.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=gpu
out=""
py=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cpu-smoke) mode=cpu-smoke ;;
    --out) out="$2"; shift ;;
    --python) py="$2"; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [[ -z "$py" ]]; then
  if [[ -x .venv/bin/python ]]; then py=.venv/bin/python; else py=python3; fi
fi
if [[ -z "$out" ]]; then
  out="${OUT:-benchmarks}/gpu_check.$mode.json"
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export CALIBTUNE_DATA_DIR="${CALIBTUNE_DATA_DIR:-$(cd .. && pwd)/shared/data}"

start=$(date +%s)
# set-up: calibtune importable from this checkout
if ! "$py" -c "import calibtune" 2>/dev/null; then
  "$py" -m pip install -q -e .
fi
if [[ $mode == gpu ]]; then
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  uptime
fi
if [[ $mode == gpu ]]; then
  budget=$(( 480 - ($(date +%s) - start) ))  # 8 minutes in all, set-up included
  timeout "$budget" "$py" benchmarks/gpu_check.py --mode "$mode" --out "$out"
else
  "$py" benchmarks/gpu_check.py --mode "$mode" --out "$out"
fi
echo "gpu_check.sh: $mode done in $(( $(date +%s) - start )) s"
