"""The optimisation loop shared by pre-training and fine-tuning.

One optimiser step = ``accum_steps`` micro-batches on every rank; the clips of one step over all ranks and
micro-batches number ``batch_size``. Each micro-batch: normalise on device -> (bf16 autocast on CUDA) encode video and
text -> L2-normalise -> all-gather across ranks -> contrastive loss over the global micro-batch -> backward of
``loss * world_size / accum_steps`` (see ``losses``). Then gradient clipping, AdamW, the warm-up + cosine schedule and
CLIP's clamp of the logit scale at 100.

Checkpoints (rank 0 writes, everyone waits) go to ``out_dir/checkpoints`` every ``checkpoint_every`` steps, at every
epoch end and when the run stops; a resumed run (which checkpoint, and whether it may: ``resume``) restores model,
optimiser, schedule, RNG states, the sampler position and the training history. Precision: ``precision``. A non-finite loss or gradient norm stops the run with ``TrainingDivergedError`` after the
last good state (before the bad step) has been checkpointed.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from actionclip.errors import ActionCLIPError, ConfigError
from actionclip.train import checkpointing as ckpt
from actionclip.train.batches import batch_token_ids, collate, device_color_transform
from actionclip.train.config import TrainingConfig
from actionclip.train.data import CachedVideos, RankBatchSampler, SeededClips
from actionclip.train.distributed import DistEnv, barrier
from actionclip.train.losses import gather_features, stage_loss
from actionclip.train.optim import build_optimizer, freeze_towers
from actionclip.train.precision import autocast, autocast_dtype
from actionclip.train.progress import Progress
from actionclip.train.schedule import WarmupCosine
from actionclip.tracking import NullTracker

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps exp(logit_scale) at 100


class TrainingDivergedError(ActionCLIPError):
    """The loss or the gradient norm became NaN/inf; the last good state was checkpointed."""


# A batch (as collated by ``batches.collate``) and the epoch -> (one text per clip, [b] group ids whose equality
# marks positive pairs for the KL loss).
TextFn = Callable[[dict[str, Any], int], tuple[list[str], torch.Tensor]]


@dataclass
class TrainingJob:
    """What a stage hands the loop: clips, how to get their texts, the loss and an optional validation pass."""

    dataset: Dataset
    texts: TextFn
    loss: str
    validate: Callable[[nn.Module], dict[str, float]] | None = None
    # tokens in the longest text ``texts`` can return (0: unknown, e.g. free captions); a compiled run pads every
    # batch to it (else to the context length) so the text shape never changes and dynamo never recompiles
    text_length: int = 0


@dataclass
class TrainOutcome:
    global_step: int
    metrics: dict[str, float]
    history: dict[str, list] = field(default_factory=dict)


class _Objective(nn.Module):
    """What DDP wraps: both towers and the logit scale in one forward, so every parameter's gradient is reduced."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, video: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.model.encode_video(video), self.model.encode_text(ids), self.model.logit_scale.exp()


