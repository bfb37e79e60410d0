#!/usr/bin/env python3
"""Why xfer has a cosine head, and where this base's ceiling is: probes on frozen features, on a CPU.

Loads a base written by examples/simclr_gpu.py (xfer's `resnet`, any widths/blocks, safetensors), embeds
the 5000 test images of Fashion-MNIST classes 5-9 once, and for 10 shots per class (seeds 0-2, the
very images of `xfer finetune --shots 10 --seed S`: simclr_gpu.xfer_shots) fits heads on the frozen
pooled features:
  logreg-standardized  L-BFGS logistic regression on per-feature standardised features (the
                       probe of simclr_gpu.py's check)
  logreg-l2            the same on L2-normalised features (times 10, no standardisation)
  logreg-l2-2stages    the same on the pooled outputs of the last two stages, each L2-normalised and
                       concatenated (intermediate features, as Head2Toe; Evci et al. 2022)
  cosine-minibatch     a cosine head (scale 10, bias) trained like `xfer finetune --strategy
                       linear-probe --head-type cosine`: AdamW lr 0.1, weight decay 0.5, 100 steps
                       of batch 32 over crop-padding-2 views (24 per image, embedded once)
  linear-minibatch     a linear head trained the same way (lr 3e-3, weight decay 0.05)
With --finetune also
  finetune-from-logreg the logreg-l2 head, then every weight fine-tuned together: AdamW lr 1e-4
                       (cosine decay), 100 steps of batch 32, crop-padding 2, BatchNorm in eval
                       mode (about 5 more minutes)
The normalisation is the lever: it moves the L-BFGS probe by about 3 points. Exploration only; the
numbers that count are xfer's (examples/fewshot_fmnist.py).

Usage: examples/frozen_probe_cpu.py DATA_DIR BASE.safetensors [--finetune]   (3 minutes on 2 cores)
  prints one JSON line per probe (mean and per-seed test accuracy).
"""
import json, math, os, sys
import numpy as np, torch, torch.nn.functional as F

DATA, BASE = sys.argv[1], sys.argv[2]
FINETUNE = "--finetune" in sys.argv[3:]
sys.argv = [sys.argv[0], DATA, "0", "0"]
os.environ.setdefault("OUT", "/tmp/frozen_probe")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import simclr_gpu as sg  # noqa: E402

sg.SMOKE = False  # full data: simclr_gpu shrinks it on a CPU for its own smoke test
sg.Xtr, sg.Ytr = sg.ld("train")
Xte, Yte = sg.ld("t10k")
keep = Yte >= 5
Xt, Yt = Xte[keep], Yte[keep] - 5
sd = sg.load_safetensors(BASE)
widths, blocks, out = sg.resnet_shape(sd)  # simclr_gpu.py widths=/blocks= write other shapes
nstages = len(widths)
enc = sg.ResNet(widths, blocks, out=out)
enc.load_state_dict(sd, strict=True)
enc.eval()


@torch.no_grad()
def pooled(x):  # (the pooled outputs of the last two stages; the last one is enc.features)
    out2, out3 = [], []
    for i in range(0, len(x), 500):
        h = F.relu(enc.bn1(enc.conv1(sg.norm(x[i:i + 500]))))
        for j in range(1, nstages):
            h = getattr(enc, f"layer{j}")(h)
        out2.append(h.mean((2, 3)))
        out3.append(getattr(enc, f"layer{nstages}")(h).mean((2, 3)))
    return torch.cat(out2), torch.cat(out3)


def embed(x):
    return pooled(x)[1]


def two_stages(p):  # each stage's pooled features L2-normalised, then concatenated
    return torch.cat([F.normalize(p[0], dim=1), F.normalize(p[1], dim=1)], 1)


def crop(x, g):  # xfer's --crop-padding 2: zero-pad by 2, random 28x28 window
    p = F.pad(x, (2, 2, 2, 2))
    o = torch.randint(0, 5, (len(x), 2), generator=g)
    return torch.stack([p[i, :, o[i, 0]:o[i, 0] + 28, o[i, 1]:o[i, 1] + 28] for i in range(len(x))])


def linear(Wb, Z):
    return Z @ Wb[0] + Wb[1]


def finetune(Xs, Ys, W, b, seed, lr=1e-4, steps=100, bs=32):
    # everything trains from the probe's head; the encoder is restored afterwards
    import copy
    saved = copy.deepcopy(enc.state_dict())
    W, b = W.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    opt = torch.optim.AdamW([{"params": list(enc.parameters()) + [W, b]}], lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    enc.eval()  # BatchNorm keeps the pre-trained statistics
    for t in range(steps):
        for grp in opt.param_groups:
            grp["lr"] = lr * 0.5 * (1 + math.cos(math.pi * t / steps))
        i = torch.randint(0, len(Xs), (bs,), generator=g)
        z = 10 * F.normalize(enc.features(sg.norm(crop(Xs[i], g))), dim=1)
        loss = F.cross_entropy(z @ W + b, Ys[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = ((10 * F.normalize(embed(Xt), dim=1) @ W + b).argmax(1) == Yt).float().mean().item()
    enc.load_state_dict(saved)
    return acc


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


Pt = pooled(Xt)
Ft = Pt[1]
acc = {}
for seed in range(3):
    Xs, Ys = sg.shots(10, seed)
    Ps = pooled(Xs)
    Fs = Ps[1]
    g = torch.Generator().manual_seed(seed)
    V = torch.stack([embed(crop(Xs, g)) for _ in range(24)])
    mu, sd = Fs.mean(0), Fs.std(0) + 1e-6
    l2 = sg.fit_logreg(10 * F.normalize(Fs, dim=1), Ys, 0.1)  # (W, b), also --finetune's start
    logits = {
        "logreg-standardized": linear(sg.fit_logreg((Fs - mu) / sd, Ys, 1e-3), (Ft - mu) / sd),
        "logreg-l2": linear(l2, 10 * F.normalize(Ft, dim=1)),
        "logreg-l2-2stages": linear(sg.fit_logreg(10 * F.normalize(two_stages(Ps), dim=1), Ys, 0.3),
                                    10 * F.normalize(two_stages(Pt), dim=1)),
        "cosine-minibatch": minibatch(V, Ys, True, 0.1, 0.5, seed=seed)(Ft),
        "linear-minibatch": minibatch(V, Ys, False, 3e-3, 0.05, seed=seed)(Ft),
    }
    for name, z in logits.items():
        acc.setdefault(name, []).append((z.argmax(1) == Yt).float().mean().item())
    if FINETUNE:
        acc.setdefault("finetune-from-logreg", []).append(finetune(Xs, Ys, *l2, seed))
for name, a in acc.items():
    print(json.dumps({"probe": name, "k": 10, "mean": float(np.mean(a)), "acc": a}), flush=True)
