#!/usr/bin/env python3
"""Why xfer has a cosine head: probes on frozen self-supervised features, in PyTorch on a CPU.

Loads a base written by examples/simclr_gpu.py (xfer's `resnet` 64-128-256 x2, safetensors), embeds
the 5000 test images of Fashion-MNIST classes 5-9 once, and for 10 shots per class (seeds 0-2) fits
heads on the frozen pooled features:
  logreg-standardized  L-BFGS logistic regression on per-feature standardised features (the
                       probe of simclr_gpu.py's check)
  logreg-l2            the same on L2-normalised features (times 10, no standardisation)
  cosine-minibatch     a cosine head (scale 10, bias) trained like `xfer finetune --strategy
                       linear-probe --head-type cosine`: AdamW lr 0.1, weight decay 0.5, 100 steps
                       of batch 32 over crop-padding-2 views (24 per image, embedded once)
  linear-minibatch     a linear head trained the same way (lr 3e-3, weight decay 0.05)
The normalisation is the lever: it moves the L-BFGS probe by about 3 points. Exploration only; the
numbers that count are xfer's (examples/fewshot_fmnist.py).

Usage: examples/frozen_probe_cpu.py DATA_DIR BASE.safetensors   (about 3 minutes on 2 cores)
  prints one JSON line per probe (mean and per-seed test accuracy).
"""
import json, math, os, sys
import numpy as np, torch, torch.nn.functional as F

DATA, BASE = sys.argv[1], sys.argv[2]
sys.argv = [sys.argv[0], DATA, "0", "0"]
os.environ.setdefault("OUT", "/tmp/frozen_probe")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import simclr_gpu as sg  # noqa: E402

sg.SMOKE = False  # full data: simclr_gpu shrinks it on a CPU for its own smoke test
sg.Xtr, sg.Ytr = sg.ld("train")
Xte, Yte = sg.ld("t10k")
keep = Yte >= 5
Xt, Yt = Xte[keep], Yte[keep] - 5
enc = sg.ResNet((64, 128, 256), (2, 2, 2), out=512)
enc.load_state_dict(sg.load_safetensors(BASE), strict=True)
enc.eval()


@torch.no_grad()
def embed(x):
    return torch.cat([enc.features(sg.norm(x[i:i + 500])) for i in range(0, len(x), 500)])


def crop(x, g):  # xfer's --crop-padding 2: zero-pad by 2, random 28x28 window
    p = F.pad(x, (2, 2, 2, 2))
    o = torch.randint(0, 5, (len(x), 2), generator=g)
    return torch.stack([p[i, :, o[i, 0]:o[i, 0] + 28, o[i, 1]:o[i, 1] + 28] for i in range(len(x))])


def lbfgs(A, y, wd=0.1):
    W = torch.zeros(A.shape[1], 5, requires_grad=True)
    b = torch.zeros(5, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(A @ W + b, y) + wd * (W ** 2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return lambda Z: Z @ W + b


def minibatch(V, y, cosine, lr, wd, steps=100, bs=32, seed=0):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(V.shape[2], 5)
    opt = torch.optim.AdamW([{"params": [lin.weight], "weight_decay": wd},
                             {"params": [lin.bias], "weight_decay": 0.0}], lr=lr)

    def head(z):
        if cosine:
            return 10 * F.normalize(z, dim=1) @ F.normalize(lin.weight, dim=1).t() + lin.bias
        return lin(z)
    for t in range(steps):
        for grp in opt.param_groups:
            grp["lr"] = lr * (1 if t == 0 else 0.5 * (1 + math.cos(math.pi * (t - 1) / (steps - 1))))
        i = torch.randint(0, V.shape[1], (bs,))
        v = torch.randint(0, V.shape[0], (bs,))
        loss = F.cross_entropy(head(V[v, i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head


Ft = embed(Xt)
acc = {}
for seed in range(3):
    Xs, Ys = sg.shots(10, seed)
    Fs = embed(Xs)
    g = torch.Generator().manual_seed(seed)
    V = torch.stack([embed(crop(Xs, g)) for _ in range(24)])
    mu, sd = Fs.mean(0), Fs.std(0) + 1e-6
    probes = {
        "logreg-standardized": (lbfgs((Fs - mu) / sd, Ys, 1e-3), (Ft - mu) / sd),
        "logreg-l2": (lbfgs(10 * F.normalize(Fs, dim=1), Ys, 0.1), 10 * F.normalize(Ft, dim=1)),
        "cosine-minibatch": (minibatch(V, Ys, True, 0.1, 0.5, seed=seed), Ft),
        "linear-minibatch": (minibatch(V, Ys, False, 3e-3, 0.05, seed=seed), Ft),
    }
    for name, (head, Z) in probes.items():
        with torch.no_grad():
            acc.setdefault(name, []).append((head(Z).argmax(1) == Yt).float().mean().item())
for name, a in acc.items():
    print(json.dumps({"probe": name, "k": 10, "mean": float(np.mean(a)), "acc": a}), flush=True)
