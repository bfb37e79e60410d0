#!/usr/bin/python3
"""Few-shot transfer on the Fashion-MNIST split of DESIGN.md, through the xfer CLI.

Pre-trains the public base, then for each k in --shots, each seed and each
strategy fine-tunes it on k labelled images per class of classes 5-9
(relabelled 0-4), and trains the same architecture from scratch on exactly the
same k-shot subset (`xfer train --shots K`) with its own best learning rate
from a small grid. Every model is evaluated on the 5000 test images of classes
5-9. Writes OUT/results.json and OUT/table.md (mean +/- std test accuracy and
wall time over seeds), and the label saving: the fewest shots per class scratch
needs to match the best transfer strategy at 10 and 100 shots.

The base (--base):
  supervised  cross-entropy on the labelled source task, classes 0-4
  simclr      self-supervised (SimCLR) on --ssl-data, no labels at all: by
              default the 60 000 Fashion-MNIST training images of every class,
              as a foundation model is pre-trained on broad unlabelled data
              that includes images of its later downstream tasks. The target
              task's labels are never seen; its test images never.
  --base-weights FILE  a public base trained elsewhere: a safetensors state
              dict of --arch (with --arch-options, --mean, --std), imported by
              `xfer finetune --weights`; nothing is pre-trained here.

Usage: examples/fewshot_fmnist.py [--xfer build/xfer] [--out out/fewshot]
       [--base supervised|simclr] [--arch resnet] [--base-epochs N]
       [--base-weights FILE --arch-options JSON --mean M --std S]
       [--shots 1,5,10,50,100] [--scratch-extra 200,500,1000] [--seeds 0,1,2]
Runs already finished (their eval JSON exists) are not redone.
Standard library only.
"""
import argparse
import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import time

SRC = "fashion-mnist:train:classes=0-4"
TGT = "fashion-mnist:train:classes=5-9"
TEST = "fashion-mnist:test:classes=5-9"
SSL = "fashion-mnist:train"
STRATEGIES = ["linear-probe", "full", "lp-ft", "lora:8", "l2-sp:0.01"]
SCRATCH_LRS = [1e-3, 3e-3, 1e-2]


def run(cmd, log):
    t0 = time.time()
    with open(log, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)} (see {log})")
    return time.time() - t0


def flags_of(items):
    """['lr=3e-4', 'head-type=cosine', 'hflip'] -> ['--lr', '3e-4', '--head-type', 'cosine', '--hflip']"""
    out = []
    for f in items:
        name, eq, value = f.partition("=")
        out += ["--" + name] + ([value] if eq else [])
    return out


