"""Fusion probe: can a temporal fusion module tell motion direction from ideal per-frame features?

The image tower is replaced by an oracle: each frame's feature is a fixed random Fourier code of the object's
position (cos/sin of random projections at 1-3 cycles per frame width; unit scale per dimension, like the tiny
towers' outputs). Only the fusion and the text tower train, with ActionCLIP's KL objective against the prompts
"a video of moving left/right/up/down." (batch 16, lr 3e-4, fusion x10, TSN frame sampling of 8 out of 16).
Direction accuracy on held-out trajectories, chance 0.25:

    python benchmarks/fusion_probe.py                      # every fusion, 1500 steps each, two at a time
    python benchmarks/fusion_probe.py --fusions Transf --frame-position-std 1.0

This isolates the temporal comparator from learning position in the image tower (docs/training.md, "Learning on the
synthetic data"). ``--frame-position-std`` re-draws Transf's frame position table (default: its own init, std 0.02).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import time

DIRECTIONS = ("moving left", "moving right", "moving up", "moving down")
FUSIONS = ("meanP", "Conv1D", "LSTM", "Transf", "Transf_cls")
SIZE, FRAMES, T = 64, 16, 8  # the synthetic generator's defaults; 8 of 16 frames sampled


def trajectories(n_per_class: int, seed: int):
    """Object centres [N, FRAMES, 2] (pixels) and direction labels [N], drawn by the synthetic generator's own
    motion model (start, travel)."""
    import numpy as np
    import torch

    from actionclip.data.synthetic import _motion

    rng = np.random.default_rng(seed)
    pos, labels = [], []
    for c, action in enumerate(DIRECTIONS):
        for _ in range(n_per_class):
            m = _motion(action, FRAMES, SIZE, 0.11 * SIZE, rng)
            pos.append(np.stack([m.cx, m.cy], -1))
            labels.append(c)
    return torch.tensor(np.stack(pos), dtype=torch.float32), torch.tensor(labels)


def run(fusion: str, args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F

    from actionclip import tokenize
    from actionclip.config import preset_config
    from actionclip.model import ActionCLIP
    from actionclip.train.losses import actionclip_kl_loss

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    train_pos, train_y = trajectories(600, args.seed)
    val_pos, val_y = trajectories(100, args.seed + 1)
    cfg = preset_config("tiny-8-32px")
    cfg = dataclasses.replace(cfg, fusion=dataclasses.replace(cfg.fusion, kind=fusion))
    model = ActionCLIP(cfg)
    if args.frame_position_std and hasattr(model.fusion, "frame_position_embeddings"):
        torch.nn.init.normal_(model.fusion.frame_position_embeddings.weight, std=args.frame_position_std)
    half = cfg.embed_dim // 2
    freqs = torch.randint(1, 4, (1, half)).float() * 2 * math.pi / SIZE
    proj = torch.randn(2, half) * freqs

    def code(p: torch.Tensor) -> torch.Tensor:  # [B, T, 2] -> [B, T, D]
        z = p @ proj
        return torch.cat([z.cos(), z.sin()], -1)

    ids = tokenize([f"a video of {c}." for c in DIRECTIONS])
    groups = model.param_groups()
    opt = torch.optim.AdamW([{"params": groups["text"], "lr": args.lr},
                             {"params": groups["fusion"], "lr": args.lr * args.fusion_lr_mult}],
                            betas=(0.9, 0.98), weight_decay=0.05)
    g = torch.Generator().manual_seed(args.seed)
    curve = []
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        idx = torch.randint(len(train_y), (16,), generator=g)
        frames = torch.randint(2, (16, T), generator=g) + torch.arange(0, FRAMES, FRAMES // T)  # TSN: one per segment
        video = F.normalize(model.fusion(code(train_pos[idx[:, None], frames])), dim=-1)
        text = F.normalize(model.encode_text(ids[train_y[idx]]), dim=-1)
        loss = actionclip_kl_loss(video, text, train_y[idx], model.logit_scale.exp())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.eval_every == 0:
            with torch.no_grad():
                video = F.normalize(model.fusion(code(val_pos[:, 1::FRAMES // T])), dim=-1)  # segment midpoints
                text = F.normalize(model.encode_text(ids), dim=-1)
                curve.append(float(((video @ text.t()).argmax(1) == val_y).float().mean()))
    return {"fusion": fusion, "curve": curve, "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fusions", nargs="+", default=list(FUSIONS), choices=FUSIONS)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--fusion-lr-mult", type=float, default=10.0)
    ap.add_argument("--frame-position-std", type=float, default=0.0, help="re-draw Transf's frame positions (0: keep)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parallel", type=int, default=2, help="fusions trained at once (one thread each)")
    ap.add_argument("--one", default="", help=argparse.SUPPRESS)  # child process: train one fusion
    args = ap.parse_args()
    if args.one:
        print("ROW " + json.dumps(run(args.one, args)), flush=True)
        return

    passthrough = [a for a in sys.argv[1:] if a not in ("--fusions", *FUSIONS)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    rows, pending = [], list(args.fusions)
    while pending:
        batch, pending = pending[:args.parallel], pending[args.parallel:]
        procs = [subprocess.Popen([sys.executable, __file__, *passthrough, "--one", f], env=env,
                                  stdout=subprocess.PIPE, text=True) for f in batch]
        for f, proc in zip(batch, procs):
            out, _ = proc.communicate()
            line = [ln for ln in out.splitlines() if ln.startswith("ROW ")]
            if proc.returncode or not line:
                print(f"{f} failed", file=sys.stderr)
                continue
            rows.append(json.loads(line[0][4:]))

    print(f"direction accuracy from oracle position codes (chance 0.25); lr {args.lr}, fusion x{args.fusion_lr_mult}, "
          f"frame position std {args.frame_position_std or 'init'}")
    steps = [str(s) for s in range(args.eval_every, args.steps + 1, args.eval_every)]
    print("| fusion | " + " | ".join(f"step {s}" for s in steps) + " | s |")
    print("|---|" + "---|" * (len(steps) + 1))
    for r in rows:
        print(f"| {r['fusion']} | " + " | ".join(f"{a:.3f}" for a in r["curve"]) + f" | {r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
