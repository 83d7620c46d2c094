#!/usr/bin/env bash
# One command for a lent GPU (issue #14): zoo-building speed extrapolated to the paper's zoo,
# the six encoders' pretraining steps beside the published implementation, CUDA/CPU agreement.
# Writes gpu_check_out/gpu_check.json and gpu_check_out/gpu_check.md; sized for <= 8 minutes.
#
#   REFERENCE=/path/to/rnn_weights_representation_learning benchmarks/gpu_check.sh
#   benchmarks/gpu_check.sh --device cpu --tiny          # the CI form
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD:$PWD/plugins${PYTHONPATH:+:$PYTHONPATH}"
args=("$@")
if [[ -n "${REFERENCE:-}" ]]; then
  args+=(--reference "$REFERENCE")
fi
exec python benchmarks/gpu_check.py "${args[@]}"
