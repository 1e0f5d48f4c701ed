#!/usr/bin/env bash
# Packs what `make gpu-check` needs on a GPU machine that has the NVIDIA driver and
# python3 + PyTorch but none of graft's Debian packages (the lent H200): the CUDA build
# for sm_90 (built here: nvcc needs no GPU), the Lua 5.4 interpreter, busted and the
# shared libraries graft links (OpenBLAS, libgomp, libpng, libjpeg, Lua), into
# .gpu/runtime.tar.gz (ignored by git; about 22 MB). Then, on the device machine:
#   make gpu-check          (scripts/gpu/check.sh unpacks it when present)
# With the device tool: run(command="make gpu-check", carry=[".gpu"]).
set -euo pipefail
cd "$(dirname "$0")/../.."
make CUDA=1 build/graft.so build/graft >/dev/null
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib" "$stage/share/lua/5.4" "$stage/lib/lua/5.4" "$stage/build"
cp build/graft.so build/graft "$stage/build/"
strip --strip-debug "$stage/build/graft.so" "$stage/build/graft"
cp /usr/bin/lua5.4 /usr/bin/busted "$stage/bin/"
# the libraries graft and lua5.4 load, but the C library and the loader
for lib in $(ldd build/graft build/graft.so /usr/bin/lua5.4 | awk '/=> \//{print $3}' | sort -u); do
  case "$(basename "$lib")" in
    libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|ld-linux*) ;;
    *) cp -L "$lib" "$stage/lib/" ;;
  esac
done
for m in busted busted.lua cliargs cliargs.lua dkjson.lua luassert mediator.lua pl say system term; do
  cp -rL "/usr/share/lua/5.4/$m" "$stage/share/lua/5.4/"
done
cp -rL /usr/lib/x86_64-linux-gnu/lua/5.4/. "$stage/lib/lua/5.4/"
mkdir -p .gpu
tar -czf .gpu/runtime.tar.gz -C "$stage" .
echo "gpu-pack: .gpu/runtime.tar.gz ($(du -h .gpu/runtime.tar.gz | cut -f1)); run 'make gpu-check' on the GPU machine with .gpu carried"
