#!/usr/bin/python3
"""Golden data for the model parity tests (tests/models/resnet_test.cpp, vit_test.cpp).

Usage: /usr/bin/python3 make_model_golden.py MODEL OUT_DIR
  MODEL: resnet18 | resnet50 (torchvision.models) | vit (a small reimplementation of
  timm's VisionTransformer with timm's key names and math).

Writes OUT_DIR/weights.safetensors (the model's state_dict) and OUT_DIR/io.safetensors
(input [2, C, H, W] uniform in [0, 1], logits, features) for the model in eval mode.
Weights are random (torch.manual_seed) and the BatchNorm running statistics and affine
parameters are made non-trivial, so that a loader that skips or misplaces any of them fails.
Exits 77 when torch (or torchvision, for the resnets) cannot be imported: the C++ test skips.
safetensors files are written by hand (no safetensors package on Debian).
"""
import json
import math
import os
import struct
import sys

try:
    import torch
    import torch.nn as nn
except Exception as e:  # noqa: BLE001
    print(f"torch unavailable: {e}", file=sys.stderr)
    sys.exit(77)

DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64", torch.int32: "I32"}


def write_safetensors(path, tensors):
    """safetensors: u64 LE header length, JSON header, raw little-endian bytes."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        data = t.numpy().tobytes()  # numpy is little-endian on every supported host
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# --- a small timm-style ViT (timm/models/vision_transformer.py, default config) ---------------

class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, in_chans, dim, patch):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    def __init__(self, img_size, patch, in_chans, num_classes, dim, depth, heads, mlp_ratio):
        super().__init__()
        n = (img_size // patch) ** 2
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.5)
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, dim) * 0.5)
        self.patch_embed = PatchEmbed(in_chans, dim, patch)
        self.blocks = nn.Sequential(*[Block(dim, heads, int(dim * mlp_ratio)) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward_features(self, x):
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        return self.norm(self.blocks(x))[:, 0]

    def forward(self, x):
        return self.head(self.forward_features(x))


def randomize_norms(model):
    """Non-default affine parameters for BatchNorm and LayerNorm."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    name, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(20240607)
    torch.set_num_threads(1)
    if name in ("resnet18", "resnet50"):
        try:
            import torchvision
        except Exception as e:  # noqa: BLE001
            print(f"torchvision unavailable: {e}", file=sys.stderr)
            return 77
        model = getattr(torchvision.models, name)(num_classes=10)
        randomize_norms(model)
        # Non-trivial running statistics: a few forward passes in train mode.
        model.train()
        with torch.no_grad():
            for _ in range(3):
                model(torch.rand(4, 3, 64, 64) * 2 - 0.5)
        x = torch.rand(2, 3, 64, 64)
    elif name == "vit":
        # 2-channel 32x32 input, patch 8 (16 patches), dim 48, 3 heads, depth 2, mlp_ratio 2.
        model = VisionTransformer(img_size=32, patch=8, in_chans=2, num_classes=5, dim=48,
                                  depth=2, heads=3, mlp_ratio=2.0)
        randomize_norms(model)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.Linear):
                    m.bias.uniform_(-0.1, 0.1)
        x = torch.rand(2, 2, 32, 32)
    else:
        print(f"unknown model {name}", file=sys.stderr)
        return 2
    model.eval()
    with torch.no_grad():
        features = model.forward_features(x) if name == "vit" else None
        logits = model(x)
    os.makedirs(out, exist_ok=True)
    write_safetensors(os.path.join(out, "weights.safetensors"), model.state_dict())
    io = {"input": x, "logits": logits}
    if features is not None:
        io["features"] = features
    write_safetensors(os.path.join(out, "io.safetensors"), io)
    print(f"{name}: {len(model.state_dict())} tensors, logits abs max {logits.abs().max().item():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
