#!/usr/bin/env bash
# Optimizer benchmark: one step over ~100M float32 parameters (SGD with momentum and
# AdamW), graft against PyTorch 1.13 in one run, same thread count. Prints PyTorch's
# time over graft's (above 1: graft is faster) against torch.optim's foreach
# implementation, PyTorch's single-tensor time for reference, and the memory traffic
# graft's step reaches (each tensor read and written once: SGD moves 5 x 4 bytes per
# parameter, AdamW 7 x 4).
#   bash scripts/bench/optim.sh          (from the repo root, after make; ~4 GiB of memory)
set -euo pipefail
cd "$(dirname "$0")/../.."
export BENCH_THREADS=${BENCH_THREADS:-2}
PY=/usr/bin/python3
G=${GRAFT_BIN:-build/graft}
if ! $PY -c 'import torch' 2>/dev/null; then
  echo "optim bench: PyTorch is not installed (apt-get install python3-torch)" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "threads: $BENCH_THREADS; $(nproc) cores; torch $($PY -c 'import torch; print(torch.__version__)')"
$G scripts/bench/optim.lua > "$tmp/g.txt"
$PY scripts/bench/optim.py > "$tmp/p.txt"
lua5.4 - "$tmp/g.txt" "$tmp/p.txt" <<'LUA'
local function read(path)
  local t = {}
  for line in io.lines(path) do
    local k, v = line:match("^(%S+)\t(%S+)$")
    if k then t[k] = tonumber(v) end
  end
  return t
end
local g, p = read(arg[1]), read(arg[2])
local n = g.numel
print(("one optimizer step over %.1fM float32 parameters"):format(n / 1e6))
print(("%-14s %10s %16s %10s %22s %12s"):format("optimizer", "graft", "torch foreach", "speedup", "torch single-tensor",
  "graft GB/s"))
for _, c in ipairs({ { "sgd_momentum", 5 }, { "adamw", 7 } }) do
  local name, words = c[1], c[2]
  local gs, pf, ps = g[name], p[name], p[name .. "_single_tensor"]
  print(("%-14s %8.1f ms %13.1f ms %9.2fx %19.1f ms %12.1f"):format(name, gs * 1e3, pf * 1e3, pf / gs, ps * 1e3,
    n * 4 * words / gs / 1e9))
end
print("goal: >= 1x torch foreach")
LUA
