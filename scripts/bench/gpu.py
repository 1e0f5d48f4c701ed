# GPU benchmark, PyTorch side (issue 7): the same cases and output as gpu.lua.
# Runs under the device machine's PyTorch 2.x. GPU_BENCH_QUICK=1 shrinks every case.
import os
import sys
import time

import torch

quick = os.environ.get("GPU_BENCH_QUICK") == "1"
only = sys.argv[1] if len(sys.argv) > 1 else None
dev = "cuda"


def timed(iters, fn):
    for _ in range(1 if quick else 3):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters


def report(name, value, unit):
    print(f"{name}\t{value:.6g}\t{unit}", flush=True)


def want(name):
    return only is None or only in name


torch.manual_seed(0)
for n in ([64] if quick else [4096, 8192]):
    for dt in (torch.float32, torch.bfloat16):
        name = ("sgemm_" if dt == torch.float32 else "bf16gemm_") + str(n)
        if want(name):
            torch.backends.cuda.matmul.allow_tf32 = False
            a = torch.randn(n, n, device=dev).to(dt)
            b = torch.randn(n, n, device=dev).to(dt)
            s = timed(1 if quick else 20, lambda: torch.matmul(a, b))
            report(name, 2 * n ** 3 / s / 1e12, "TFLOP/s")
            del a, b

if want("resnet18"):
    import torchvision

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    batch, size = (2, 32) if quick else (64, 224)
    net = torchvision.models.resnet18(num_classes=1000).to(dev).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=dev)
    y = torch.randint(0, 1000, (batch,), device=dev)
    torch.cuda.reset_peak_memory_stats()

    def step():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()

    s = timed(1 if quick else 10, step)
    report("resnet18", batch / s, "images/s")
    report("resnet18_peak_mem", torch.cuda.max_memory_allocated() / 2 ** 20, "MiB")
    torch.backends.cuda.matmul.allow_tf32 = False

if want("adamw"):
    layers, d = (2, 64) if quick else (96, 1024)
    params = []
    for _ in range(layers):
        for shape in ((d, d), (d,)):
            p = (torch.randn(*shape, device=dev) * 0.02).requires_grad_()
            p.grad = torch.randn(*shape, device=dev) * 0.01
            params.append(p)
    best = None
    for kw in ({"foreach": True}, {"fused": True}):
        try:
            opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, **kw)
        except (TypeError, RuntimeError):
            continue
        s = timed(1 if quick else 20, opt.step)
        best = s if best is None else min(best, s)
    report("adamw_100m", best * 1e3, "ms")