def train(cfg: TrainingConfig, env: DistEnv, model: nn.Module, job: TrainingJob, tracker: NullTracker,
          state: dict[str, Any] | None = None) -> TrainOutcome:
    """Run (or continue, from ``state``) the optimisation; ``model`` is updated in place and left in eval mode."""
    from actionclip.data import apply_color, normalize_video

    device = env.device
    raw = model.to(device)
    if cfg.freeze:
        freeze_towers(raw, cfg.freeze)
    if cfg.grad_checkpointing:
        raw.set_grad_checkpointing(True)
    opt = build_optimizer(raw, cfg.lr, cfg.visual_lr_mult, cfg.fusion_lr_mult, cfg.weight_decay,
                          tuple(cfg.betas), cfg.eps)
    params = [p for g in opt.param_groups for p in g["params"]]

    if cfg.batch_size % (cfg.accum_steps * env.world_size):
        raise ConfigError(f"batch_size {cfg.batch_size} must divide by accum_steps x ranks "
                          f"= {cfg.accum_steps} x {env.world_size}")
    micro_global = cfg.batch_size // cfg.accum_steps
    sampler = RankBatchSampler(len(job.dataset), micro_global, env.rank, env.world_size, cfg.seed)
    steps_per_epoch = sampler.batches_per_epoch // cfg.accum_steps
    if steps_per_epoch == 0:
        raise ConfigError(f"{len(job.dataset)} training clips are fewer than one batch of {cfg.batch_size}; "
                          "lower --batch-size")
    total_steps = math.ceil(cfg.epochs * steps_per_epoch - 1e-9)
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    sched = WarmupCosine(opt, cfg.warmup_epochs, cfg.epochs, steps_per_epoch)

    epoch, batch_in_epoch, global_step = 0, 0, 0
    history: dict[str, list] = {"steps": [], "epochs": []}
    if state is not None:
        raw.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        epoch = int(state["progress"]["epoch"])
        batch_in_epoch = int(state["progress"]["batch_in_epoch"])
        global_step = int(state["progress"]["global_step"])
        history = state.get("history") or history

    net: nn.Module = _Objective(raw)
    if cfg.compile:
        net = torch.compile(net)
    if env.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(net, device_ids=[device.index] if device.type == "cuda" else None)
    dataset = CachedVideos(job.dataset) if cfg.cache_clips else job.dataset
    seeded = SeededClips(dataset, cfg.seed, color=device_color_transform(cfg, device, job.dataset))
    # The sampler passes the epoch with every index, so workers can persist (and keep their caches).
    loader = DataLoader(seeded, batch_sampler=sampler, num_workers=cfg.num_workers, collate_fn=collate,
                        pin_memory=device.type == "cuda", persistent_workers=cfg.num_workers > 0)
    amp = autocast_dtype(cfg.precision, device)
    ckpt_dir = cfg.output_dir / "checkpoints"

    def save(ep: int, b: int) -> None:
        if env.is_main:
            ckpt.save_checkpoint(ckpt_dir, {
                "model": raw.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "rng": ckpt.capture_rng(),
                "progress": {"epoch": ep, "batch_in_epoch": b, "global_step": global_step},
                "run_id": tracker.run_id, "config": cfg.to_dict(), "history": history,
            }, keep=cfg.keep_checkpoints)
        barrier(env)

    progress = Progress(total_steps, global_step, enabled=env.is_main, quiet=cfg.quiet, desc=cfg.STAGE)
    raw.train()
    num_epochs = math.ceil(cfg.epochs - 1e-9)
    pending_rng = state["rng"] if state is not None else None
    window: list[float] = []
    last_metrics: dict[str, float] = {}
    try:
        while global_step < total_steps and epoch < num_epochs:
            seeded.epoch = epoch
            sampler.set_epoch(epoch, batch_in_epoch)
            it = iter(loader)
            if pending_rng is not None:  # after creating the iterator, which draws from the RNG in both runs
                ckpt.restore_rng(pending_rng)
                pending_rng = None
            epoch_losses: list[float] = []
            while global_step < total_steps and batch_in_epoch + cfg.accum_steps <= sampler.batches_per_epoch:
                t0 = time.perf_counter()
                loss_sum = torch.zeros((), device=device)
                for micro in range(cfg.accum_steps):
                    batch = next(it)
                    texts, groups = job.texts(batch, epoch)
                    video = batch["video"].to(device, non_blocking=True)
                    if "color" in batch:
                        video = apply_color(video, batch["color"])
                    video = normalize_video(video)
                    ids = batch_token_ids(texts, raw.context_length, job.text_length if cfg.compile else None)
                    ids = ids.to(device)
                    last = micro == cfg.accum_steps - 1
                    sync = net.no_sync() if (env.distributed and not last) else nullcontext()
                    with sync:
                        with autocast(amp, device):
                            v, t, scale = net(video, ids)
                        v = gather_features(F.normalize(v.float(), dim=-1))
                        t = gather_features(F.normalize(t.float(), dim=-1))
                        g = gather_features(groups.to(device))
                        loss = stage_loss(job.loss, v, t, g, scale.float())
                        (loss * (env.world_size / cfg.accum_steps)).backward()
                    loss_sum += loss.detach()
                grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
                # the step's one wait for the device: the non-finite check needs both numbers before opt.step()
                step_loss, grad_norm = torch.stack([loss_sum / cfg.accum_steps, grad_norm.float()]).tolist()
                if not (math.isfinite(step_loss) and math.isfinite(grad_norm)):
                    opt.zero_grad(set_to_none=True)
                    save(epoch, batch_in_epoch)
                    what = "loss" if not math.isfinite(step_loss) else "gradient norm"
                    raise TrainingDivergedError(
                        f"non-finite {what} at step {global_step + 1} (loss={step_loss}); the last good state is "
                        f"saved in {ckpt_dir} (try a lower --lr or --grad-clip)"
                    )
                opt.step()
                opt.zero_grad(set_to_none=True)
                sched.step()
                with torch.no_grad():
                    raw.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
                global_step += 1
                batch_in_epoch += cfg.accum_steps
                epoch_losses.append(step_loss)
                window.append(step_loss)
                lr = opt.param_groups[0]["lr"]
                history["steps"].append({"step": global_step, "loss": step_loss, "lr": lr,
                                         "epoch": sched.epoch})
                progress.step(global_step, cfg.batch_size, step_loss, lr)
                if global_step % cfg.log_every == 0 or global_step == total_steps:
                    dt = time.perf_counter() - t0
                    m = {"train_loss": sum(window) / len(window), "grad_norm": grad_norm,
                         "logit_scale": float(raw.logit_scale.detach().exp()), "epoch": sched.epoch,
                         "clips_per_s": progress.clips_per_s, "step_time_s": dt}
                    m.update({f"lr_{grp['name']}": grp["lr"] for grp in opt.param_groups})
                    tracker.log_metrics(m, step=global_step)
                    window = []
                if cfg.checkpoint_every and global_step % cfg.checkpoint_every == 0:
                    save(epoch, batch_in_epoch)
            if batch_in_epoch + cfg.accum_steps > sampler.batches_per_epoch:  # epoch finished
                ep_metrics = {"epoch_train_loss": sum(epoch_losses) / max(len(epoch_losses), 1)}
                if job.validate and (cfg.val_every and ((epoch + 1) % cfg.val_every == 0 or
                                                        global_step >= total_steps)):
                    if env.is_main:
                        raw.eval()
                        ep_metrics.update(job.validate(raw))
                        raw.train()
                    barrier(env)
                history["epochs"].append({"epoch": epoch + 1, "step": global_step, **ep_metrics})
                tracker.log_metrics(ep_metrics, step=global_step)
                progress.epoch_done(epoch + 1, global_step, ep_metrics)
                last_metrics = ep_metrics
                epoch, batch_in_epoch = epoch + 1, 0
                save(epoch, batch_in_epoch)
            else:  # stopped by max_steps inside an epoch
                save(epoch, batch_in_epoch)
        if state is not None and not last_metrics and history["epochs"]:
            last_metrics = {k: v for k, v in history["epochs"][-1].items() if k not in ("epoch", "step")}
    finally:
        progress.close()
    raw.eval()
    steps = history["steps"]
    metrics = {"global_step": float(global_step), "epochs_done": float(steps[-1]["epoch"]) if steps else 0.0,
               "clips_per_s": progress.clips_per_s}
    if steps:
        tail = steps[-min(len(steps), max(steps_per_epoch, 1)):]
        metrics["train_loss"] = sum(s["loss"] for s in tail) / len(tail)
    metrics.update({k: float(v) for k, v in last_metrics.items()})
    return TrainOutcome(global_step=global_step, metrics=metrics, history=history)
