"""Learning benchmark: is the training real? (Not a test: it takes minutes and prints a table.)

On the synthetic action dataset (real H.264 clips; one object per clip; "moving left/right/up/down" differ only in
temporal order) with the tiny-8 preset, on CPU:

1. caption pre-training from random init (CLIP InfoNCE on the "pretrain" + "train" captions, which mention every
   action, held-out ones included) -> zero-shot accuracy on the held-out classes (never fine-tuned on);
2. fine-tuning with ActionCLIP's objective and the Transf fusion -> val top-1 (target >= 0.90);
3. the same fine-tuning with meanP fusion (frame average: blind to temporal order) -> the direction classes show
   what temporal modelling buys.

Budgets are in optimiser steps (direction is learned only after several hundred steps). Run:

    OMP_NUM_THREADS=1 python benchmarks/learning.py --work /tmp/learning

Timings on a shared 2-core machine are noisy; the accuracies are what this measures.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

DIRECTIONS = ("moving left", "moving right", "moving up", "moving down")
CLASSES = ("moving left", "moving right", "moving up", "moving down", "growing", "shrinking", "rotating", "blinking",
           "standing still", "shaking", "bouncing")
HELDOUT = ("standing still", "shaking", "bouncing")


def epochs_for(steps: int, clips: int, batch: int) -> float:
    return steps / max(clips // batch, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/actionclip-learning")
    ap.add_argument("--clips-per-class", type=int, default=30)
    ap.add_argument("--pretrain-clips-per-class", type=int, default=12)
    ap.add_argument("--pretrain-steps", type=int, default=500)
    ap.add_argument("--finetune-steps", type=int, default=700)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--fusion-lr-mult", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from actionclip.data import generate_synthetic, prepare_dataset
    from actionclip.train import EvaluateConfig, FinetuneConfig, PretrainConfig, evaluate, finetune, pretrain

    work = Path(args.work)
    prepared = work / "prepared"
    if not (prepared / "summary.json").is_file():
        src = generate_synthetic(work / "videos", classes=CLASSES, heldout=HELDOUT, clips_per_class=args.clips_per_class,
                                 pretrain_clips_per_class=args.pretrain_clips_per_class, seed=args.seed, workers=2)
        prepare_dataset(src, prepared, val_fraction=0.2, workers=2, progress=False)
    summary = json.loads((prepared / "summary.json").read_text())
    splits = summary["splits"]
    common = dict(data=str(prepared), tracking=False, quiet=True, threads=args.threads, seed=args.seed)
    train_common = dict(common, batch_size=args.batch_size, lr=args.lr, fusion_lr_mult=args.fusion_lr_mult,
                        num_workers=args.workers, augment=True, flip=False, color_jitter=False, log_every=50)
    rows = []

    def run_eval(name: str, model_dir: str, steps: int, seconds: float) -> dict:
        m = evaluate(EvaluateConfig(**common, model=model_dir, out_dir=str(work / f"eval-{name}"), num_workers=0,
                                    batch_size=32, plots=True)).metrics
        full = json.loads((work / f"eval-{name}" / "metrics.json").read_text())
        direction = [full["per_class"][c] for c in DIRECTIONS if c in full["per_class"]]
        row = {"run": name, "steps": steps, "train_s": seconds, "val_top1": m["top1"], "val_top5": m["top5"],
               "direction_acc": sum(direction) / len(direction), "heldout_zero_shot": m.get("zero_shot_top1", math.nan),
               "chance_heldout": 1 / len(HELDOUT)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        return row

    # 0. random init: zero-shot is chance
    init = pretrain(PretrainConfig(**common, model="tiny-8", out_dir=str(work / "init")))
    run_eval("random-init", init.paths["model"], 0, 0.0)

    # 1. caption pre-training
    n_pre = splits.get("pretrain", 0) + splits["train"]
    t = time.perf_counter()
    pre = pretrain(PretrainConfig(**train_common, model=init.paths["model"], out_dir=str(work / "pretrain"),
                                  epochs=epochs_for(args.pretrain_steps, n_pre, args.batch_size),
                                  warmup_epochs=epochs_for(args.pretrain_steps // 20, n_pre, args.batch_size),
                                  val_every=10**6, resume="never"))
    run_eval("caption-pretrain", pre.paths["model"], int(pre.metrics["global_step"]), time.perf_counter() - t)

    # 2./3. fine-tune with Transf, and with meanP (fusion swapped in on the same pre-trained towers)
    meanp = pretrain(PretrainConfig(**common, model=pre.paths["model"], fusion="meanP", out_dir=str(work / "meanp")))
    for name, model_dir in (("finetune-Transf", pre.paths["model"]), ("finetune-meanP", meanp.paths["model"])):
        t = time.perf_counter()
        ft = finetune(FinetuneConfig(**train_common, model=model_dir, out_dir=str(work / name),
                                     epochs=epochs_for(args.finetune_steps, splits["train"], args.batch_size),
                                     warmup_epochs=epochs_for(args.finetune_steps // 20, splits["train"],
                                                              args.batch_size),
                                     val_every=10**6, resume="never"))
        run_eval(name, ft.paths["model"], int(ft.metrics["global_step"]), time.perf_counter() - t)

    print()
    print(f"synthetic: {len(CLASSES) - len(HELDOUT)} fine-tuning classes, {len(HELDOUT)} held-out; splits {splits}; "
          f"batch {args.batch_size}, lr {args.lr}, tiny-8, CPU threads {args.threads}")
    cols = ("run", "steps", "train_s", "val_top1", "val_top5", "direction_acc", "heldout_zero_shot", "chance_heldout")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) and c != "train_s" else
                                 (f"{r[c]:.0f}" if c == "train_s" else str(r[c])) for c in cols) + " |")


if __name__ == "__main__":
    main()
