#!/usr/bin/env bash
# Runs graft and PyTorch side by side on the same machine, in one run, with the same
# thread count, and prints ratios (torch time / graft time: above 1 means graft is
# faster). Absolute times vary from run to run on these machines; the ratios are the
# figures to record.
#   bash scripts/bench/run.sh            (from the repo root, after make)
set -euo pipefail
cd "$(dirname "$0")/../.."
export BENCH_THREADS=${BENCH_THREADS:-2}
PY=/usr/bin/python3
if ! $PY -c 'import torch' 2>/dev/null; then
  echo "bench: PyTorch is not installed (apt-get install python3-torch); installing"
  apt-get install -y -qq python3-torch >/dev/null
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "threads: $BENCH_THREADS; $(nproc) cores; torch $($PY -c 'import torch; print(torch.__version__)')"

build/graft scripts/bench/ops.lua > "$tmp/g.txt"
$PY scripts/bench/ops.py > "$tmp/p.txt"

# (4) process start: graft -e '' against python3 -c 'import torch', best of 10 each
start_time() {
  local best=999999999
  for _ in $(seq 10); do
    local t0 t1
    t0=$(date +%s%N); "$@" >/dev/null 2>&1; t1=$(date +%s%N)
    local dt=$(( t1 - t0 ))
    [ $dt -lt $best ] && best=$dt
  done
  echo "$best"
}
g_ns=$(start_time build/graft -e '')
p_ns=$(start_time $PY -c 'import torch')
printf 'process_start\t%s\n' "$(echo "$g_ns" | awk '{printf "%.9g", $1/1e9}')" >> "$tmp/g.txt"
printf 'process_start\t%s\n' "$(echo "$p_ns" | awk '{printf "%.9g", $1/1e9}')" >> "$tmp/p.txt"

lua5.4 scripts/bench/compare.lua "$tmp/g.txt" "$tmp/p.txt" "foundation ops: graft vs PyTorch (CPU)"
