"""PyTorch reference for bench/train_throughput.cpp: the same three models
(layer for layer, models.py), the same step (forward, cross-entropy, backward, AdamW)."""
import json
import os
import sys
import time

import torch
import torch.nn as nn

from models import Cnn, Mlp, ResNet


def main():
    arch = sys.argv[1]
    args = dict(zip(sys.argv[2::2], sys.argv[3::2]))
    batch, steps = int(args.get("--batch", 128)), int(args.get("--steps", 20))
    reps, threads = int(args.get("--reps", 1)), int(args.get("--threads", 0)) or os.cpu_count()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = {"mlp": Mlp, "cnn": Cnn, "resnet": ResNet}[arch](10)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x, y = torch.rand(batch, 1, 28, 28), torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for _ in range(3):
        step()
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        s = time.perf_counter() - t0
        print(json.dumps({"impl": "pytorch", "arch": arch, "threads": threads, "batch": batch,
                          "images_per_second": round(batch * steps / s, 1)}), flush=True)


if __name__ == "__main__":
    main()
