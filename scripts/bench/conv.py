"""conv2d micro-benchmark, PyTorch side: prints "name<TAB>seconds" lines with the same
names as conv.lua (which runs this script and prints the ratios). Forward alone (no
grad) and forward + backward (the gradients a training step needs: the first layer's
input needs none) at the Fashion-MNIST CNN's and resnet18's sizes."""
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


# name, input, weight, options, bias, input needs grad (keep in sync with conv.lua)
CASES = [
    ("cnn_conv1", (64, 1, 28, 28), (32, 1, 3, 3), {}, True, False),
    ("cnn_conv2", (64, 32, 13, 13), (64, 32, 3, 3), {}, True, True),
    ("r18_conv1", (4, 3, 224, 224), (64, 3, 7, 7), {"stride": 2, "padding": 3}, False, False),
    ("r18_layer1", (4, 64, 56, 56), (64, 64, 3, 3), {"padding": 1}, False, True),
    ("r18_layer3", (4, 256, 14, 14), (256, 256, 3, 3), {"padding": 1}, False, True),
    ("r18_down1x1", (4, 128, 28, 28), (256, 128, 1, 1), {"stride": 2}, False, True),
    ("r18_64_layer4", (8, 512, 2, 2), (512, 512, 3, 3), {"padding": 1}, False, True),
]

for name, xs, ws, kw, bias, xg in CASES:
    x = torch.randn(xs, requires_grad=xg)
    w = torch.randn(ws, requires_grad=True)
    b = torch.randn(ws[0], requires_grad=True) if bias else None

    def fwd():
        with torch.no_grad():
            F.conv2d(x, w, b, **kw)

    g = torch.ones_like(F.conv2d(x, w, b, **kw))

    def fwdbwd():
        x.grad = w.grad = None
        if b is not None:
            b.grad = None
        F.conv2d(x, w, b, **kw).backward(g)

    print("%s_fwd\t%.9g" % (name, best_of(REPS, fwd)), flush=True)
    print("%s_fwdbwd\t%.9g" % (name, best_of(REPS, fwdbwd)), flush=True)

# max_pool2d 2x2 at the CNN's sizes
x = torch.randn(64, 32, 26, 26, requires_grad=True)
g = torch.ones(64, 32, 13, 13)


def pool_fb():
    x.grad = None
    F.max_pool2d(x, 2).backward(g)


print("cnn_maxpool_fwdbwd\t%.9g" % best_of(REPS, pool_fb), flush=True)
