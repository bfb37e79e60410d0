#!/usr/bin/env python3
"""A public self-supervised base for the few-shot experiment, pre-trained on a GPU.

SimCLR on the 60 000 unlabelled Fashion-MNIST training images (no label is read)
for xfer's `resnet` (widths 64-128-256, two blocks per stage) or `cnn`, with
exactly xfer's module names, written as a safetensors state dict that
`xfer finetune --weights FILE --arch resnet --arch-options ... --mean M --std S`
imports (the head is the first layer of the projector; fine-tuning replaces it).
The views are those of `xfer train --objective simclr` (random resized crop,
flip, contrast/brightness jitter); unlike xfer's own SimCLR the projector is an
MLP (head, ReLU, linear), as in the SimCLR paper. On one H200: 12 ms per step of
512 images (1024 views), 203 epochs in 295 s.

Afterwards it runs a quick PyTorch-only check on classes 5-9 (logistic regression
on frozen features at 10 and 100 shots, fine-tuning and scratch at 10 shots); the
numbers that count are xfer's: examples/fewshot_fmnist.py --base-weights FILE.

Usage: examples/simclr_gpu.py DATA_DIR RESNET CNN [init=FILE] [lr=LR] [widths=A,B,C]
                               [blocks=A,B,C] [no-scratch]
  (each SECONDS: the epochs that fit after timing 30 steps, or epochs=N; 0 skips it.
   init=FILE continues from a base this script wrote (the resnet's weights; the projector's last
   layer starts anew, with a fresh one-cycle schedule at peak LR, default 2e-3): a second GPU
   session extends the first one's training instead of starting over.
   widths/blocks: the resnet's stage widths and blocks per stage (default 64,128,256 and 2,2,2);
   the file is then named resnet-A-B-Cx... and its arch options are in results.jsonl.)
The check samples its k-shot subsets exactly as `xfer train/finetune --shots K --seed S` do
(xfer_shots below), so its numbers are on the very images of xfer's runs; its probes include
logreg-l2 (L-BFGS on L2-normalised features), the one that tracks xfer's cosine-head probe, and
logreg-l2-2stages (the same on the last two stages' features, as xfer's resnet pool_stages 2).
(Result files written before 2026-11-28 used torch.randperm subsets instead.)
   The base of docs/finetune.md: examples/simclr_gpu.py /usr/share/datasets/fashion-mnist epochs=203 0;
   writes OUT/{resnet-64-128-256x2,cnn}.safetensors, OUT/results.jsonl, OUT/log.txt; OUT from $OUT;
   while it trains, OUT/NAME.partial.safetensors every minute, so a call cut short keeps a base)
Needs PyTorch (CUDA, bf16 autocast); on a CPU it only runs a seconds-long smoke test.
"""
import copy, gzip, json, math, os, struct, sys, time, traceback
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F

if len(sys.argv) < 4:
    raise SystemExit("usage: simclr_gpu.py DATA_DIR RESNET CNN [options] (RESNET, CNN: SECONDS or epochs=N)")
D = sys.argv[1]
# the two budgets first, as (seconds, fixed epochs): a misplaced option must not train a model by mistake
def parse_budget(b):
    try:
        if b.startswith("epochs="):
            n = int(b.split("=", 1)[1])
            if n > 0: return 0.0, n
        elif float(b) >= 0:
            return float(b), 0
    except ValueError:
        pass
    raise SystemExit(f"simclr_gpu.py: budget '{b}': expected SECONDS (0 skips the model) or epochs=N")
BUDGETS = [parse_budget(b) for b in sys.argv[2:4]]
# key=value options and flags after DATA_DIR RESNET CNN
OPT = {}
for a in sys.argv[4:]:
    k, _, v = a.partition("=")
    if k not in ("init", "lr", "widths", "blocks", "no-scratch") or (k == "no-scratch") == bool(_):
        raise SystemExit(f"simclr_gpu.py: unknown option '{a}' (init=FILE, lr=LR, widths=A,B,C, blocks=A,B,C, no-scratch)")
    OPT[k] = v
