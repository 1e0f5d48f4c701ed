#!/usr/bin/env bash
# Training-step benchmark (issue 4): graft against PyTorch 1.13 on the CPU in one run,
# float32, BENCH_THREADS threads each (2). Each case is forward + backward + an SGD step
# (momentum 0.9): (a) MLP 784-256-10 at batch 64 and 512, (b) the small Fashion-MNIST CNN
# at batch 64, (c) resnet18 at 8x3x64x64 and 4x3x224x224, (d) resnet18 with everything
# but fc frozen (BatchNorm in eval), with the ratio of a step to a no_grad forward,
# (e) one transformer encoder layer (d 256, 4 heads, MLP 1024, seq 128, batch 8).
# Every (case, side, configuration) runs in its own process: the median of its timed
# steps after a warm-up, and its peak resident memory (VmHWM). PyTorch runs as shipped,
# with OMP_WAIT_POLICY=passive and with OpenBLAS at one thread (the best of the three
# is the reference); graft runs as shipped and with OMP_WAIT_POLICY=passive (one setting
# for every case, no per-model tuning: the better of the two over all cases is used).
# The MLP cases also print a roofline: the step's multiply-adds against the machine's peak
# float32 FMA rate, measured in the run by scripts/bench/peak.c (built with cc).
# Rounds: ROUNDS=n (1) repeats every run and keeps the fastest per configuration,
# CASES="cnn mlp64" runs a subset.
#   bash scripts/bench/train.sh          (from the repo root, after make)
set -euo pipefail
cd "$(dirname "$0")/../.."
export BENCH_THREADS=${BENCH_THREADS:-2}
PY=/usr/bin/python3
CASES=${CASES:-"mlp64 mlp512 cnn resnet64 resnet224 frozen64 frozen224 transformer"}
ROUNDS=${ROUNDS:-1}
if [ -n "${GRAFT_BIN:-}" ]; then
  G=("$GRAFT_BIN")
elif [ -x build/graft ]; then
  G=(build/graft)
else # the Lua module under stock lua5.4
  G=(lua5.4 -e 'package.cpath="build/?.so;"..package.cpath')
fi
if ! $PY -c 'import torch, torchvision' 2>/dev/null; then
  echo "train bench: PyTorch and torchvision are needed (apt-get install python3-torch python3-torchvision)" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "threads: $BENCH_THREADS; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg);" \
  "torch $($PY -c 'import torch; print(torch.__version__)'); graft: ${G[*]}"

# run SIDE CONFIG CASE CMD...: runs CMD --case CASE, appends "case<TAB>side/config<TAB>key<TAB>value"
run() {
  local side=$1 config=$2 case=$3
  shift 3
  "$@" --case "$case" | awk -v s="$side" -v c="$config" -v k="$case" -F'\t' '{ print k "\t" s "/" c "\t" $1 "\t" $2 }' \
    >> "$tmp/all.txt"
}
for _ in $(seq "$ROUNDS"); do
  for c in $CASES; do
    printf '.' >&2
    run graft shipped "$c" "${G[@]}" scripts/bench/train.lua
    run graft passive "$c" env OMP_WAIT_POLICY=passive "${G[@]}" scripts/bench/train.lua
    run torch shipped "$c" $PY scripts/bench/train.py
    run torch passive "$c" env OMP_WAIT_POLICY=passive $PY scripts/bench/train.py
    run torch blas1 "$c" env OPENBLAS_NUM_THREADS=1 $PY scripts/bench/train.py
  done
  # the machine's peak float32 multiply-add rate on the same threads (the roofline)
  if [ -x "$tmp/peak" ] || ${CC:-cc} -O2 -march=native -fopenmp scripts/bench/peak.c -o "$tmp/peak" 2>/dev/null; then
    OMP_NUM_THREADS=$BENCH_THREADS "$tmp/peak" | awk -F'\t' '{ print "peak\tmachine\t" $1 "\t" (-$2) }' >> "$tmp/all.txt"
  fi
done
echo >&2

lua5.4 - "$tmp/all.txt" "$CASES" <<'LUA'
-- v[case][side/config][key] = the smallest value over the rounds
local v = {}
for line in io.lines(arg[1]) do
  local c, cfg, k, x = line:match("^(%S+)\t(%S+)\t(%S+)\t(%S+)$")
  if c then
    v[c] = v[c] or {}
    v[c][cfg] = v[c][cfg] or {}
    local old = v[c][cfg][k]
    x = tonumber(x)
    if not old or x < old then v[c][cfg][k] = x end
  end
