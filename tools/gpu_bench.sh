#!/usr/bin/env bash
# The GPU decode benchmark for a machine with a real GPU (not part of CI): the released 150M and
# 1.5B shapes through native wgpu (Vulkan), with the release binary built on another machine.
#   cargo build --release && tools/gpu_bench.sh [BINARY] [GENERATED_TOKENS]
# Prints each run's report: prefill and decode tokens/s, weight bytes per token against the
# copy-shader and read-only bandwidths, dispatches per block, and per kind of dispatch its
# workgroups, device time (timestamp queries) and the GB/s its weights are read at.
set -euo pipefail
bin=${1:-target/release/tokenformer}
gen=${2:-64}
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# Then: the demo page's sampling (the two-pass sampler, pipelined with a repetition penalty), the
# same without top-k (the vocabulary walked over many workgroups, then in one, as a CPU adapter
# does), a CPU adapter's kernel shapes (prefill in registers, the sampler in one workgroup), and
# the decode sums through workgroup memory alone, as browsers run them (no subgroups).
for run in "150m f16" "150m f32" "1.5b f16" "150m f16 --sample" "150m f16 --sample --top-k 0" \
    "150m f16 --sample --top-k 0 --gpu-shapes false" "150m f16 --gpu-shapes false" "150m f16 --subgroups false"; do
    set -- $run
    echo "== $*"
    "$bin" bench --synthetic "$1" --backend gpu --dtype "$2" --prompt-len 64 --gen "$gen" "${@:3}"
done
