#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/.

Seeds are small valid inputs (and a few near-misses) so that libFuzzer starts
deep inside each format. Standard library only; rerunning rewrites the same
files. Image seeds (PNG written here, JPEG/BMP by hand-built bytes) too.
"""
import gzip
import json
import os
import struct
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def idx_bytes(dims, payload):
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + payload


def safetensors_bytes(tensors, metadata=None):
    header, blobs, off = {}, b"", 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(data)]}
        blobs += data
        off += len(data)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + blobs


def png_bytes(w, h, channels, rows):
    color = {1: 0, 3: 2, 4: 6}[channels]
    raw = b"".join(b"\x00" + r for r in rows)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def bmp_bytes(w, h):
    row = bytes([10, 20, 30]) * w
    row += b"\x00" * ((4 - len(row) % 4) % 4)
    pixels = row * h
    header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return header + info + pixels


def main():
    # idx: first byte 0 = raw, 1 = .gz as is, 2 = compressed by the target.
    images = idx_bytes([2, 4, 4], bytes(range(32)))
    labels = idx_bytes([5], bytes([0, 1, 2, 1, 0]))
    put("idx", "images-raw", b"\x00" + images)
    put("idx", "labels-raw", b"\x00" + labels)
    put("idx", "images-gz", b"\x01" + gzip.compress(images, mtime=0))
    put("idx", "labels-gz", b"\x01" + gzip.compress(labels, mtime=0))
    put("idx", "images-deflated", b"\x02" + images)
    put("idx", "truncated", b"\x00" + idx_bytes([3, 4, 4], bytes(10)))
    put("idx", "scalar", b"\x00" + idx_bytes([], b""))

    f32 = struct.pack("<4f", 1.0, -2.0, 0.5, float("nan"))
    put("safetensors", "f32", safetensors_bytes({"w": ("F32", [2, 2], f32)}))
    put("safetensors", "mixed", safetensors_bytes({
        "a.weight": ("F32", [1, 3], struct.pack("<3f", 1, 2, 3)),
        "a.num_batches_tracked": ("I64", [], struct.pack("<q", 7)),
        "b": ("F32", [0], b""),
    }, {"format": "pt"}))
    put("safetensors", "empty", safetensors_bytes({}))
    put("safetensors", "bad-offsets", safetensors_bytes({"w": ("F32", [2, 2], f32)}).replace(b"[0, 16]", b"[8, 16]"))

    config = {"arch": "cnn", "arch_options": {"widths": [2, 2], "hidden": 4, "dropout": 0}, "class_names": ["a", "b", "c"],
              "format": "xfer-model/1", "input_shape": [1, 8, 8], "mean": [0.5], "num_classes": 3, "std": [0.25]}
    card = {"created": "2026-11-27T16:00:15Z", "data": {"samples": 50, "spec": "fashion-mnist:train:shots=10"},
            "format": "xfer-card/1", "id": "@SHA@", "metrics": {"val_accuracy": 0.5},
            "parent": {"id": "@SHA@", "path": "../base"},
            "recipe": {"command": "finetune", "strategy": "lora:4", "epochs": 3, "lr": 0.001}, "xfer_version": "0.1.0"}
    put("model_dir", "valid", json.dumps(config) + "\0" + json.dumps(card))
    emb = dict(config, task="embedding", class_names=[])
    put("model_dir", "embedding", json.dumps(emb) + "\0" + json.dumps(card))
    lora = dict(config, adapters={"lora": {"rank": 2, "alpha": 2, "targets": ["neck.1"]}})
    put("model_dir", "lora", json.dumps(lora) + "\0" + json.dumps(card))
    put("model_dir", "wrong-sha", json.dumps(config) + "\0" + json.dumps(dict(card, id="0" * 64)))
    put("model_dir", "other-arch", json.dumps(dict(config, arch="mlp", arch_options={"hidden": [4]})) + "\0"
        + json.dumps(card))

    put("study_config", "empty", "{}")
    put("study_config", "quick", json.dumps({"preset": "quick"}))
    put("study_config", "full", json.dumps({
        "preset": "quick", "source": "fashion-mnist:train:classes=0-4", "target": "fashion-mnist:train:classes=5-9",
        "test": "fashion-mnist:test:classes=5-9", "test_shots": 20, "base_shots": 50, "base_epochs": 1,
        "base_archs": ["cnn", "resnet"], "public_base": "resnet", "strategies": ["full", "lora:4", "l2-sp:0.01"],
        "shots": [10], "seeds": [0, 1], "scratch_archs": ["cnn"], "min_epochs": 2, "min_steps": 5,
        "scratch_lr": 0.003, "attacks": ["pgd", "mi-fgsm+di+ti"], "eps": [0.05, 0.1], "attack_steps": 3,
        "attacker_shots": 10, "attacker_c_arch": "cnn", "adv_train": "pgd:0.1:2", "predictor_samples": 50}))
    put("study_config", "unknown-key", json.dumps({"nonsense": 1}))

    for i, s in enumerate(["fashion-mnist", "fashion-mnist:test", "fashion-mnist:train:classes=5-9:shots=10:seed=3",
                           "fashion-mnist:train:classes=0,2,4", "idx:a.gz,b.gz:classes=1-2:shots=4",
                           "folder:/data/pets:size=32:channels=3:shots=5", "folder:x:size=0",
                           "idx:only-one", "fashion-mnist:classes=9-5",
                           "fashion-mnist:train:classes=5-9:exclude=100@0-2,18446744073709551615:shots=5",
                           "idx:a.gz,b.gz:exclude=3@9,1,0-2"]):
        put("data_spec", f"spec{i}", s)

    for i, s in enumerate(["8/255", "0.03", "1/255,2/255,4/255", "1e-3", "nan", "-1", "1/0", "inf", "0x10", " 0.1"]):
        put("eps", f"eps{i}", s)

    # image: first byte = extension (bits 0-1: png jpg bmp jpeg) and channels (bits 2-3: as stored, 1, 3).
    gray = png_bytes(3, 2, 1, [bytes([0, 128, 255]), bytes([10, 20, 30])])
    rgb = png_bytes(2, 2, 3, [bytes(range(6)), bytes(range(6, 12))])
    rgba = png_bytes(1, 1, 4, [bytes([1, 2, 3, 4])])
    put("image", "png-gray", b"\x00" + gray)
    put("image", "png-rgb-as-gray", b"\x04" + rgb)
    put("image", "png-rgba-as-rgb", b"\x08" + rgba)
    put("image", "bmp", b"\x02" + bmp_bytes(3, 2))  # refused: xfer decodes PNG and JPEG only
    put("image", "png-truncated", b"\x00" + gray[:30])
    put("image", "png-huge-header", b"\x00" + png_bytes(1, 1, 1, [b"\x00"]).replace(
        struct.pack(">II", 1, 1), struct.pack(">II", 100000, 100000), 1))
    try:  # JPEG seeds need an encoder: torchvision's, where installed
        import torch
        import torchvision.io
        g = torch.Generator().manual_seed(0)
        for name, c, mode in [("jpeg-gray", 1, 0x01), ("jpeg-rgb", 3, 0x03), ("jpeg-rgb-as-gray", 3, 0x05)]:
            img = torch.randint(0, 256, (c, 8, 6), dtype=torch.uint8, generator=g)
            put("image", name, bytes([mode]) + bytes(torchvision.io.encode_jpeg(img, quality=75).tolist()))
    except ImportError:
        pass


if __name__ == "__main__":
    main()
