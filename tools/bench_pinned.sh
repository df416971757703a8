#!/usr/bin/env bash
# `tokenformer bench` on lavapipe with its compute threads pinned one per CPU (Linux; not part of
# CI). On a small VM (the 2-vCPU CI machine) the scheduler often wakes both of lavapipe's compute
# threads on one CPU and leaves the other idle for seconds, and a decoded token (90 dispatches at
# 150M, each waking the threads) then takes 10-30 % longer than its dispatches' device time. With
# the threads pinned, wall-clock decode matches the device time, so this measures the kernels
# rather than the scheduler. Prints the bench's report.
#   tools/bench_pinned.sh [BINARY] [BENCH ARGS...]
#   tools/bench_pinned.sh target/release/tokenformer --synthetic 150m --backend gpu --dtype f16
# (BINARY defaults to the release build in cargo's target directory, as `cargo metadata` reports it.)
set -euo pipefail
bin=${1:-$(cargo metadata --format-version 1 --no-deps --manifest-path "$(dirname "$0")/../Cargo.toml" | sed 's/.*"target_directory":"\([^"]*\)".*/\1/')/release/tokenformer}
shift || true
out=$(mktemp)
"$bin" bench "$@" > "$out" 2>&1 &
pid=$!
# lavapipe starts its rasterizer threads (llvmpipe-N), then one compute thread per CPU, once the
# model is built (a synthetic 1.5B takes 10-20 s): wait up to two minutes.
cpus=$(nproc)
for _ in $(seq 1200); do
    [ "$(ls /proc/$pid/task 2> /dev/null | wc -l)" -gt $((2 * cpus)) ] && break
    sleep 0.1
done
pool=$(for t in $(ls /proc/$pid/task | sort -n); do echo "$t $(cat /proc/$pid/task/$t/comm 2> /dev/null)"; done |
    awk -v last="llvmpipe-$((cpus - 1))" '$2 == last {f = 1; next} f && $2 !~ /^llvmpipe|:/ {print $1}' | head -n "$cpus")
cpu=0
for tid in $pool; do
    taskset -p -c $cpu "$tid" > /dev/null && echo "pinned lavapipe compute thread $tid to CPU $cpu"
    cpu=$((cpu + 1))
done
[ "$cpu" -eq "$cpus" ] || echo "warning: found $cpu of $cpus compute threads to pin; the figures are unpinned" >&2
status=0
wait $pid || status=$?
cat "$out"
rm -f "$out"
exit $status