LR = float(OPT.get("lr", 2e-3))
WIDTHS = tuple(int(x) for x in OPT.get("widths", "64,128,256").split(","))
BLOCKS = tuple(int(x) for x in OPT.get("blocks", "2,2,2").split(","))
if len(WIDTHS) != len(BLOCKS) or min(WIDTHS + BLOCKS) < 1:
    raise SystemExit("simclr_gpu.py: widths= and blocks= need the same number of positive integers")
OUT = os.environ.get("OUT", "/tmp/out"); os.makedirs(OUT, exist_ok=True)
dev = "cuda" if torch.cuda.is_available() else "cpu"
SMOKE = dev == "cpu"
MEAN, STD = 0.28604060411453247, 0.3530242443084717
T0 = time.time()
SAVE_EVERY = 0 if SMOKE else 60  # the smoke run saves after every epoch but the last: its check must not hang on timing
def log(*a):
    s = " ".join(str(x) for x in a); print(f"[{time.time()-T0:6.1f}s] {s}", flush=True)
    with open(os.path.join(OUT, "log.txt"), "a") as f: f.write(s + "\n")
def result(d):
    with open(os.path.join(OUT, "results.jsonl"), "a") as f: f.write(json.dumps(d) + "\n")
    log(json.dumps(d))

def idx(p):
    with gzip.open(p) as f: b = f.read()
    nd = b[3]; dims = [int.from_bytes(b[4+4*i:8+4*i], "big") for i in range(nd)]
    return np.frombuffer(b[4+4*nd:], dtype=np.uint8).reshape(dims)
def ld(s):
    x = torch.tensor(idx(f"{D}/{s}-images-idx3-ubyte.gz")).float().div(255).unsqueeze(1)
    y = torch.tensor(idx(f"{D}/{s}-labels-idx1-ubyte.gz")).long()
    return x.to(dev), y.to(dev)
Xtr, Ytr = ld("train"); Xte, Yte = ld("t10k")
if SMOKE: Xtr, Ytr = Xtr[:2048], Ytr[:2048]

def load_safetensors(path):
    # our own writer's format only: F32/I64 tensors, sizes checked against the file
    b = open(path, "rb").read(); n = struct.unpack("<Q", b[:8])[0]
    if n > len(b) - 8: raise SystemExit(f"{path}: header length {n} past the end")
    hdr = json.loads(b[8:8 + n]); base = 8 + n; sd = {}
    for k, v in hdr.items():
        if k == "__metadata__": continue
        o0, o1 = v["data_offsets"]; dt = {"F32": np.float32, "I64": np.int64}[v["dtype"]]
        if not (0 <= o0 <= o1 <= len(b) - base): raise SystemExit(f"{path}: {k} out of range")
        a = np.frombuffer(b[base + o0:base + o1], dtype=dt)
        if a.size != int(np.prod(v["shape"])): raise SystemExit(f"{path}: {k} size mismatch")
        sd[k] = torch.tensor(a.reshape(v["shape"]).copy())
    return sd

def resnet_shape(sd):
    """(widths, blocks, out) of a resnet state dict this script wrote (any widths=/blocks=)."""
    n = max(int(k.split(".")[0][5:]) for k in sd if k.startswith("layer"))
    widths = tuple(sd[f"layer{i}.0.conv1.weight"].shape[0] for i in range(1, n + 1))
    blocks = tuple(1 + max(int(k.split(".")[1]) for k in sd if k.startswith(f"layer{i}.")) for i in range(1, n + 1))
    return widths, blocks, sd["fc.weight"].shape[0]

def save_safetensors(sd, path):
    hdr, blobs, off = {}, [], 0
    for k, v in sd.items():
        v = v.detach().cpu().contiguous()
        dt = {torch.float32: "F32", torch.int64: "I64"}[v.dtype]
        b = v.numpy().tobytes(); hdr[k] = {"dtype": dt, "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b); off += len(b)
    h = json.dumps(hdr).encode(); h += b" " * ((8 - len(h) % 8) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(h))); f.write(h)
        for b in blobs: f.write(b)
    os.replace(path + ".tmp", path)

