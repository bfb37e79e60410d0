#!/usr/bin/env python3
"""Transferability matrix and lineage-aware audit on the Fashion-MNIST split of
DESIGN.md, through the xfer CLI.

A small model zoo with two lineages and three architectures:
  resnet-base   resnet pre-trained on classes 0-4 (the public base)
  resnet-full   fine-tuned from resnet-base on classes 5-9, 100 shots, full    (the victim)
  resnet-lpft   fine-tuned from resnet-base, 100 other shots, lp-ft            (a sibling)
  cnn-base      cnn pre-trained on classes 0-4 (a second public base)
  cnn-full      fine-tuned from cnn-base on classes 5-9, 100 shots, full
  resnet-scratch, vit-scratch   trained from scratch on 100 shots of 5-9 (unrelated)
then `xfer transfer` (every model as a source, the target-task models as targets;
fgsm, pgd, mi-fgsm+di+ti, feature at eps 0.1) and `xfer audit` of resnet-full
with every other model as a proxy at eps 0.05, 0.1, 0.15. Both share one
adversarial-set cache, so the audit reuses what the matrix crafted.

Usage: examples/audit_fmnist.py [--xfer build/xfer] [--out out/audit]
                                [--zoo out/fewshot/models]   (reuses its base)
Models that already exist are kept; rerunning recomputes nothing.
"""

import argparse
import json
import os
import subprocess
import sys
import time

SRC = "fashion-mnist:train:classes=0-4"
TGT = "fashion-mnist:train:classes=5-9"
TEST = "fashion-mnist:test:classes=5-9:shots=100"


def run(cmd, log):
    t0 = time.time()
    with open(log, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)} (see {log})")
    return time.time() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--xfer", default="build/xfer")
    ap.add_argument("--out", default="out/audit")
    ap.add_argument("--zoo", default="out/fewshot/models", help="where a resnet 'base' may already be")
    ap.add_argument("--threads", default="")
    a = ap.parse_args()
    xfer = [a.xfer, "--quiet"] + (["--threads", a.threads] if a.threads else [])
    models = os.path.join(a.out, "models")
    os.makedirs(models, exist_ok=True)
    walls = {}

    def model(name, cmd):
        out = os.path.join(models, name)
        if not os.path.exists(out):
            walls[name] = run(xfer + cmd + ["--out", out], out + ".log")
            print(f"{name}: {walls[name]:.0f} s", flush=True)
        return out

    zoo_base = os.path.join(a.zoo, "base")
    if os.path.exists(os.path.join(zoo_base, "card.json")) and not os.path.exists(os.path.join(models, "resnet-base")):
        subprocess.run(["cp", "-r", zoo_base, os.path.join(models, "resnet-base")], check=True)
    ft = ["--epochs", "10", "--batch-size", "32", "--crop-padding", "2", "--no-checkpoint"]
    rb = model("resnet-base", ["train", "--data", SRC, "--arch", "resnet", "--epochs", "3", "--batch-size", "128"])
    model("resnet-full", ["finetune", "--from", rb, "--data", TGT, "--shots", "100", "--seed", "0",
                          "--strategy", "full"] + ft)
    model("resnet-lpft", ["finetune", "--from", rb, "--data", TGT, "--shots", "100", "--seed", "1",
                          "--strategy", "lp-ft"] + ft)
    cb = model("cnn-base", ["train", "--data", SRC, "--arch", "cnn", "--epochs", "3", "--batch-size", "128",
                            "--no-checkpoint"])
    model("cnn-full", ["finetune", "--from", cb, "--data", TGT, "--shots", "100", "--seed", "0",
                       "--strategy", "full"] + ft)
    for arch in ["resnet", "vit"]:
        model(f"{arch}-scratch", ["train", "--data", TGT, "--shots", "100", "--seed", "2", "--arch", arch,
                                  "--val-fraction", "0", "--lr", "3e-3"] + ft)

    p = lambda n: os.path.join(models, n)
    cache = os.path.join(a.out, "adv")
    sources = ["resnet-base", "resnet-full", "resnet-lpft", "cnn-base", "cnn-full", "resnet-scratch", "vit-scratch"]
    targets = ["resnet-full", "resnet-lpft", "cnn-full", "resnet-scratch", "vit-scratch"]
    t0 = time.time()
    run(xfer + ["transfer", "--sources", ",".join(p(s) for s in sources), "--targets", ",".join(p(t) for t in targets),
                "--data", TEST, "--attack", "fgsm,pgd,mi-fgsm+di+ti,feature", "--eps", "0.1", "--cache", cache,
                "--out", os.path.join(a.out, "transfer")], os.path.join(a.out, "transfer.log"))
    walls["transfer"] = time.time() - t0
    t0 = time.time()
    proxies = [s for s in sources if s != "resnet-full"]
    run(xfer + ["audit", "--target", p("resnet-full"), "--proxies", ",".join(p(s) for s in proxies),
                "--data", TEST, "--eps", "0.1,0.05,0.15", "--cache", cache, "--out", os.path.join(a.out, "audit")],
        os.path.join(a.out, "audit.log"))
    walls["audit"] = time.time() - t0
    json.dump(walls, open(os.path.join(a.out, "walls.json"), "w"), indent=1)
    print(open(os.path.join(a.out, "transfer.log")).read())
    print(open(os.path.join(a.out, "audit.log")).read())
    print(json.dumps(walls, indent=1))


if __name__ == "__main__":
    main()
