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


class Cnn(nn.Module):
    def __init__(self, classes):
        super().__init__()
        def stage(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(True),
                                 nn.MaxPool2d(2, ceil_mode=True))
        self.stages = nn.ModuleList([stage(1, 32), stage(32, 64)])
        self.neck = nn.Sequential(nn.Flatten(), nn.Linear(64 * 49, 128), nn.ReLU(True), nn.Dropout(0.25))
        self.head = nn.Linear(128, classes)

    def features(self, x):
        for s in self.stages:
            x = s(x)
        return self.neck(x)

    def forward(self, x):
        return self.head(self.features(x))


class Block(nn.Module):
    def __init__(self, i, o, s):
        super().__init__()
        self.conv1 = nn.Conv2d(i, o, 3, s, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(o)
        self.conv2 = nn.Conv2d(o, o, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(o)
        self.downsample = None
        if s != 1 or i != o:
            self.downsample = nn.Sequential(nn.Conv2d(i, o, 1, s, bias=False), nn.BatchNorm2d(o))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + idt)


class ResNet(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.layer1 = nn.Sequential(Block(32, 32, 1))
        self.layer2 = nn.Sequential(Block(32, 64, 2))
        self.layer3 = nn.Sequential(Block(64, 128, 2))
        self.fc = nn.Linear(128, classes)

    def features(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x))).mean((2, 3))

    def forward(self, x):
        return self.fc(self.features(x))


class Mlp(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Dropout(0.1),
                                  nn.Linear(512, 256), nn.ReLU(), nn.Dropout(0.1))
        self.head = nn.Linear(256, classes)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x))


class Attn(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        a = torch.softmax((q * (c // self.heads) ** -0.5) @ k.transpose(-2, -1), -1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, n, c))


class VitMlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class VitBlock(nn.Module):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), Attn(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), VitMlp(dim, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim, p):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, p, p)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Vit(nn.Module):
    def __init__(self, classes, dim=64, depth=4, heads=4, patch=7):
        super().__init__()
        n = (28 // patch) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + n, dim))
        self.patch_embed = PatchEmbed(dim, patch)
        self.blocks = nn.ModuleList([VitBlock(dim, heads, dim * 2) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def features(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        for b in self.blocks:
            x = b(x)
        return self.norm(x)[:, 0]

    def forward(self, x):
        return self.head(self.features(x))


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