# xfer's `cnn` (stages.S.{0 conv,1 bn}, neck.1 linear, head) and `resnet` (SmallResNet).
class Cnn(nn.Module):
    def __init__(s, widths=(32, 64), hidden=128, dropout=0.25, out=128):
        super().__init__(); s.stages = nn.ModuleList(); i, size = 1, 28
        for w in widths:
            s.stages.append(nn.Sequential(nn.Conv2d(i, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
                                          nn.MaxPool2d(2, ceil_mode=True))); i = w; size = (size + 1) // 2
        s.neck = nn.Sequential(nn.Flatten(), nn.Linear(i * size * size, hidden), nn.ReLU(), nn.Dropout(dropout))
        s.nf = hidden; s.head = nn.Linear(hidden, out)
    def features(s, x):
        for st in s.stages: x = st(x)
        return s.neck(x)
class Blk(nn.Module):
    def __init__(s, i, o, st):
        super().__init__(); s.conv1 = nn.Conv2d(i, o, 3, st, 1, bias=False); s.bn1 = nn.BatchNorm2d(o)
        s.conv2 = nn.Conv2d(o, o, 3, 1, 1, bias=False); s.bn2 = nn.BatchNorm2d(o)
        if st != 1 or i != o: s.downsample = nn.Sequential(nn.Conv2d(i, o, 1, st, bias=False), nn.BatchNorm2d(o))
        else: s.downsample = None
    def forward(s, x):
        idn = s.downsample(x) if s.downsample is not None else x
        return F.relu(s.bn2(s.conv2(F.relu(s.bn1(s.conv1(x))))) + idn)
class ResNet(nn.Module):
    def __init__(s, widths=(32, 64, 128), blocks=(1, 1, 1), out=128):
        super().__init__(); i = widths[0]
        s.conv1 = nn.Conv2d(1, i, 3, 1, 1, bias=False); s.bn1 = nn.BatchNorm2d(i)
        for si, (w, nb) in enumerate(zip(widths, blocks)):
            L = []
            for b in range(nb): L.append(Blk(i, w, 2 if (b == 0 and si > 0) else 1)); i = w
            setattr(s, f"layer{si+1}", nn.Sequential(*L))
        s.nl = len(widths); s.nf = i; s.fc = nn.Linear(i, out)
        for m in s.modules():
            if isinstance(m, nn.Conv2d): nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    def features(s, x, stages=1):
        # stages > 1: xfer's pool_stages: the last stages' pooled outputs, each L2-normalised, concatenated
        x = F.relu(s.bn1(s.conv1(x))); out = []
        for k in range(s.nl):
            x = getattr(s, f"layer{k+1}")(x)
            if k >= s.nl - stages: out.append(x.mean((2, 3)))
        return out[0] if stages == 1 else torch.cat([F.normalize(o, dim=1) for o in out], 1)
def head_of(m): return m.head if isinstance(m, Cnn) else m.fc

def aug(x, smin=0.3, jitter=True):
    n = x.shape[0]
    s = torch.empty(n, device=dev).uniform_(smin, 1.0).sqrt()
    ar = torch.empty(n, device=dev).uniform_(math.log(3/4), math.log(4/3)).exp().sqrt()
    sx, sy = s * ar, s / ar
    tx = (torch.rand(n, device=dev) * 2 - 1) * (1 - sx).clamp(min=0); ty = (torch.rand(n, device=dev) * 2 - 1) * (1 - sy).clamp(min=0)
    fl = torch.where(torch.rand(n, device=dev) < 0.5, -1.0, 1.0)
    th = torch.zeros(n, 2, 3, device=dev); th[:, 0, 0] = sx * fl; th[:, 0, 2] = tx; th[:, 1, 1] = sy; th[:, 1, 2] = ty
    y = F.grid_sample(x, F.affine_grid(th, x.shape, align_corners=False), align_corners=False)
    if jitter:
        c = torch.empty(n, 1, 1, 1, device=dev).uniform_(0.6, 1.4); b = torch.empty(n, 1, 1, 1, device=dev).uniform_(-0.2, 0.2)
        m = y.mean((2, 3), keepdim=True); y = ((y - m) * c + m + b).clamp(0, 1)
    return y
def norm(x): return (x - MEAN) / STD

def simclr(name, enc, seconds, B=32 if SMOKE else 512, T=0.2, lr=2e-3, max_epochs=1000, fixed_epochs=0):
    torch.manual_seed(0)
    enc = enc.to(dev).to(memory_format=torch.channels_last)
    proj = nn.Sequential(nn.ReLU(), nn.Linear(head_of(enc).out_features, 128)).to(dev)  # head + ReLU + linear = MLP projector
    params = list(enc.parameters()) + list(proj.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    n = len(Xtr); spe = n // B
    tgt = torch.cat([torch.arange(B, 2 * B), torch.arange(0, B)]).to(dev)
    def step(x):
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
            v = norm(torch.cat([aug(x), aug(x)])).contiguous(memory_format=torch.channels_last)
            z = proj(head_of(enc)(enc.features(v)))
        z = F.normalize(z.float(), dim=1); sim = z @ z.t() / T; sim.fill_diagonal_(-1e9)
        loss = F.cross_entropy(sim, tgt); opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        return loss
    # time a few steps to size the run to the budget; they are not training: the weights and the
    # optimizer go back to where they were (with init= they would be un-warmed steps at peak rate)
    start = [copy.deepcopy(m.state_dict()) for m in (enc, proj, opt)]
    enc.train(); t = time.time()
    for i in range(2 if SMOKE else 10): step(Xtr[torch.randint(0, n, (B,), device=dev)])
    if dev == "cuda": torch.cuda.synchronize()
    t = time.time()
    for i in range(2 if SMOKE else 30): step(Xtr[torch.randint(0, n, (B,), device=dev)])
    if dev == "cuda": torch.cuda.synchronize()
    per = (time.time() - t) / (2 if SMOKE else 30)
    for m, st in zip((enc, proj, opt), start): m.load_state_dict(st)
    epochs = fixed_epochs or max(1, min(max_epochs, int(seconds / (per * spe))))
    log(f"{name}: {per*1000:.1f} ms/step, {spe} steps/epoch -> {epochs} epochs")
    total = epochs * spe; k = 0
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=total, pct_start=0.03)
    # a device call cut short by its time limit still hands back a base: OUT/NAME.partial.safetensors,
    # rewritten every SAVE_EVERY seconds with the epochs done so far in the log (deleted at the end)
    partial = os.path.join(OUT, f"{name}.partial.safetensors"); saved = time.time()
    for ep in range(epochs):
        perm = torch.randperm(n, device=dev); tot = 0.0
        for i in range(spe):
            loss = step(Xtr[perm[i * B:(i + 1) * B]]); sched.step()
            if i == spe - 1: tot = loss.item()
        if ep % max(1, epochs // 10) == 0 or ep == epochs - 1: log(f"{name} epoch {ep+1}/{epochs} last-loss {tot:.3f}")
        if time.time() - saved > SAVE_EVERY and ep < epochs - 1:
            save_safetensors(enc.state_dict(), partial); saved = time.time()
            log(f"{name}: {partial} holds epoch {ep+1}/{epochs} (of a one-cycle schedule not yet annealed)")
    enc.eval()  # (the partial file goes once the final one is written: main)
    return enc.float().to(memory_format=torch.contiguous_format), epochs

M64 = (1 << 64) - 1
def splitmix(state):  # xfer::Rng::next (core/runtime.cpp): returns (new state, output)
    state = (state + 0x9e3779b97f4a7c15) & M64; z = state
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M64
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M64
    return state, z ^ (z >> 31)
def xfer_shots(labels, k, seed):
    # data::sample_shots: per class c a generator seeded seed*golden+c+1, a Fisher-Yates shuffle
    # with rejection-sampled draws, the first k positions kept in dataset order
    out = []
    for c in range(int(labels.max()) + 1):
        pos = np.nonzero(labels == c)[0]; st = (seed * 0x9e3779b97f4a7c15 + c + 1) & M64
        p = list(range(len(pos)))
        for i in range(len(p) - 1, 0, -1):
            n = i + 1; limit = M64 - M64 % n
            while True:
                st, x = splitmix(st)
                if x < limit: break
            j = x % n; p[i], p[j] = p[j], p[i]
        out += sorted(pos[p[:k]].tolist())
    return out
def shots(k, seed):
    # the images of `xfer finetune --data fashion-mnist:train:classes=5-9 --shots k --seed seed`
    yc = Ytr.cpu().numpy(); tgt = np.nonzero(yc >= 5)[0]
    ii = torch.tensor(tgt[xfer_shots(yc[tgt] - 5, k, seed)]).to(dev)
    return Xtr[ii], Ytr[ii] - 5
te = Yte >= 5; Xt, Yt = Xte[te], Yte[te] - 5
if SMOKE: Xt, Yt = Xt[:300], Yt[:300]

@torch.no_grad()
def feats(enc, x, stages=1):
    f = (lambda b: enc.features(b, stages)) if stages > 1 else enc.features
    return torch.cat([f(norm(x[i:i + 2000])) for i in range(0, len(x), 2000)])

def fit_logreg(A, y, wd, max_iter=500, line_search="strong_wolfe"):
    # multinomial logistic regression, loss CE + wd * ||W||^2, full batch by L-BFGS: (W, b)
    W = torch.zeros(A.shape[1], int(y.max()) + 1, device=A.device, requires_grad=True)
    b = torch.zeros(W.shape[1], device=A.device, requires_grad=True)
    o = torch.optim.LBFGS([W, b], max_iter=max_iter, line_search_fn=line_search)
    def cl():
        o.zero_grad(); l = F.cross_entropy(A @ W + b, y) + wd * (W ** 2).sum(); l.backward(); return l
    o.step(cl)
    return W.detach(), b.detach()

def logregs(enc, k, seed):
    # two probes on one embedding: "logreg" (standardised features) and "logreg-l2"
    # (L2-normalised x10, what a cosine-head probe reaches)
    Xs, Ys = shots(k, seed); Fs = feats(enc, Xs); Ft = feats(enc, Xt)
    mu, sd = Fs.mean(0), Fs.std(0) + 1e-6
    W, b = fit_logreg((Fs - mu) / sd, Ys, 1e-3, max_iter=300, line_search=None)
    acc = {"logreg": ((((Ft - mu) / sd) @ W + b).argmax(1) == Yt).float().mean().item()}
    W, b = fit_logreg(10 * F.normalize(Fs, dim=1), Ys, 0.3)
    acc["logreg-l2"] = ((10 * F.normalize(Ft, dim=1) @ W + b).argmax(1) == Yt).float().mean().item()
    if isinstance(enc, ResNet) and enc.nl > 1:  # what xfer's pool_stages 2 reads
        Fs, Ft = feats(enc, Xs, 2), feats(enc, Xt, 2)
        W, b = fit_logreg(10 * F.normalize(Fs, dim=1), Ys, 0.3)
        acc["logreg-l2-2stages"] = ((10 * F.normalize(Ft, dim=1) @ W + b).argmax(1) == Yt).float().mean().item()
    return acc

def finetune(enc_or_none, make, k, seed, lr, steps=300, head_lr_mult=10.0, smin=0.6, jitter=False,
             bs=64, wd=0.05, frozen_bn=False, frozen=False, smoothing=0.0, tta=False):
    # frozen_bn: BatchNorm layers stay in eval mode (pre-trained statistics); frozen: only the head
    # trains (a linear probe with augmentation); tta: logits averaged with the flipped image's
    import copy
    torch.manual_seed(seed)
    m = copy.deepcopy(enc_or_none) if enc_or_none is not None else make()
    m = m.to(dev); head = nn.Linear(m.nf, 5).to(dev)
    Xs, Ys = shots(k, seed)
    groups = [{"params": list(head.parameters()), "lr": lr * (head_lr_mult if enc_or_none is not None else 1)}]
    if not frozen: groups.append({"params": list(m.parameters()), "lr": lr})
    opt = torch.optim.AdamW(groups, weight_decay=wd)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, [g["lr"] for g in groups], total_steps=steps, pct_start=0.1)
    bs = min(bs, len(Xs))
    def mode():
        m.train(not frozen)
        if frozen_bn:
            for mod in m.modules():
                if isinstance(mod, nn.BatchNorm2d): mod.eval()
    mode()
    for s in range(steps):
        ii = torch.randint(0, len(Xs), (bs,), device=dev)
        x = norm(aug(Xs[ii], smin=smin, jitter=jitter))
        with torch.set_grad_enabled(not frozen): f = m.features(x)
        loss = F.cross_entropy(head(f), Ys[ii], label_smoothing=smoothing)
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    m.eval()
    with torch.no_grad():
        def logits(x):
            z = head(m.features(norm(x)))
            return z + head(m.features(norm(x.flip(3)))) if tta else z
        pred = torch.cat([logits(Xt[i:i + 2000]).argmax(1) for i in range(0, len(Xt), 2000)])
    return (pred == Yt).float().mean().item()

def evaluate(name, enc, make, do_scratch):
    seeds = [0, 1, 2]
    for k in ([10] if SMOKE else [10, 100]):
        per_seed = [logregs(enc, k, s) for s in seeds]
        for method in per_seed[0]:
            a = [r[method] for r in per_seed]; result({"enc": name, "k": k, "method": method, "acc": a, "mean": float(np.mean(a))})
    k = 10
    for lr in ([1e-3] if SMOKE else [3e-4, 1e-3]):
        a = [finetune(enc, make, k, s, lr, steps=20 if SMOKE else 300) for s in seeds]
        result({"enc": name, "k": k, "method": f"full lr={lr}", "acc": a, "mean": float(np.mean(a))})
    if do_scratch:
        for lr in ([1e-3] if SMOKE else [1e-3, 3e-3, 1e-2]):
            a = [finetune(None, make, k, s, lr, steps=20 if SMOKE else 300) for s in seeds]
            result({"enc": name, "k": k, "method": f"scratch lr={lr}", "acc": a, "mean": float(np.mean(a))})

def main():
    plan = [
        # resnet-64-128-256x2 (the same blocks in every stage), resnet-8-16-16x1-2-1 (not)
        ("resnet-" + "-".join(map(str, WIDTHS)) + "x" + "-".join(map(str, BLOCKS[:1] if len(set(BLOCKS)) == 1 else BLOCKS)),
         lambda: ResNet(WIDTHS if not SMOKE or "widths" in OPT else (8,) * len(WIDTHS), BLOCKS, out=512), {"widths": list(WIDTHS), "blocks": list(BLOCKS)}, "resnet", BUDGETS[0]),
        ("cnn", lambda: Cnn(out=512), {}, "cnn", BUDGETS[1]),
    ]
    trained = []
    for name, make, opts, arch, budget in plan:
        # SECONDS, or epochs=N for a fixed length (the run in docs/finetune.md: 203 epochs)
        secs, fixed = budget
        if secs <= 0 and not fixed: continue
        if SMOKE: secs, fixed = 3, min(fixed, 3)
        enc0 = make()
        if "init" in OPT and arch == "resnet":
            sd0 = load_safetensors(OPT["init"])
            if SMOKE:  # the smoke model is narrower: keep only what fits, to exercise the path
                own = enc0.state_dict(); sd0 = {k: v for k, v in sd0.items() if k in own and own[k].shape == v.shape}
                enc0.load_state_dict(sd0, strict=False)
            else:
                enc0.load_state_dict(sd0, strict=True)
            log(f"{name}: continuing from {OPT['init']} ({len(sd0)} tensors)")
        enc, epochs = simclr(name, enc0, secs, lr=LR, fixed_epochs=fixed)
        enc.eval()
        sd = {k: v for k, v in enc.state_dict().items()}
        save_safetensors(sd, os.path.join(OUT, f"{name}.safetensors"))
        partial = os.path.join(OUT, f"{name}.partial.safetensors")
        if os.path.exists(partial): os.remove(partial)
        result({"enc": name, "arch": arch, "arch_options": opts, "epochs": epochs, "seconds": secs,
                "init": OPT.get("init"), "lr": LR})
        trained.append((name, enc, make))
    # every model is trained and written before any check: a failing check loses no base
    for name, enc, make in trained:
        try:
            evaluate(name, enc, make, do_scratch="no-scratch" not in OPT)
        except Exception:
            log(f"{name}: the check failed (the base is written):\n{traceback.format_exc()}")
    log("done")

if __name__ == "__main__":
    main()
