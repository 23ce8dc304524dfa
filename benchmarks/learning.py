"""Learning benchmark: is the training real? (Not a test: it takes minutes and prints a table.)

On the synthetic action dataset (real H.264 clips, one object per clip; "moving left/right/up/down" differ only in
temporal order, since every frame of a "left" clip is distributed like a frame of a "right" clip) with the
tiny-8-32px preset on CPU (one torch thread per arm process, two arms at a time):

* finetune-Transf and finetune-meanP (in parallel): ActionCLIP fine-tuning (KL objective, random template per clip)
  from random init (CLIP's initialisation), with the Transf fusion and with meanP (a frame average: blind to
  temporal order);
* caption-pretrain (then): CLIP InfoNCE on the captions of the "pretrain" + "train" splits from random init; the
  captions mention every action, held-out ones included, but held-out classes are never fine-tuned on.

Each model is then evaluated (val top-1/top-5, accuracy on the four direction classes, zero-shot top-1 on the
held-out classes vs chance). Budgets are optimiser steps. ``--init caption`` fine-tunes from the caption-pre-trained
towers instead of random init (the caption arm then runs first).

    python benchmarks/learning.py --work /tmp/learning

On the 2-core machine the two fine-tuning arms take about 12 minutes side by side and the caption arm about 22
(5000 steps of 32 clips with both threads; its zero-shot needs that many clips, a batch of 16 reached only 0.41).

Timings on a shared 2-core machine are noisy; the accuracies are what this measures. They also vary by seed (when
the image tower starts to localise the object decides the direction classes): compare recipes over several
``--seed`` values on the same prepared data, not single runs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DIRECTIONS = ("moving left", "moving right", "moving up", "moving down")
CLASSES = ("moving left", "moving right", "moving up", "moving down", "growing", "shrinking", "rotating", "blinking",
           "standing still", "shaking", "bouncing")
HELDOUT = ("standing still", "shaking", "bouncing")
ARMS = ("finetune-Transf", "finetune-meanP", "caption-pretrain")
# the recipe measured in docs/training.md ("Learning on the synthetic data")
MODEL = "tiny-8-32px"
FUSION_LR_MULT = 10.0


def run_arm(arm: str, args: argparse.Namespace, prepared: Path, work: Path) -> dict:
    """Train one arm and evaluate it; returns the table row."""
    from actionclip.train import EvaluateConfig, FinetuneConfig, PretrainConfig, evaluate, finetune, pretrain

    splits = json.loads((prepared / "summary.json").read_text())["splits"]
    # the caption arm always runs alone, so it gets both arms' threads
    threads = args.threads * (2 if arm == "caption-pretrain" else 1)
    common = dict(data=str(prepared), tracking=False, quiet=True, threads=threads, seed=args.seed)
    # flips would swap "moving left" and "moving right", so they stay off whatever --augment says
    train = dict(common, lr=args.lr, fusion_lr_mult=args.fusion_lr_mult, weight_decay=args.weight_decay, num_workers=0,
                 augment=args.augment, flip=False, color_jitter=False, multiscale_crop=args.multiscale_crop,
                 cache_clips=True, resume="never", log_every=50)
    t0 = time.perf_counter()
    if arm == "caption-pretrain":
        n = splits.get("pretrain", 0) + splits["train"]
        ep = args.pretrain_steps / max(1, n // args.pretrain_batch)
        res = pretrain(PretrainConfig(**dict(train, lr=args.pretrain_lr), model=args.model, out_dir=str(work / arm),
                                      epochs=ep, warmup_epochs=ep / 20, batch_size=args.pretrain_batch,
                                      max_steps=args.pretrain_max_steps,
                                      val_every=max(1, int(ep) // 6)))
    else:
        fusion = arm.split("-")[1]
        # start from the caption-pre-trained towers when given (the fusion is swapped in for meanP), else random
        init = pretrain(PretrainConfig(**common, model=args.init_model or args.model, fusion=fusion,
                                       out_dir=str(work / f"init-{fusion}")))
        ep = args.finetune_steps / max(1, splits["train"] // args.batch_size)
        res = finetune(FinetuneConfig(**train, loss=args.loss, model=init.paths["model"], out_dir=str(work / arm),
                                      epochs=ep, warmup_epochs=ep / 20, batch_size=args.batch_size,
                                      val_every=max(1, int(ep) // 6)))
    seconds = time.perf_counter() - t0
    ev = evaluate(EvaluateConfig(**common, model=res.paths["model"], out_dir=str(work / f"eval-{arm}"),
                                 num_workers=0, batch_size=32))
    full = json.loads(Path(ev.paths["metrics"]).read_text())
    # a direction held out for zero-shot has no fine-tuning accuracy
    direction = [full["per_class"][c] for c in DIRECTIONS if c in full["per_class"]]
    return {"run": arm, "steps": int(res.metrics["global_step"]), "train_s": seconds,
            "final_train_loss": res.metrics.get("train_loss", float("nan")), "val_top1": full["top1"],
            "val_top5": full["top5"], "direction_acc": sum(direction) / max(len(direction), 1),
            "heldout_zero_shot": full.get("zero_shot_top1", float("nan")), "chance_heldout": 1 / len(args.heldout)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/actionclip-learning")
    ap.add_argument("--clips-per-class", type=int, default=500, help="train + val clips per class (val: 20%%)")
    ap.add_argument("--pretrain-clips-per-class", type=int, default=100)
    ap.add_argument("--finetune-steps", type=int, default=5000)
    ap.add_argument("--pretrain-steps", type=int, default=5000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--pretrain-batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1.5e-4,
                    help="fine-tuning learning rate (towers; fusion x --fusion-lr-mult)")
    ap.add_argument("--pretrain-lr", type=float, default=1.5e-4, help="caption pre-training learning rate")
    ap.add_argument("--pretrain-max-steps", type=int, default=0,
                    help="stop caption pre-training after this many steps; the schedule still spans --pretrain-steps")
    ap.add_argument("--fusion-lr-mult", type=float, default=FUSION_LR_MULT)
    ap.add_argument("--model", default=MODEL, help="preset (or model) every arm starts from")
    ap.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                    help="random TSN frames + crops (never flips; no colour jitter)")
    ap.add_argument("--multiscale-crop", action=argparse.BooleanOptionalAction, default=False,
                    help="ActionCLIP's multi-scale crops when augmenting (off: the whole frame)")
    ap.add_argument("--loss", default="kl", choices=("kl", "infonce"), help="fine-tuning objective")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per arm process")
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--heldout", nargs="+", default=list(HELDOUT), choices=CLASSES, metavar="ACTION",
                    help="actions kept out of fine-tuning and scored zero-shot (fixed when the data is generated)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument("--init", default="random", choices=("random", "caption"),
                    help="fine-tune from random init or from the caption-pretrain arm's towers")
    ap.add_argument("--init-model", default="", help=argparse.SUPPRESS)  # child process: the model to start from
    ap.add_argument("--arm", default="", help=argparse.SUPPRESS)  # child process: run one arm
    args = ap.parse_args()

    work = Path(args.work)
    prepared = work / "prepared"
    if args.arm:
        print("ROW " + json.dumps(run_arm(args.arm, args, prepared, work)), flush=True)
        return

    from actionclip.data import generate_synthetic, prepare_dataset

    if not (prepared / "summary.json").is_file():
        src = generate_synthetic(work / "videos", classes=CLASSES, heldout=args.heldout,
                                 clips_per_class=args.clips_per_class,
                                 pretrain_clips_per_class=args.pretrain_clips_per_class, seed=args.seed, workers=2)
        prepare_dataset(src, prepared, val_fraction=0.2, workers=2, progress=False)
    splits = json.loads((prepared / "summary.json").read_text())["splits"]

    env = dict(os.environ, OMP_NUM_THREADS=str(2 * args.threads))
    t0 = time.perf_counter()
    rows = []

    def launch(arms: list[str], init: str) -> None:
        """Run arms as parallel processes and collect their rows."""
        extra = ["--init-model", init] if init else []
        passthrough = [a for a in sys.argv[1:] if a not in ("--arms", *ARMS)]
        procs = {}
        for arm in arms:
            log = open(work / f"{arm}.log", "w")
            procs[arm] = (subprocess.Popen([sys.executable, __file__, *passthrough, *extra, "--work", str(work),
                                            "--arm", arm], env=env, stdout=subprocess.PIPE, stderr=log, text=True), log)
        for arm, (proc, log) in procs.items():
            out, _ = proc.communicate()
            log.close()
            line = [ln for ln in out.splitlines() if ln.startswith("ROW ")]
            if proc.returncode or not line:
                print(f"{arm} failed (see {work / (arm + '.log')})", file=sys.stderr)
                continue
            rows.append(json.loads(line[0][4:]))

    finetunes = [a for a in args.arms if a != "caption-pretrain"]
    init = ""
    if args.init == "caption":  # caption pre-training first, then both fine-tunings from its towers, in parallel
        launch(["caption-pretrain"], "")
        init = str(work / "caption-pretrain" / "model")
        launch(finetunes, init)
    else:  # both fine-tunings from random init in parallel, then caption pre-training
        launch(finetunes, "")
        if "caption-pretrain" in args.arms:
            launch(["caption-pretrain"], "")
    wall = time.perf_counter() - t0

    print(f"synthetic: {len(CLASSES) - len(args.heldout)} fine-tuning classes + held-out {', '.join(args.heldout)}; "
          f"splits {splits}; "
          f"{args.model}; augment {args.augment}; loss {args.loss}; fine-tune batch {args.batch_size}, "
          f"caption batch {args.pretrain_batch}, lr {args.lr} (fusion x{args.fusion_lr_mult}), caption lr "
          f"{args.pretrain_lr}; "
          f"fine-tuned from {init or 'random init'}; {args.threads} thread(s) per arm, wall {wall:.0f} s")
    cols = ("run", "steps", "train_s", "final_train_loss", "val_top1", "val_top5", "direction_acc",
            "heldout_zero_shot", "chance_heldout")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.0f}" if c == "train_s" else f"{r[c]:.3f}" if isinstance(r[c], float)
                                 else str(r[c]) for c in cols) + " |")


if __name__ == "__main__":
    main()
