"""Optimizer benchmark, PyTorch side: the same ~100M-parameter step as optim.lua, with
torch.optim's foreach implementation (the fast one on the CPU in 1.13) and, for
reference, the default single-tensor one. Prints "name<TAB>seconds per step" lines."""
import os
import time

import torch

threads = int(os.environ.get("BENCH_THREADS", "2"))
torch.set_num_threads(threads)
wall = time.perf_counter
LAYERS, D = 96, 1024
torch.manual_seed(0)
params = []
for i in range(LAYERS):
    for shape in ((D, D), (D,)):
        p = (torch.randn(*shape) * 0.02).requires_grad_()
        p.grad = torch.randn(*shape) * 0.01
        params.append(p)


def best_of(reps, fn):
    best = float("inf")
    for _ in range(reps):
        t0 = wall()
        fn()
        best = min(best, wall() - t0)
    return best


def report(name, secs):
    print("%s\t%.9g" % (name, secs), flush=True)


report("numel", sum(p.numel() for p in params))
for name, make in [
    ("sgd_momentum", lambda fe: torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=1e-4, foreach=fe)),
    ("adamw", lambda fe: torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, foreach=fe)),
]:
    for fe, suffix in ((True, ""), (False, "_single_tensor")):
        opt = make(fe)
        opt.step()
        opt.step()
        report(name + suffix, best_of(5, opt.step))
        del opt
