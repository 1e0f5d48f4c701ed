"""Transformer encoder layer benchmark, PyTorch side: prints "name<TAB>seconds" lines
with the same names as transformer.lua (which runs this script and prints the ratios).
One nn.TransformerEncoderLayer (d_model 256, 4 heads, feed-forward 1024, dropout 0.1,
relu, post-norm, batch_first) in training mode, batch 8, sequence 128: forward alone,
and forward + backward + an SGD step."""
import os
import time

import torch

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
wall = time.perf_counter
REPS = int(os.environ.get("BENCH_REPS", "20"))
B, T, D, H, FF = 8, 128, 256, 4, 1024


def best_of(reps, fn):
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = wall()
        fn()
        best = min(best, wall() - t0)
    return best


torch.manual_seed(0)
layer = torch.nn.TransformerEncoderLayer(D, H, FF, dropout=0.1, batch_first=True).train()
params = list(layer.parameters())
x = torch.randn(B, T, D)
g = torch.randn(B, T, D)


def fwd():
    with torch.no_grad():
        layer(x)


def step():
    for p in params:
        p.grad = None
    layer(x).backward(g)
    with torch.no_grad():
        for p in params:
            p.add_(p.grad, alpha=-1e-3)


print("encoder_fwd\t%.9g" % best_of(REPS, fwd), flush=True)
print("encoder_step\t%.9g" % best_of(REPS, step), flush=True)
