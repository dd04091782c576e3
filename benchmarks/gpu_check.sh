#!/usr/bin/env bash
# Every GPU check in one command, with nothing to install: the CUDA tests and the GPU benchmarks (kernels, packed vs
# stock ST training and encode in bf16, the attention op at 30/45/60% padding, cached vs uncached losses to 16k
# triplets, BERT-base MFU, torch.compile). Each part is guarded: one that fails or runs out of time is logged and the
# next one runs. About 8 minutes on one H100/H200; on a machine without CUDA the GPU parts are skipped with the reason
# and the rest runs at toy sizes in under 3 minutes. See benchmarks/gpu_check.py.
#
#   bash benchmarks/gpu_check.sh                 # writes ./gpu_results/{gpu_check.json,gpu_results.md,gpu_check.log}
#   OUT=/some/dir bash benchmarks/gpu_check.sh   # or into $OUT
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_results}"
mkdir -p "$out"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec python benchmarks/gpu_check.py --out "$out" "$@"
