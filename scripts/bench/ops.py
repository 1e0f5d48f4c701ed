"""Foundation benchmark, PyTorch side: prints "name<TAB>seconds per call" lines with the
same names as ops.lua. Run through scripts/bench/run.sh."""
import os
import time

import torch

threads = int(os.environ.get("BENCH_THREADS", "2"))
torch.set_num_threads(threads)
wall = time.perf_counter


def best_of(reps, fn):
    best = float("inf")
    for _ in range(reps):
        t0 = wall()
        fn()
        best = min(best, wall() - t0)
    return best


def report(name, secs):
    print("%s\t%.9g" % (name, secs), flush=True)


a, b = torch.ones(4), torch.ones(4)
n = 1000000


def small():
    for _ in range(n):
        a + b


report("small_add_4", best_of(3, small) / n)

N = 16 * 1024 * 1024
a, b = torch.rand(N), torch.rand(N)
reps = 10
report("add_16M_fresh", best_of(reps, lambda: a + b))
report("mul_16M_fresh", best_of(reps, lambda: a * b))
report("exp_16M_fresh", best_of(reps, lambda: a.exp()))
c = a.clone()
report("add_16M_inplace", best_of(reps, lambda: c.add_(b)))
report("mul_16M_inplace", best_of(reps, lambda: c.mul_(b)))


def exp_inplace():
    c.copy_(a)
    c.exp_()


report("exp_16M_inplace", best_of(reps, exp_inplace))

for n in (256, 512, 1024, 2048):
    x, y = torch.randn(n, n), torch.randn(n, n)
    reps = 20 if n <= 512 else 5
    report("matmul_%d" % n, best_of(reps, lambda: x @ y))
