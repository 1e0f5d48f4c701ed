"""Fused functional kernels micro-benchmark, PyTorch side: prints "name<TAB>seconds"
lines with the same names as functional.lua (which runs this script and prints the
ratios). Forward + backward of softmax, log_softmax, layer_norm, batch_norm,
cross_entropy, gelu, relu and dropout at transformer and CNN sizes."""
import os
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
wall = time.perf_counter
REPS = int(os.environ.get("BENCH_REPS", "20"))


def best_of(reps, fn):
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = wall()
        fn()
        best = min(best, wall() - t0)
    return best


def case(name, fn, leaves, shape_in):
    """forward + backward of fn over the leaves with a random upstream gradient"""
    g = torch.randn(fn(*leaves).shape)

    def run():
        for t in leaves:
            t.grad = None
        fn(*leaves).backward(g)

    print("%s\t%.9g" % (name, best_of(REPS, run)), flush=True)


def R(*shape):
    return torch.randn(shape, requires_grad=True)


# keep in sync with functional.lua
attn = R(8, 4, 128, 128)
case("softmax_attn", lambda x: F.softmax(x, -1), [attn], None)
case("log_softmax_vocab", lambda x: F.log_softmax(x, -1), [R(256, 8192)], None)
case("layer_norm_1024x256", lambda x, w, b: F.layer_norm(x, (256,), w, b), [R(1024, 256), R(256), R(256)], None)
case("batch_norm_cnn", lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
     [R(64, 32, 26, 26), R(32), R(32)], None)
case("batch_norm_mlp", lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), [R(512, 256), R(256), R(256)],
     None)
t10 = torch.randint(0, 10, (512,))
case("cross_entropy_512x10", lambda x: F.cross_entropy(x, t10), [R(512, 10)], None)
t1k = torch.randint(0, 1000, (512,))
case("cross_entropy_512x1000", lambda x: F.cross_entropy(x, t1k, label_smoothing=0.1), [R(512, 1000)], None)
case("gelu_1M", lambda x: F.gelu(x), [R(1024, 1024)], None)
case("relu_1M", lambda x: F.relu(x), [R(1024, 1024)], None)
case("dropout_1M", lambda x: F.dropout(x, 0.1), [R(1024, 1024)], None)
