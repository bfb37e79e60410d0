"""PyTorch reference for bench/attack_throughput.cpp: the same small models
with xfer's module names (so xfer's model.safetensors loads strictly: the same
weights), and the same update rules (FGSM/BIM/PGD/MI/NI/VMI/VNI with DI, TI, SI,
Admix) driven by the options xfer resolved for the attack (OPTIONS.json).

Usage: attack_throughput.py MODEL_DIR OPTIONS.json [--batch B] [--reps R] [--threads T]
Prints one JSON line like the C++ side. Standard library + torch only; the
safetensors file is parsed by hand (no pickle).
"""
import json
import math
import os
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from models import Cnn, Mlp, ResNet, Vit

DTYPES = {"F32": torch.float32, "I64": torch.int64, "F64": torch.float64}


def read_safetensors(path):
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        buf = bytearray(data[8 + n + a:8 + n + b])
        out[k] = torch.frombuffer(buf, dtype=DTYPES[v["dtype"]]).reshape(v["shape"]).clone()
    return out


class Normalized(nn.Module):
    def __init__(self, net, mean, std):
        super().__init__()
        self.net = net
        self.register_buffer("m", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("s", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return self.net((x - self.m) / self.s)


def gaussian(k):
    x = torch.linspace(-3, 3, k, dtype=torch.float64)
    k1 = torch.exp(-0.5 * x * x)
    k2 = torch.outer(k1, k1)
    return (k2 / k2.sum()).float()


def attack(model, x, y, o):
    eps, steps, linf = o["eps"], o["steps"], o["norm"] == "linf"
    alpha, mu = o["alpha"], o["momentum"]

    def proj(d):
        if linf:
            return d.clamp(-eps, eps)
        n = d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return d * (eps / n).clamp(max=1.0)

    def direction(g):
        return g.sign() if linf else g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)

    kernel = None
    if o["ti_kernel"] != 0:
        k = o["ti_kernel"] if o["ti_kernel"] > 0 else max(3, (lambda v: v + 1 - v % 2)(round(15 * x.shape[2] / 224)))
        kernel = gaussian(k).expand(x.shape[1], 1, k, k)
    f0 = model.net.features((x - model.m) / model.s).detach() if o["feature"] else None

    def di(t):
        if torch.rand(1).item() >= o["di_prob"]:
            return t
        h = t.shape[2]
        big = max(h + 1, int(math.floor(h * o["di_ratio"])))
        rnd = int(torch.randint(h, big, (1,)))
        r = F.interpolate(t, size=(rnd, rnd), mode="nearest")
        rem = big - rnd
        top, left = int(torch.randint(0, rem + 1, (1,))), int(torch.randint(0, rem + 1, (1,)))
        return F.interpolate(F.pad(r, (left, rem - left, top, rem - top)), size=(h, h), mode="bilinear",
                             align_corners=False)

    def grad(point):
        xv = point.detach().requires_grad_(True)
        copies = [xv]
        if o["admix_copies"] > 0:
            copies = [xv + o["admix_eta"] * x[torch.randperm(x.shape[0])] for _ in range(o["admix_copies"])]
        if o["si_copies"] > 1:
            copies = [c / 2 ** i for c in copies for i in range(o["si_copies"])]
        if o["di_prob"] > 0:
            copies = [di(c) for c in copies]
        k = len(copies)
        batch = torch.cat(copies)
        if o["feature"]:
            loss = (model.net.features((batch - model.m) / model.s) - f0.repeat(k, 1)).pow(2).sum()
        else:
            loss = F.cross_entropy(model(batch), y.repeat(k), reduction="sum")
        g, = torch.autograd.grad(loss / k, [xv])
        if kernel is not None:
            g = F.conv2d(g, kernel, padding=kernel.shape[-1] // 2, groups=x.shape[1])
        return g

    delta = torch.zeros_like(x)
    if o["random_start"]:
        delta = proj(torch.empty_like(x).uniform_(-eps, eps) if linf else torch.randn_like(x) * eps / 10)
    delta = (x + delta).clamp(0, 1) - x
    m = torch.zeros_like(x)
    v = torch.zeros_like(x)
    for _ in range(steps):
        xa = x + delta
        g_raw = grad(xa + alpha * mu * m if o["nesterov"] else xa)
        g = g_raw + v
        if mu > 0:
            m = mu * m + g / g.abs().mean((1, 2, 3), keepdim=True).clamp_min(1e-12)
            g = m
        if o["variance_samples"] > 0:
            r = o["variance_beta"] * eps
            s = sum(grad(xa + torch.empty_like(xa).uniform_(-r, r)) for _ in range(o["variance_samples"]))
            v = s / o["variance_samples"] - g_raw
        delta = proj(delta + alpha * direction(g))
        delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def main():
    model_dir, options_path = sys.argv[1], sys.argv[2]
    args = dict(zip(sys.argv[3::2], sys.argv[4::2]))
    batch, reps = int(args.get("--batch", 64)), int(args.get("--reps", 3))
    threads = int(args.get("--threads", 0)) or os.cpu_count()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    o = json.load(open(options_path))
    net = {"cnn": Cnn, "resnet": ResNet, "mlp": Mlp, "vit": Vit}[cfg["arch"]](cfg["num_classes"])
    net.load_state_dict(read_safetensors(os.path.join(model_dir, "model.safetensors")), strict=True)
    model = Normalized(net, cfg["mean"], cfg["std"]).eval()
    x, y = torch.rand(batch, 1, 28, 28), torch.randint(0, cfg["num_classes"], (batch,))
    attack(model, x[:8], y[:8], o)  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        attack(model, x, y, o)
        times.append(time.perf_counter() - t0)
    best = sorted(times)[len(times) // 2]
    print(json.dumps({"impl": "pytorch", "arch": cfg["arch"], "attack": os.path.basename(options_path)[:-5],
                      "images_per_second": batch / best, "threads": threads, "batch": batch}))


if __name__ == "__main__":
    main()
