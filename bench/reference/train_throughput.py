"""PyTorch reference for bench/train_throughput.cpp: the same three models
(layer for layer), the same step (forward, cross-entropy, backward, AdamW)."""
import json
import os
import sys
import time

import torch
import torch.nn as nn


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Dropout(0.1),
                         nn.Linear(512, 256), nn.ReLU(), nn.Dropout(0.1), nn.Linear(256, 10))


def cnn():
    def stage(i, o):
        return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(True),
                nn.MaxPool2d(2, ceil_mode=True)]
    return nn.Sequential(*stage(1, 32), *stage(32, 64), nn.Flatten(), nn.Linear(64 * 49, 128),
                         nn.ReLU(True), nn.Dropout(0.25), nn.Linear(128, 10))


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


def resnet():
    return nn.Sequential(nn.Conv2d(1, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                         Block(32, 32, 1), Block(32, 64, 2), Block(64, 128, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))


def main():
    arch = sys.argv[1]
    args = dict(zip(sys.argv[2::2], sys.argv[3::2]))
    batch, steps = int(args.get("--batch", 128)), int(args.get("--steps", 20))
    reps, threads = int(args.get("--reps", 1)), int(args.get("--threads", 0)) or os.cpu_count()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = {"mlp": mlp, "cnn": cnn, "resnet": resnet}[arch]()
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