end
local cases = {}
for c in arg[2]:gmatch("%S+") do cases[#cases + 1] = c end
-- graft's one setting for every case: the smaller total of step times
local tot = { shipped = 0, passive = 0 }
for _, c in ipairs(cases) do
  for k in pairs(tot) do tot[k] = tot[k] + v[c]["graft/" .. k].step_ms end
end
local gcfg = tot.passive < tot.shipped and "passive" or "shipped"
local LABEL = {
  mlp64 = "(a) MLP 784-256-10, batch 64", mlp512 = "(a) MLP 784-256-10, batch 512",
  cnn = "(b) small CNN, 64x1x28x28", resnet64 = "(c) resnet18, 8x3x64x64", resnet224 = "(c) resnet18, 4x3x224x224",
  frozen64 = "(d) resnet18 frozen, 8x3x64x64", frozen224 = "(d) resnet18 frozen, 4x3x224x224",
  transformer = "(e) encoder layer, 8x128x256",
}
local GOAL = { mlp64 = 1.5, mlp512 = 1.5, cnn = 1.4, resnet64 = 0.9, resnet224 = 0.9, transformer = 0.9 }
local function mib(kb) return ("%.0f"):format(kb / 1024) end
local TORCH = { "shipped", "passive", "blas1" }
print(("\nms per step (median of each run, best of the rounds), forward + backward + SGD step; graft with"
  .. " %s for every case;\nPyTorch in its best configuration per case; ratio = graft steps/s / PyTorch steps/s"
  .. " (above 1: graft is faster)"):format(gcfg == "passive" and "OMP_WAIT_POLICY=passive" or "its defaults"))
print(("%-33s %9s %9s %-7s %6s %5s | %9s %9s %6s | %11s %11s"):format("case", "graft", "torch", "(cfg)", "ratio",
  "goal", "graft cpu", "torch cpu", "ratio", "peak MiB", "step MiB"))
local frozen = {}
for _, c in ipairs(cases) do
  local r = v[c]
  local g = r["graft/" .. gcfg]
  local best, bname = math.huge, "?"
  for _, cfg in ipairs(TORCH) do
    if r["torch/" .. cfg].step_ms < best then best, bname = r["torch/" .. cfg].step_ms, cfg end
  end
  local t = r["torch/" .. bname]
  print(("%-33s %9.2f %9.2f %-7s %5.2fx %5s | %9.2f %9.2f %5.2fx | %5s/%-5s %5s/%-5s"):format(LABEL[c] or c,
    g.step_ms, best, bname, best / g.step_ms, GOAL[c] and ("%.1fx"):format(GOAL[c]) or "",
    g.step_cpu_ms, t.step_cpu_ms, t.step_cpu_ms / g.step_cpu_ms,
    mib(g.peak_kb), mib(t.peak_kb), mib(g.peak_kb - g.rss_ready_kb), mib(t.peak_kb - t.rss_ready_kb)))
  if g.fwd_ms then frozen[#frozen + 1] = { c, g, t } end
end
if #frozen > 0 then
  print("\n(d) frozen backbone: a step over a no_grad forward alone (goal <= 1.1)")
  for _, f in ipairs(frozen) do
    local c, g, t = f[1], f[2], f[3]
    print(("%-33s graft %.2f ms / %.2f ms = %.2f (cpu %.2f)   torch %.2f ms / %.2f ms = %.2f"):format(LABEL[c] or c,
      g.step_ms, g.fwd_ms, g.step_ms / g.fwd_ms, g.step_cpu_ms / g.fwd_cpu_ms, t.step_ms, t.fwd_ms, t.step_ms / t.fwd_ms))
  end
end
-- Roofline for the MLP cases: nearly all of their work is multiply-adds, so the step
-- can be no faster than its FLOPs at the machine's peak FMA rate (kept negated above,
-- so that "smallest" is the best round).
local peak = v.peak and v.peak.machine and -v.peak.machine.peak_gflops
local mlps = {}
for _, c in ipairs(cases) do
  if v[c]["graft/" .. gcfg].step_mflop then mlps[#mlps + 1] = c end
end
if peak and #mlps > 0 then
  print(("\nroofline: this machine's peak float32 multiply-add rate on %d threads, measured in this run"
    .. " (scripts/bench/peak.c): %.0f GFLOP/s"):format(tonumber(os.getenv("BENCH_THREADS")) or 2, peak))
  print(("%-33s %6s %8s | %-15s %-15s | %-8s %-14s | %s"):format("case", "MFLOP", "floor ms", "graft (of peak)",
    "torch (of peak)", "ceiling", "goal needs", "x W1^T alone: graft / torch GFLOP/s"))
  for _, c in ipairs(mlps) do
    local r, g = v[c], v[c]["graft/" .. gcfg]
    local best = math.huge
    for _, cfg in ipairs(TORCH) do best = math.min(best, r["torch/" .. cfg].step_ms) end
    local gemm_t = math.huge
    for _, cfg in ipairs(TORCH) do gemm_t = math.min(gemm_t, r["torch/" .. cfg].gemm_ms or math.huge) end
    local floor = g.step_mflop / peak -- ms
    local pct = function(ms) return ("%.2f (%2.0f%%)"):format(ms, 100 * floor / ms) end
    local goal = GOAL[c] or 1
    print(("%-33s %6.0f %8.2f | %-15s %-15s | %6.2fx  %3.0f%% of peak | %.0f (%.0f%%) / %.0f (%.0f%%)"):format(
      LABEL[c] or c, g.step_mflop, floor, pct(g.step_ms), pct(best), best / floor, 100 * floor * goal / best,
      g.gemm_mflop / g.gemm_ms, 100 * g.gemm_mflop / g.gemm_ms / peak, g.gemm_mflop / gemm_t,
      100 * g.gemm_mflop / gemm_t / peak))
  end
  print("floor: the step's multiply-adds at the peak rate; ceiling: the best ratio any implementation could"
    .. " reach\nagainst this PyTorch time; goal needs: the share of peak the whole step must run at for the goal.")
end
print("\nevery configuration, ms per step (wall):")
print(("%-33s %13s %13s | %13s %13s %13s"):format("case", "graft default", "graft passive", "torch default",
  "torch passive", "torch blas1"))
for _, c in ipairs(cases) do
  local r = v[c]
  print(("%-33s %13.2f %13.2f | %13.2f %13.2f %13.2f"):format(LABEL[c] or c, r["graft/shipped"].step_ms,
    r["graft/passive"].step_ms, r["torch/shipped"].step_ms, r["torch/passive"].step_ms, r["torch/blas1"].step_ms))
end
print("\ncpu: process CPU time per step (every thread). peak MiB: VmHWM of the process (PyTorch's includes"
  .. " ~265 MiB\nfor importing torch); step MiB: VmHWM minus the RSS once model, data and optimizer are built."
  .. " Each pair: graft/torch.")
LUA
