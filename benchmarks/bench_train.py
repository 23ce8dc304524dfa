"""Training throughput and peak memory per preset (one optimiser step = forward + backward + AdamW on a batch).

CPU: float32. CUDA (when available): bf16 autocast, peak allocated memory and MFU = counted FLOPs per step
(torch.utils.flop_counter, forward + backward) x steps/s / peak bf16 FLOP/s (--peak-tflops, default H100 SXM dense
989). With --data DIR (a prepared dataset) it also measures the training data pipeline (decode + augment, clips/s
with --workers loader processes), to see whether it keeps up; ``--color-on device`` leaves colour jitter to the
device as the trainer does on CUDA and also times that. Each preset runs in its own process so peak memory is its
own.

    python benchmarks/bench_train.py --presets tiny-8 ViT-B/32-8 --batch-size 8 --steps 3
    python benchmarks/bench_train.py --presets ViT-B/16-8 --batch-size 64 --device cuda --compile \
        --data prepared/ --workers 14 --color-on device
    python benchmarks/bench_train.py --presets ViT-B/16-8 --batch-size 64 --device cuda \
        --compile max-autotune-no-cudagraphs --compile-scope blocks     # regional: one block compiled per tower

``warmup_s`` is the time of the two untimed warm-up steps, i.e. mostly compilation when compiling.

Timings on a shared machine are noisy; the table says which device and thread count produced them.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def compile_blocks(model, mode: str | None) -> None:
    """Regional compilation: compile each transformer block in place (timm's ViT blocks, the text and fusion
    towers' CLIP blocks) instead of the whole model. Identical blocks share one compiled graph, so compilation (and
    max-autotune's tuning) costs about one block per tower; on CPU it halved ViT-B/32-8's warm-up (64 -> 33 s)
    at the same step time."""
    import timm.models.vision_transformer as vt

    from actionclip.layers import ResidualAttentionBlock

    for m in model.modules():
        if isinstance(m, (vt.Block, ResidualAttentionBlock)):
            m.compile(mode=mode)


def measure(preset: str, batch: int, steps: int, device_name: str, grad_ckpt: bool, compile_mode: str,
            compile_scope: str = "model") -> dict:
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from actionclip import create_model, tokenize, trim_padding
    from actionclip.train.losses import actionclip_kl_loss
    from actionclip.train.optim import build_optimizer
    from actionclip.train.precision import autocast, autocast_dtype
    from actionclip.train.distributed import resolve_device

    device = resolve_device(device_name)
    model = create_model(preset).to(device).train()
    if grad_ckpt:
        model.set_grad_checkpointing(True)
    opt = build_optimizer(model, 5e-6)
    T, S = model.num_frames, model.image_size
    video = torch.randn(batch, T, 3, S, S, device=device)
    labels = torch.arange(batch, device=device) % max(batch // 2, 1)
    ids = trim_padding(tokenize([f"a video of action number {int(i)}" for i in labels],
                                context_length=model.context_length)).to(device)  # as the trainer does
    amp = autocast_dtype("auto", device)

    def step(fwd) -> None:
        with autocast(amp, device):
            v, t = fwd(video, ids)
        loss = actionclip_kl_loss(F.normalize(v.float(), dim=-1), F.normalize(t.float(), dim=-1), labels,
                                  model.logit_scale.exp())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    # FLOPs are counted on the eager model: the count is the same, and a dispatch mode around a compiled graph
    # sends it back through dynamo (measured: the timed steps then ran 45 % slower on an H200).
    with FlopCounterMode(display=False) as counter:
        step(model)
    flops = counter.get_total_flops()
    mode = None if compile_mode == "default" else compile_mode
    fwd = model
    if compile_mode and compile_scope == "blocks":
        compile_blocks(model, mode)
    elif compile_mode:
        fwd = torch.compile(model, mode=mode)
    t_warm = time.perf_counter()
    for _ in range(2):  # warm-up: allocations, autotuning, compilation of forward then backward
        step(fwd)
    sync()
    warmup_s = time.perf_counter() - t_warm
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step(fwd)
    sync()
    dt = (time.perf_counter() - t0) / steps
    out = {"preset": preset, "device": str(device), "dtype": "bf16" if amp else "fp32", "batch": batch,
           "threads": torch.get_num_threads(), "step_s": dt, "clips_per_s": batch / dt,
           "tflop_per_step": flops / 1e12, "achieved_tflops": flops / dt / 1e12,
           "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
           "compile": f"{compile_mode}/{compile_scope}" if compile_mode else "eager", "warmup_s": warmup_s}
    if device.type == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        out["gpu"] = torch.cuda.get_device_name()
    else:
        out["peak_mem_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)
    return out


def measure_data(data: str, preset: str, batch: int, workers: int, batches: int, color_on: str,
                 device_name: str) -> dict:
    """Clips/s of the training input pipeline (ActionCLIP's full augmentation); with ``color_on="device"`` the
    workers leave colour jitter to the device and its time per batch there is measured too."""
    import torch
    from torch.utils.data import DataLoader

    from actionclip import preset_config
    from actionclip.data import PreparedDataset, TrainTransform, VideoClipDataset, apply_color
    from actionclip.train.distributed import resolve_device
    from actionclip.train.batches import collate as _collate
    from actionclip.train.data import SeededClips

    cfg = preset_config(preset)
    ds = PreparedDataset.load(data)
    transform = TrainTransform(cfg.vision.image_size, color_on_device=color_on == "device")
    clips = VideoClipDataset(ds.rows("train"), ds.labels, cfg.num_frames, cfg.vision.image_size, mode="train",
                             transform=transform)
    # the trainer's own item wrapper and batch layout (with "color" draws when they are left to the device)
    seeded = SeededClips(clips, seed=0, color=transform if color_on == "device" else None)
    loader = DataLoader(seeded, batch_size=batch, shuffle=True, num_workers=workers, collate_fn=_collate,
                        drop_last=True, persistent_workers=workers > 0)

    def batches_forever():
        while True:
            yield from loader

    it = batches_forever()
    # Workers start and fill their prefetch queues (2 batches each) during the warm-up; timing only later batches
    # measures the decode rate, not the queue draining.
    for _ in range(2 * max(workers, 1) + 1):
        next(it)
    n, t0 = 0, time.perf_counter()
    for _ in range(max(batches, 2 * workers)):
        b = next(it)
        n += len(b["label"])
    out = {"loader_clips_per_s": n / (time.perf_counter() - t0), "workers": workers, "color_on": color_on}
    if color_on == "device":
        device = resolve_device(device_name)
        video = b["video"].to(device)
        apply_color(video, b["color"])  # warm-up
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        for _ in range(5):
            apply_color(video, b["color"])
        sync()
        out["device_color_ms"] = (time.perf_counter() - t0) / 5 * 1e3
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["tiny-8", "ViT-B/32-8"])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3, help="timed optimiser steps (0: only the data pipeline)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--grad-checkpointing", action="store_true")
    ap.add_argument("--compile", nargs="?", const="default", default="",
                    help="torch.compile the model, optionally with a mode (max-autotune-no-cudagraphs, ...)")
    ap.add_argument("--compile-scope", default="model", choices=("model", "blocks"),
                    help="compile the whole model (one graph) or each transformer block (regional: faster to compile)")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="accelerator peak bf16 dense TFLOP/s for MFU")
    ap.add_argument("--data", default="", help="prepared dataset: also measure the training data pipeline")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--color-on", default="loader", choices=("loader", "device"),
                    help="data pipeline: colour jitter in the loader workers or on the device (as --color-on)")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        res = {"preset": args.child, "batch": args.batch_size}
        if args.steps:
            res.update(measure(args.child, args.batch_size, args.steps, args.device, args.grad_checkpointing,
                               args.compile, args.compile_scope))
        if args.data:
            res.update(measure_data(args.data, args.child, args.batch_size, args.workers, max(args.steps, 8),
                                    args.color_on, args.device))
        print("RESULT " + json.dumps(res), flush=True)
        return

    rows = []
    for preset in args.presets:
        cmd = [sys.executable, __file__, "--child", preset, "--batch-size", str(args.batch_size), "--steps",
               str(args.steps), "--device", args.device, "--workers", str(args.workers), "--color-on", args.color_on]
        cmd += ["--data", args.data] if args.data else []
        cmd += ["--grad-checkpointing"] if args.grad_checkpointing else []
        cmd += ["--compile", args.compile, "--compile-scope", args.compile_scope] if args.compile else []
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not line:
            print(f"{preset}: failed\n{proc.stderr[-1500:]}", file=sys.stderr)
            continue
        r = json.loads(line[0][7:])
        if r.get("device", "").startswith("cuda"):
            r["mfu"] = r["achieved_tflops"] / args.peak_tflops
        rows.append(r)
    cols = ["preset", "device", "dtype", "compile", "warmup_s", "batch", "threads", "step_s", "clips_per_s",
            "tflop_per_step", "achieved_tflops", "mfu", "peak_mem_gib", "loader_clips_per_s", "workers", "color_on",
            "device_color_ms"]
    cols = [c for c in cols if any(c in r for r in rows)]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
