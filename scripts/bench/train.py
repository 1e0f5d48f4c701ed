"""Training-step benchmark, PyTorch side (issue 4): the same cases as train.lua, one per
process, with the same "key<TAB>value" output (step_ms, step_cpu_ms, fwd_ms and fwd_cpu_ms
for the frozen cases, gemm_ms for the MLP cases, rss_start_kb, rss_ready_kb, peak_kb). forward + backward + SGD step
(momentum 0.9), float32, CPU, torch.set_num_threads(BENCH_THREADS). The thread
configuration (OpenMP wait policy, OpenBLAS threads) comes from the environment that
train.sh sets.
    /usr/bin/python3 scripts/bench/train.py --case cnn [--steps 20] [--warmup 3]"""
import argparse
import os
import statistics
import time


def status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


ap = argparse.ArgumentParser()
ap.add_argument("--case", required=True)
ap.add_argument("--steps", type=int)
ap.add_argument("--warmup", type=int)
args = ap.parse_args()

import torch  # noqa: E402  (after argparse: a usage error should not pay for the import)
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
torch.manual_seed(0)
rss_start = status_kb("VmRSS")


def classifier(net, x, classes, frozen=False):
    return dict(net=net, x=x, y=torch.randint(0, classes, (x.shape[0],)), frozen=frozen)


def resnet(n, side, frozen):
    net = torchvision.models.resnet18(num_classes=10)
    net.train()
    if frozen:
        for name, p in net.named_parameters():
            if not name.startswith("fc."):
                p.requires_grad_(False)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
    return classifier(net, torch.randn(n, 3, side, side), 10, frozen)


def small_cnn():
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 10))


def mlp():
    nn = torch.nn
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


def transformer():
    net = torch.nn.TransformerEncoderLayer(256, 4, 1024, dropout=0.1, batch_first=True).train()
    return dict(net=net, x=torch.randn(8, 128, 256), g=torch.randn(8, 128, 256), frozen=False)


CASES = {
    "mlp64": lambda: classifier(mlp(), torch.randn(64, 784), 10),
    "mlp512": lambda: classifier(mlp(), torch.randn(512, 784), 10),
    "cnn": lambda: classifier(small_cnn(), torch.randn(64, 1, 28, 28), 10),
    "resnet64": lambda: resnet(8, 64, False),
    "resnet224": lambda: resnet(4, 224, False),
    "frozen64": lambda: resnet(8, 64, True),
    "frozen224": lambda: resnet(4, 224, True),
    "transformer": transformer,
}
c = CASES[args.case]()
net, x = c["net"], c["x"]
y, g = c.get("y"), c.get("g")
opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01, momentum=0.9)


def step():
    opt.zero_grad(set_to_none=True)
    out = net(x)
    if g is not None:
        out.backward(g)
    else:
        F.cross_entropy(out, y).backward()
    opt.step()


def forward():
    with torch.no_grad():
        net(x)


def median_ms(fn, warmup, steps):
    """Median wall and process CPU time (every thread's) of a step, in ms."""
    for _ in range(warmup):
        fn()
    t, c = [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        t.append((time.perf_counter() - t0) * 1e3)
        c.append((time.process_time() - c0) * 1e3)
    return statistics.median(t), statistics.median(c)


heavy = "224" in args.case
warmup = args.warmup if args.warmup is not None else (2 if heavy else 5)
steps = args.steps if args.steps is not None else (7 if heavy else (200 if args.case.startswith("mlp") else 15))
rss_ready = status_kb("VmRSS")
print("step_ms\t%.4f\nstep_cpu_ms\t%.4f" % median_ms(step, warmup, steps))
if c["frozen"]:
    print("fwd_ms\t%.4f\nfwd_cpu_ms\t%.4f" % median_ms(forward, warmup, steps))
print("rss_start_kb\t%d" % rss_start)
print("rss_ready_kb\t%d" % rss_ready)
print("peak_kb\t%d" % status_kb("VmHWM"))
if args.case.startswith("mlp"):
    # the step's largest product alone (x W1^T), as train.lua times it
    w1 = net[0].weight.detach()
    with torch.no_grad():
        print("gemm_ms\t%.4f" % median_ms(lambda: torch.mm(x, w1.t()), warmup, steps)[0])

