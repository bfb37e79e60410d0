#!/usr/bin/env python3
"""Checks the PyTorch example scripts against xfer (ctest: examples.python).

1. examples/simclr_gpu.py samples its k-shot subsets as xfer does: for several
   SPECs the sha256 of the images and labels it picks equals the one
   `xfer data info --json SPEC` prints (Dataset::content_hash: tag, rank and
   sizes as int64, then the uint8 pixels, then the int64 labels).
2. simclr_gpu.py runs end to end (its CPU smoke mode) with widths=/blocks=, and
   writes a safetensors base (a partial one while it trains) and its probe results.
3. examples/frozen_probe_cpu.py loads that base (shapes read from the file) and
   prints every probe with an accuracy in [0, 1].
4. examples/fewshot_protocols_gpu.py runs its sweep on it for a few seconds.

Usage: check_examples.py XFER_BINARY   (exit 77 = skipped: no PyTorch or no dataset)
"""
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile

XFER = sys.argv[1]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples")
DATA = os.environ.get("XFER_FASHION_MNIST_DIR") or "/usr/share/datasets/fashion-mnist"
try:
    import numpy as np  # noqa: F401
    import torch
except ImportError:
    print("skipped: python3-torch or python3-numpy missing")
    sys.exit(77)
if not os.path.exists(os.path.join(DATA, "train-images-idx3-ubyte.gz")):
    print(f"skipped: no Fashion-MNIST in {DATA}")
    sys.exit(77)

failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    if not ok:
        failures.append(what)


def content_hash(images_u8, labels):
    h = hashlib.sha256()
    for tag, t in (("images", images_u8), ("labels", labels)):
        h.update(tag.encode())
        h.update(struct.pack("<q", t.dim()))
        for s in t.shape:
            h.update(struct.pack("<q", s))
    h.update(images_u8.contiguous().numpy().tobytes())
    h.update(labels.to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()


# 1. the sampler. simclr_gpu reads argv at import; on a CPU it keeps 2048 training
# images for its smoke run, so the full set is loaded again here.
sys.argv = [sys.argv[0], DATA, "0", "0"]
sys.path.insert(0, EXAMPLES)
os.environ.setdefault("OUT", tempfile.mkdtemp(prefix="xfer-examples-"))
import simclr_gpu as sg  # noqa: E402

sg.Xtr, sg.Ytr = sg.ld("train")
for k, seed in ((10, 0), (10, 1), (10, 2), (1, 7), (100, 2)):
    spec = f"fashion-mnist:train:classes=5-9:shots={k}:seed={seed}"
    info = json.loads(subprocess.run([XFER, "data", "info", "--json", spec], check=True,
                                     capture_output=True, text=True).stdout)
    x, y = sg.shots(k, seed)
    mine = content_hash((x * 255).round().to(torch.uint8).cpu(), y.cpu())
    check(mine == info["sha256"], f"simclr_gpu.shots({k}, {seed}) picks the images of {spec}")

# 2. the GPU script's smoke run, with a non-default shape
with tempfile.TemporaryDirectory(prefix="xfer-examples-") as out:
    env = dict(os.environ, OUT=out, CUDA_VISIBLE_DEVICES="")
    r = subprocess.run([sys.executable, os.path.join(EXAMPLES, "simclr_gpu.py"), DATA, "epochs=2", "0",
                        "widths=8,16,16", "blocks=1,2,1", "no-scratch"], env=env, capture_output=True, text=True)
    check(r.returncode == 0, "simclr_gpu.py smoke run exits 0" + ("" if r.returncode == 0 else ": " + r.stderr[-500:]))
    base = os.path.join(out, "resnet-8-16-16x1-2-1.safetensors")
    check(os.path.exists(base), "simclr_gpu.py writes resnet-8-16-16x1-2-1.safetensors")
    # the base of an unfinished run (a device call cut short): written after epoch 1, gone at the end
    check("resnet-8-16-16x1-2-1.partial.safetensors holds epoch 1/2" in r.stdout
          and not os.path.exists(base.replace(".safetensors", ".partial.safetensors")),
          "simclr_gpu.py saves a partial base while it trains and removes it when done")
    rows = [json.loads(line) for line in open(os.path.join(out, "results.jsonl"))] if r.returncode == 0 else []
    methods = {row.get("method") for row in rows}
    check({"logreg", "logreg-l2", "logreg-l2-2stages"} <= methods,
          f"simclr_gpu.py reports logreg, logreg-l2 and logreg-l2-2stages (got {sorted(m for m in methods if m)})")
    r = subprocess.run([sys.executable, os.path.join(EXAMPLES, "simclr_gpu.py"), DATA, "1", "0", "bogus=1"],
                       env=env, capture_output=True, text=True)
    check(r.returncode != 0 and "unknown option 'bogus=1'" in r.stderr, "simclr_gpu.py refuses an unknown option")
    # an option where the CNN's budget goes (the usage line's CNN left out) trains nothing
    r = subprocess.run([sys.executable, os.path.join(EXAMPLES, "simclr_gpu.py"), DATA, "epochs=2", "init=" + base],
                       env=env, capture_output=True, text=True)
    check(r.returncode != 0 and "budget 'init=" in r.stderr and "epochs" not in r.stdout,
          "simclr_gpu.py refuses an option in place of a budget before it trains")

    # 3. the frozen-feature probe on that base
    if os.path.exists(base):
        r = subprocess.run([sys.executable, os.path.join(EXAMPLES, "frozen_probe_cpu.py"), DATA, base],
                           env=env, capture_output=True, text=True)
        check(r.returncode == 0, "frozen_probe_cpu.py exits 0" + ("" if r.returncode == 0 else ": " + r.stderr[-500:]))
        probes = {}
        for line in r.stdout.splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                probes[row["probe"]] = row
        want = {"logreg-standardized", "logreg-l2", "logreg-l2-2stages", "cosine-minibatch", "linear-minibatch"}
        check(set(probes) == want, f"frozen_probe_cpu.py prints every probe (got {sorted(probes)})")
        check(all(len(p["acc"]) == 3 and all(0 <= a <= 1 for a in p["acc"]) for p in probes.values()),
              "frozen_probe_cpu.py accuracies: three seeds, each in [0, 1]")

        # 4. the protocol sweep on that base, a few seconds of budget
        r = subprocess.run([sys.executable, os.path.join(EXAMPLES, "fewshot_protocols_gpu.py"), DATA, base, "3"],
                           env=env, capture_output=True, text=True)
        check(r.returncode == 0, "fewshot_protocols_gpu.py exits 0" + ("" if r.returncode == 0 else ": " + r.stderr[-500:]))
        path = os.path.join(out, "protocols.jsonl")
        rows = [json.loads(line) for line in open(path)] if os.path.exists(path) else []
        check(len(rows) >= 1 and all(len(row["acc"]) == 3 for row in rows),
              f"fewshot_protocols_gpu.py writes protocols.jsonl ({len(rows)} rows)")

print(f"{len(failures)} failure(s)")
sys.exit(1 if failures else 0)
