#!/usr/bin/env bash
# make gpu-check: on a machine with an NVIDIA GPU, runs spec/cuda against the real
# device and the GPU benchmark (graft, then PyTorch on the same GPU), and prints a short
# table last. Uses the packed runtime (.gpu/runtime.tar.gz, from `make gpu-pack`) when
# present, else the local build (make CUDA=1 first). Bounded to ~5 minutes:
# specs 120 s, each benchmark side 75 s (under 5 minutes in all). Writes logs to $OUT when set (the device tool).
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-$(mktemp -d)}
if [ -f .gpu/runtime.tar.gz ]; then
  rt=/tmp/graft-gpu-runtime
  rm -rf "$rt" && mkdir -p "$rt" && tar -xzf .gpu/runtime.tar.gz -C "$rt"
  export PATH="$rt/bin:$PATH" LD_LIBRARY_PATH="$rt/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export LUA_PATH="$rt/share/lua/5.4/?.lua;$rt/share/lua/5.4/?/init.lua;./?.lua;./?/init.lua"
  export LUA_CPATH="$rt/lib/lua/5.4/?.so"
  build="$rt/build"
else
  build=build
  [ -f build/graft.so ] || make CUDA=1 build/graft.so build/graft
fi
# PyTorch's cuDNN and cuBLAS (the nvidia-cudnn / nvidia-cublas wheels) for graft's
# dlopen when the system has none: their lib folders go on the loader's path, quietly.
for m in cudnn cublas; do
  d=$(python3 -c "import nvidia.$m as m, os; f = getattr(m, \"__file__\", None); print(os.path.dirname(f) if f else list(m.__path__)[0])" 2>/dev/null) || continue
  [ -n "$d" ] && [ -d "$d/lib" ] && export LD_LIBRARY_PATH="$d/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
LUA="lua5.4 -e package.cpath=\"$build/?.so;\"..package.cpath"
echo "== device"
nvidia-smi -L 2>&1 | head -4
$LUA -e 'local g = require("graft"); print("graft " .. g.version .. ", backend " .. g.cuda.backend() ..
  ", available " .. tostring(g.cuda.is_available()) .. ", devices " .. g.cuda.device_count() ..
  (g.cuda.is_available() and (", " .. g.cuda.get_device_name()) or "") ..
  ", cudnn " .. tostring(g.backends.cudnn.version() or ("unavailable: " .. g.backends.cudnn._why())))' 2>&1

echo "== spec/cuda on the GPU"
# launches block during the specs, so an illegal address is reported at the op that made it
CUDA_LAUNCH_BLOCKING=1 timeout 120 lua5.4 "$(command -v busted)" --cpath="$build/?.so" -o utfTerminal spec/cuda 2>&1 | tee "$out/gpu_specs.log" | tail -40
spec_summary=$(grep -E '^[0-9]+ success' "$out/gpu_specs.log" | tail -1)

echo "== benchmark"
timeout 75 $LUA scripts/bench/gpu.lua 2>&1 | tee "$out/gpu_graft.txt"
timeout 75 python3 scripts/bench/gpu.py 2>&1 | tee "$out/gpu_torch.txt"

echo
echo "== gpu-check summary"
echo "specs: ${spec_summary:-none (see $out/gpu_specs.log)}"
printf '%-18s %14s %14s %8s  %s\n' case graft pytorch ratio unit
awk -F'\t' 'NF != 3 { next } FNR == NR { g[$1] = $2; u[$1] = $3; order[++n] = $1; next } { t[$1] = $2 }
  END { for (i = 1; i <= n; i++) { k = order[i]; r = "";
          if (k in t && t[k] > 0) r = (u[k] == "ms" ? t[k] / g[k] : g[k] / t[k]);
          printf "%-18s %14.4g %14s %8s  %s\n", k, g[k], (k in t ? t[k] : "-"), (r == "" ? "-" : sprintf("%.3f", r)), u[k] } }' \
  "$out/gpu_graft.txt" "$out/gpu_torch.txt" 2>/dev/null
echo "(ratio > 1: graft faster; for ms lower is better and the ratio is torch/graft)"