def budget(k, batch=32, min_epochs=10, min_steps=100):
    n = 5 * k
    b = min(batch, n)
    steps_per_epoch = max(1, n // b) if n > b else 1
    return b, max(min_epochs, math.ceil(min_steps / steps_per_epoch))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--xfer", default="build/xfer")
    ap.add_argument("--out", default="out/fewshot")
    ap.add_argument("--shots", default="1,5,10,50,100")
    ap.add_argument("--scratch-extra", default="200,500,1000")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--base", choices=["supervised", "simclr"], default="supervised")
    ap.add_argument("--arch", default="resnet")
    ap.add_argument("--base-epochs", type=int, default=None,
                    help="default 3 (supervised) or 15 (simclr)")
    ap.add_argument("--ssl-data", default=SSL)
    ap.add_argument("--arch-options", default="",
                    help="JSON architecture options for the base and the scratch baseline")
    ap.add_argument("--base-weights", default="",
                    help="import this safetensors base (of --arch) instead of pre-training one")
    ap.add_argument("--base-note", default="", help="--base-weights: where the base came from (for the table)")
    ap.add_argument("--mean", default="", help="--base-weights: the base's input normalisation mean")
    ap.add_argument("--std", default="", help="--base-weights: the base's input normalisation std")
    ap.add_argument("--strategies", default=",".join(STRATEGIES),
                    help="comma-separated; an item may carry finetune flags: 'full lr=3e-4 head-lr-scale=10'; "
                         "lr=find: the rate of `--lr-find` (a range test) first; 'scratch FLAGS': `xfer train` "
                         "as a column")
    ap.add_argument("--scratch-only", action="store_true",
                    help="only the scratch runs and 'scratch ...' columns (they do not need the base: "
                         "run them while it trains)")
    ap.add_argument("--scratch-variants", default="",
                    help="';'-separated extra scratch flag sets, each tried with every rate of the grid "
                         "(e.g. 'head-type=cosine'); scratch's best is over variants x rates")
    ap.add_argument("--scratch-lrs", default=",".join(f"{x:g}" for x in SCRATCH_LRS),
                    help="scratch's learning-rate grid (default 1e-3,3e-3,1e-2)")
    ap.add_argument("--table-only", action="store_true",
                    help="run nothing: rebuild table.md from results.json (scratch's best over the grid "
                         "points that were run at each k)")
    ap.add_argument("--threads", default="")
    a = ap.parse_args()
    shots = [int(x) for x in a.shots.split(",") if x]
    extra = [int(x) for x in a.scratch_extra.split(",") if x]
    seeds = [int(x) for x in a.seeds.split(",") if x]
    strategies = [x for x in a.strategies.split(",") if x]
    if a.base_epochs is None:
        a.base_epochs = 3 if a.base == "supervised" else 15
    os.makedirs(os.path.join(a.out, "models"), exist_ok=True)
    xfer = [a.xfer, "--quiet"] + (["--threads", a.threads] if a.threads else [])
    results_path = os.path.join(a.out, "results.json")
    results = json.load(open(results_path)) if os.path.exists(results_path) else {"runs": {}}
    # Runs are reused by key (strategy/k/seed), so every run in one results.json must share these:
    # checked before anything runs. (Files written before 2026-11-28 have no record: adopted as is.)
    settings = {"arch": a.arch, "arch_options": json.loads(a.arch_options) if a.arch_options else {}}
    if "settings" in results and results["settings"] != settings:
        sys.exit(f"{results_path} holds runs of {results['settings']}, not {settings}: use another --out")
    results["settings"] = settings

    def evaluate(model, key, wall, extra=None):
        js = os.path.join(a.out, "eval", key + ".json")
        os.makedirs(os.path.dirname(js), exist_ok=True)
        run(xfer + ["eval", "--model", model, "--data", TEST, "--json", js], js + ".log")
        acc = json.load(open(js))["evaluation"]["accuracy"]
        results["runs"][key] = {"accuracy": acc, "wall_seconds": wall, **(extra or {})}
        json.dump(results, open(results_path + ".tmp", "w"), indent=1)
        os.replace(results_path + ".tmp", results_path)
        print(f"{key}: test accuracy {acc:.4f}, {wall:.1f} s", flush=True)

    arch = ["--arch", a.arch] + (["--arch-options", a.arch_options] if a.arch_options else [])
    base = os.path.join(a.out, "models", "base")
    if a.base_weights:
        if not (a.mean and a.std):
            sys.exit("--base-weights needs --mean and --std (the normalisation the base was trained with)")
        source = ["--weights", a.base_weights] + arch + ["--mean", a.mean, "--std", a.std]
    else:
        source = ["--from", base]
    if a.scratch_only:  # scratch columns ('scratch lr=find') need no base either
        strategies = [s for s in strategies if s.split()[0] == "scratch"]
    elif a.base_weights:
        with open(a.base_weights, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        mine = {"kind": "imported", "sha256": sha, "mean": a.mean, "std": a.std}
        if "base" in results:
            theirs = {key: results["base"].get(key) for key in mine}
            if theirs != mine:
                sys.exit(f"{a.out} holds results of another base ({theirs}): use another --out")
        results["base"] = {**mine, "file": os.path.basename(a.base_weights), "arch": a.arch,
                           "arch_options": a.arch_options, "note": a.base_note}
    elif "base" in results and (results["base"].get("kind", "supervised") != a.base
                                or results["base"].get("arch", "resnet") != a.arch):
        sys.exit(f"{a.out} holds results of a {results['base'].get('kind', 'supervised')} base: use another --out")
    elif "base" in results and not os.path.exists(base) and not a.table_only:
        sys.exit(f"{a.out}: results.json has runs of a base that is gone ({base}): use another --out")
    elif not os.path.exists(base) and not a.table_only:
        os.makedirs(os.path.dirname(base), exist_ok=True)
        if a.base == "supervised":
            cmd = ["train", "--data", SRC] + arch + ["--epochs", str(a.base_epochs),
                   "--batch-size", "128"]
        else:
            cmd = ["train", "--data", a.ssl_data, "--objective", "simclr"] + arch + [
                   "--epochs", str(a.base_epochs), "--batch-size", "256", "--lr", "2e-3",
                   "--weight-decay", "1e-4", "--warmup-epochs", "1", "--val-fraction", "0.02",
                   "--view-min-scale", "0.5"]
        wall = run(xfer + cmd + ["--out", base], base + ".log")
        results["base_wall_seconds"] = wall
    if not (a.scratch_only or a.base_weights) and os.path.exists(base):
        card = json.load(open(os.path.join(base, "card.json")))
        if "base" in results and results["base"].get("id", card["id"]) != card["id"]:
            sys.exit(f"{base} is not the base of the runs in {results_path}: use another --out")
        if "base" not in results:
            results["base"] = {"kind": a.base, "spec": card["data"]["spec"], "arch": card["recipe"]["arch"],
                               "id": card["id"], "val_accuracy": card["metrics"]["val_accuracy"],
                               "wall_seconds": card["metrics"]["wall_seconds"], "epochs": card["recipe"]["epochs"]}

    # Scratch variants: "" (the defaults) and each --scratch-variants flag set.
    variants = [""] + [v.strip() for v in a.scratch_variants.split(";") if v.strip()]
    grid = [(v, lr) for v in variants for lr in [float(x) for x in a.scratch_lrs.split(",") if x]]

    def sname(v, lr):
        return f"scratch{' ' + v if v else ''}/lr={lr:g}"

    def command(name, k, seed):
        # a k-shot run's command without its own flags and output: `xfer train` for "scratch",
        # else `xfer finetune --strategy name`; every run has the same budget and augmentation
        b, epochs = budget(k)
        if name == "scratch":
            cmd = ["train", "--data", TGT, "--shots", str(k), "--seed", str(seed)] + arch + ["--val-fraction", "0"]
        else:
            cmd = ["finetune"] + source + ["--data", TGT, "--shots", str(k), "--seed", str(seed), "--strategy", name]
        return cmd + ["--epochs", str(epochs), "--batch-size", str(b), "--crop-padding", "2"]

    def scratch(k, seed, lr, v=""):
        key = f"{sname(v, lr)}/k={k}/seed={seed}"
        if key in results["runs"] or a.table_only:
            return
        out = os.path.join(a.out, "models", key.replace("/", "_").replace(" ", "_").replace(":", "-"))
        wall = run(xfer + command("scratch", k, seed) + flags_of(v.split()) + [
                           "--lr", str(lr), "--no-checkpoint", "--force", "--out", out], out + ".log")
        evaluate(out, key, wall)

    for k in shots:
        for seed in seeds:
            for s in strategies:
                key = f"{s}/k={k}/seed={seed}"
                if key in results["runs"] or a.table_only:
                    continue
                out = os.path.join(a.out, "models", key.replace("/", "_").replace(":", "-").replace(" ", "_"))
                # "full lr=3e-4 head-lr-scale=10": a strategy with its own finetune flags;
                # "scratch ...": `xfer train` as a column; lr=find: `--lr-find` picks the rate first
                # (its time counts in the run's wall time)
                name, *flags = s.split()
                cmd = command(name, k, seed)
                found, wall = None, 0.0
                if "lr=find" in flags:
                    flags = [f for f in flags if f != "lr=find"]
                    js = out + ".lr-find.json"
                    wall += run(xfer + cmd + flags_of(flags) + ["--lr-find", "--lr-find-json", js], js + ".log")
                    lf = json.load(open(js))
                    found = lf["suggested_lr"] / lf.get("lr_scale", 1.0)
                    flags.append(f"lr={found:.3g}")
                wall += run(xfer + cmd + flags_of(flags) + ["--no-checkpoint", "--force", "--out", out],
                            out + ".log")
                evaluate(out, key, wall, {"lr_found": found} if found else None)
            for v, lr in grid:
                scratch(k, seed, lr, v)

    def stats(prefix, k):
        accs = [results["runs"][f"{prefix}/k={k}/seed={s}"]["accuracy"] for s in seeds
                if f"{prefix}/k={k}/seed={s}" in results["runs"]]
        walls = [results["runs"][f"{prefix}/k={k}/seed={s}"]["wall_seconds"] for s in seeds
                 if f"{prefix}/k={k}/seed={s}" in results["runs"]]
        if not accs:
            return None
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        return statistics.mean(accs), sd, statistics.mean(walls), len(accs)

    def complete(prefix, k):
        st = stats(prefix, k)
        return st is not None and st[3] == len(seeds)

    # Scratch: its own best (variant, learning rate) per k (chosen on the mean over seeds).
    best_lr = {}
    tried = {}
    for k in shots:
        tried[k] = [g for g in grid if complete(sname(*g), k)]
        if not tried[k]:
            sys.exit(f"no scratch run at k={k} in {results_path}")
        best_lr[k] = max(tried[k], key=lambda g: stats(sname(*g), k)[0])
    for k in extra:
        for seed in seeds:
            scratch(k, seed, best_lr[max(shots)][1], best_lr[max(shots)][0])
        # the grid point chosen at the largest k (or, rebuilding a table, whichever points were run)
        tried[k] = [g for g in grid if complete(sname(*g), k)]
        if not tried[k]:
            sys.exit(f"no scratch run at k={k} in {results_path}")
        best_lr[k] = max(tried[k], key=lambda g: stats(sname(*g), k)[0])
    if a.scratch_only:
        return

    rows = ["| k (shots/class) | " + " | ".join(["scratch (best lr)"] + strategies) + " |",
            "|---|" + "---|" * (len(strategies) + 1)]
    summary = {}
    for k in sorted(set(shots) | set(extra)):
        cells = []
        v, lr = best_lr[k]
        sc = stats(sname(v, lr), k)
        summary.setdefault(str(k), {})["scratch"] = {"lr": lr, "variant": v, "mean": sc[0], "std": sc[1],
                                                     "wall": sc[2], "grid": [list(g) for g in tried[k]]}
        cells.append(f"{sc[0]*100:.1f} ± {sc[1]*100:.1f} (lr {lr:g}{', ' + v if v else ''}, best of "
                     f"{len(tried[k])}, {sc[2]:.0f} s)")
        for s in strategies:
            st = stats(s, k)
            if st is None:
                cells.append("-")
                continue
            if st[3] < len(seeds):  # shown, but not a candidate for the best transfer
                cells.append(f"{st[0]*100:.1f} ({st[3]} of {len(seeds)} seeds, {st[2]:.0f} s)")
                continue
            summary[str(k)][s] = {"mean": st[0], "std": st[1], "wall": st[2]}
            cells.append(f"{st[0]*100:.1f} ± {st[1]*100:.1f} ({st[2]:.0f} s)")
        rows.append(f"| {k} | " + " | ".join(cells) + " |")
    bs = results["base"]
    if bs["kind"] == "imported":
        head = (f"Base: imported `{bs['arch']}` {bs['arch_options']} weights {bs['file']} "
                f"(sha256 {bs['sha256'][:16]}...){': ' + bs['note'] if bs.get('note') else ''}.")
    else:
        head = (f"Base: {bs.get('kind', 'supervised')} `{bs.get('arch', 'resnet')}` on `{bs['spec']}`, "
                f"{bs['epochs']} epochs, {bs['wall_seconds']:.0f} s.")
    lines = [head, "",
             "Test accuracy (%) on Fashion-MNIST classes 5-9 (5000 test images), mean ± std over seeds "
             f"{a.seeds}; wall time per run (training + data loading) in parentheses.", ""] + rows + [""]
    saving = {}
    for k in (10, 100):
        if str(k) not in summary:
            continue
        transfer = [s for s in strategies if s in summary[str(k)] and s.split()[0] != "scratch"]
        if not transfer:
            continue
        best = max(transfer, key=lambda s: summary[str(k)][s]["mean"])
        target = summary[str(k)][best]["mean"]
        need = [int(kk) for kk in sorted(summary, key=int) if summary[kk]["scratch"]["mean"] >= target]
        saving[k] = {"best_strategy": best, "accuracy": target, "scratch_shots_needed": need[0] if need else None,
                     "gap_points": (target - summary[str(k)]["scratch"]["mean"]) * 100}
        lines.append(f"At {k} shots: best transfer {best} {target*100:.1f}%, scratch "
                     f"{summary[str(k)]['scratch']['mean']*100:.1f}% (gap {saving[k]['gap_points']:.1f} points); "
                     + (f"scratch needs {need[0]} shots per class to match it."
                        if need else f"scratch does not match it with up to {max(int(x) for x in summary)} shots per class."))
    results["summary"] = summary
    results["label_saving"] = {str(k): v for k, v in saving.items()}
    json.dump(results, open(results_path, "w"), indent=1)
    open(os.path.join(a.out, "table.md"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
