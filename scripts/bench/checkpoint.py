"""Checkpoint benchmark, PyTorch side (run through scripts/bench/checkpoint.sh). Prints
"name<TAB>value" lines with the same names as checkpoint.lua.
    python3 checkpoint.py save DIR    a 1 GiB state dict (256 x 1M float32) saved by
                                      torch.save as DIR/torch.pth: seconds
    python3 checkpoint.py load FILE   torch.load to a usable state dict, then the sum of
                                      every tensor (every byte read): seconds, peak RSS
"""
import os
import sys
import time
from collections import OrderedDict

import torch

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
wall = time.perf_counter
N_TENSORS, N_FLOATS = 256, 1024 * 1024


def report(name, v):
    print("%s\t%.9g" % (name, v), flush=True)


def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def main():
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "save":
        sd = OrderedDict(("layer%03d.weight" % (i + 1), torch.randn(N_FLOATS)) for i in range(N_TENSORS))
        t0 = wall()
        torch.save(sd, os.path.join(path, "torch.pth"))
        dt = wall() - t0
        report("save_pth_s", dt)
        report("save_pth_GBps", N_TENSORS * N_FLOATS * 4 / dt / 1e9)
    elif mode == "load":
        rss0 = status("VmRSS")
        t0 = wall()
        sd = torch.load(path)
        t1 = wall()
        total = 0.0
        for t in sd.values():
            total += float(t.sum())
        t2 = wall()
        assert len(sd) == N_TENSORS
        report("load_s", t1 - t0)
        report("read_s", t2 - t1)
        report("load_read_s", t2 - t0)
        report("peak_rss_delta_bytes", status("VmHWM") - rss0)
        report("rss_anon_bytes", status("RssAnon"))
        report("checksum", total)
    else:
        sys.exit("usage: checkpoint.py save DIR | load FILE")


if __name__ == "__main__":
    main()
