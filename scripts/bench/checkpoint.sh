#!/usr/bin/env bash
# Checkpoint benchmark: graft against PyTorch 1.13 in one run, on a 1 GiB state dict of
# 256 float32 tensors of 1M elements. Saves it (torch.save -> .pth; graft.save ->
# .safetensors and .pth), then loads each file in fresh processes (page cache warm,
# best of 3): the time to a usable state dict, the time until every byte has been read
# (a sum over every tensor), against `cat FILE > /dev/null` as the floor, and the peak
# resident memory added by the load, relative to the file.
#   bash scripts/bench/checkpoint.sh     (from the repo root, after make; ~4 GiB in /tmp)
set -euo pipefail
cd "$(dirname "$0")/../.."
export BENCH_THREADS=${BENCH_THREADS:-2}
PY=/usr/bin/python3
G=build/graft
if ! $PY -c 'import torch' 2>/dev/null; then
  echo "checkpoint bench: PyTorch is not installed (apt-get install python3-torch)" >&2
  exit 1
fi
work=$(mktemp -d /tmp/graft-ckpt-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
avail_kb=$(df --output=avail -k "$work" | tail -1)
if [ "$avail_kb" -lt $((4 * 1024 * 1024)) ]; then
  echo "checkpoint bench: needs 4 GiB free in /tmp, has $((avail_kb / 1024)) MiB" >&2
  exit 1
fi
echo "threads: $BENCH_THREADS; $(nproc) cores; torch $($PY -c 'import torch; print(torch.__version__)'); files in $work"

$PY scripts/bench/checkpoint.py save "$work" > "$work/save_torch.txt"
$G scripts/bench/checkpoint.lua save "$work" > "$work/save_graft.txt"
# the disk's own rate as the floor for saving: 1 GiB by dd, synced as graft's save is
t0=$(date +%s%N)
dd if=/dev/zero of="$work/dd.bin" bs=4M count=256 conv=fsync status=none
t1=$(date +%s%N)
rm -f "$work/dd.bin"
awk -v ns=$((t1 - t0)) 'BEGIN { printf "dd_GBps\t%.9g\n", 1073741824 / (ns / 1e9) / 1e9 }' > "$work/save_dd.txt"

# best of n: runs "$@" n times, keeps the smallest value of each field
best_of() {
  local n=$1 out=$2
  shift 2
  : > "$out.all"
  for _ in $(seq "$n"); do "$@" >> "$out.all"; done
  awk -F'\t' '{ if (!($1 in m) || $2 < m[$1]) m[$1] = $2 } END { for (k in m) printf "%s\t%s\n", k, m[k] }' \
    "$out.all" > "$out"
}

cat_time() {
  local best=999999999999
  cat "$1" > /dev/null
  for _ in 1 2 3 4 5; do
    local t0 t1
    t0=$(date +%s%N); cat "$1" > /dev/null; t1=$(date +%s%N)
    [ $((t1 - t0)) -lt $best ] && best=$((t1 - t0))
  done
  awk -v ns="$best" 'BEGIN { printf "%.9g\n", ns / 1e9 }'
}

sync # no writeback of the saves left to compete with the loads
for f in torch.pth graft.safetensors graft.pth; do
  [ -f "$work/$f" ] || continue
  printf '%s\t%s\t%s\n' "$f" "$(stat -c %s "$work/$f")" "$(cat_time "$work/$f")" >> "$work/files.txt"
done

best_of 3 "$work/torch_load_torch.pth.txt" $PY scripts/bench/checkpoint.py load "$work/torch.pth"
if $G -e 'require("graft.checkpoint") os.exit(graft._pth_load and 0 or 1)'; then
  best_of 3 "$work/graft_load_torch.pth.txt" $G scripts/bench/checkpoint.lua load "$work/torch.pth"
fi
best_of 3 "$work/graft_load_graft.safetensors.txt" $G scripts/bench/checkpoint.lua load "$work/graft.safetensors"

lua5.4 - "$work" <<'LUA'
local dir = arg[1]
local function read(name)
  local t, f = {}, io.open(dir .. "/" .. name)
  if not f then return nil end
  for line in f:lines() do
    local k, v = line:match("^([^\t]+)\t(.*)$")
    if k then t[k] = tonumber(v) or v end
  end
  f:close()
  return t
end
local files = {}
for line in io.lines(dir .. "/files.txt") do
  local name, size, cat = line:match("^(%S+)\t(%S+)\t(%S+)$")
  files[name] = { size = tonumber(size), cat = tonumber(cat) }
end
local function ms(s) return ("%.1f ms"):format(s * 1e3) end
local torch = read("torch_load_torch.pth.txt")
print(("\n1 GiB state dict (256 x 1M float32); cat floor: torch.pth %s, graft.safetensors %s")
  :format(ms(files["torch.pth"].cat), ms(files["graft.safetensors"].cat)))
print(("%-34s %12s %14s %10s %12s %14s"):format("load", "usable", "+ every byte", "vs cat", "peak RSS", "vs torch.load"))
local rows = {
  { "torch.load(torch.pth)", torch, "torch.pth" },
  { "graft.load(torch.pth)", read("graft_load_torch.pth.txt"), "torch.pth" },
  { "graft.load(graft.safetensors)", read("graft_load_graft.safetensors.txt"), "graft.safetensors" },
}
for _, r in ipairs(rows) do
  local t, f = r[2], files[r[3]]
  if t then
    print(("%-34s %12s %14s %9.2fx %10.2fx %13.1fx"):format(r[1], ms(t.load_s), ms(t.load_read_s),
      t.load_read_s / f.cat, t.peak_rss_delta_bytes / f.size, torch.load_s / t.load_s))
  end
end
local st, sg, dd = read("save_torch.txt"), read("save_graft.txt"), read("save_dd.txt")
print(("\nsave (1 GiB; graft's includes fsync): torch.save .pth %.2f GB/s; graft.save .safetensors %.2f GB/s%s;"
  .. " disk floor (dd, fsync) %.2f GB/s")
  :format(st.save_pth_GBps, sg.save_safetensors_GBps,
    sg.save_pth_GBps and (", .pth %.2f GB/s"):format(sg.save_pth_GBps) or "", dd.dd_GBps))
print("goals: graft >= 10x torch.load to a usable state dict; <= 1.5x cat with every byte read;"
  .. " peak RSS <= 1.1x the file; save >= 1.1 GB/s")
LUA
