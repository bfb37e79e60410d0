#!/usr/bin/python3
"""Golden data for the TorchScript tests (tests/models/torchscript_test.cpp,
tests/eval/predict_test.cpp).

Usage: /usr/bin/python3 make_torchscript_golden.py OUT_DIR
Writes OUT_DIR/classifier.pt (torch.jit.script of a small residual CNN with
BatchNorm and dropout, eval mode), OUT_DIR/backbone.pt (its feature extractor,
traced, output [N, 32]), OUT_DIR/headed_backbone.pt (scripted features [N, 8] from a module
with a child named `head` and a BatchNorm without weights) and OUT_DIR/io.safetensors (input [3,1,28,28] in
[0,1], logits, features). Exits 77 when torch cannot be imported.
"""
import os
import sys

try:
    import torch
    import torch.nn as nn
except Exception as e:  # noqa: BLE001
    print(f"torch unavailable: {e}", file=sys.stderr)
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_model_golden import write_safetensors  # noqa: E402


class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.proj = nn.Linear(16, 32)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.max_pool2d(y + torch.relu(self.conv2(y)), 2)
        return torch.relu(self.proj(y.mean(dim=(2, 3))))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8, affine=False)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class HeadNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(8)

    def forward(self, x):
        return self.norm(x)


class HeadedBackbone(nn.Module):
    """A feature extractor with a child named `head` (timm's ConvNeXt with num_classes=0 keeps
    head.norm) and a BatchNorm without affine weights."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.block = Block()
        self.head = HeadNorm()

    def forward(self, x):
        return self.head(self.block(torch.relu(self.conv1(x))).mean(dim=(2, 3)))


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = Backbone()
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.dropout(self.backbone(x)))


def main():
    out = sys.argv[1]
    torch.manual_seed(0)
    model = Classifier()
    model.train()
    for _ in range(3):  # non-trivial BatchNorm running statistics
        model(torch.rand(8, 1, 28, 28))
    model.eval()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        logits = model(x)
        features = model.backbone(x)
    torch.jit.script(model).save(os.path.join(out, "classifier.pt"))
    torch.jit.trace(model.backbone, x).save(os.path.join(out, "backbone.pt"))
    torch.jit.script(HeadedBackbone()).save(os.path.join(out, "headed_backbone.pt"))
    write_safetensors(os.path.join(out, "io.safetensors"),
                      {"input": x, "logits": logits, "features": features})


if __name__ == "__main__":
    main()
