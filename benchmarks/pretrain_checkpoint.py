"""The shipped start checkpoint (``actionclip.pretrained``, "synthetic-captions"): reproduce it from scratch, pack
it, and compare a fresh run with the shipped one. (Not a test: the caption pre-training takes 15-60 minutes of two
CPU cores; it prints a table.)

Recipe: ``benchmarks/learning.py``'s caption-pretrain arm (tiny-8-32px from random init, CLIP InfoNCE on the captions
of the synthetic "pretrain" + "train" splits, 32 clips per step, lr 1.5e-4 with fusion x10, a 5000-step cosine
schedule, stopped after ``--max-steps``), on the benchmark's data (11 actions; standing still, shaking and bouncing
are never fine-tuned on; ``--seed`` also seeds the data).

    python benchmarks/pretrain_checkpoint.py --work /tmp/ckpt                 # train, pack, compare with shipped
    python benchmarks/pretrain_checkpoint.py --work /tmp/ckpt --ship          # ... and replace the shipped one

Packing: the final training checkpoint's model weights, with the rows of the token embedding that got no gradient
(the optimiser's second moment is zero) and that no default template or synthetic label uses set to zero, as one
gzip-compressed safetensors file; ``card.json`` records the recipe, seed, commit, data hash, sha256 and the packed
model's zero-shot numbers (evaluated here, on the benchmark's val split of the 8 seen actions and its held-out split).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAME = "synthetic-captions"


def keep_rows(optimizer_state: dict, shape: tuple[int, int]) -> "set[int]":
    """Token ids whose embedding row trained (non-zero Adam second moment) or that the pipeline's texts use."""
    import torch

    from actionclip import TEMPLATES
    from actionclip.data.synthetic import PHRASES
    from actionclip.tokenizer import tokenize

    keep: set[int] = {0}
    for st in optimizer_state["state"].values():
        sq = st.get("exp_avg_sq")
        if sq is not None and tuple(sq.shape) == shape:
            keep |= set(torch.nonzero(sq.abs().sum(1) > 0).flatten().tolist())
    texts = [t.format(label) for t in TEMPLATES for label in PHRASES] + list(PHRASES)
    keep |= set(tokenize(texts, truncate=True).flatten().tolist())
    return keep


def pack(checkpoint: Path, out: Path) -> dict:
    """Write config.json + model.safetensors.gz from a training checkpoint; returns sha256, sizes, kept rows."""
    import torch
    from safetensors.torch import save

    import actionclip

    ck = torch.load(checkpoint, weights_only=True, map_location="cpu")
    cfg = ck["config"]
    model = actionclip.load(cfg["model"])  # the preset: architecture only
    model.load_state_dict(ck["model"])
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
    emb = state["text.token_embedding.weight"]
    keep = keep_rows(ck["optimizer"], tuple(emb.shape))
    mask = torch.zeros(emb.shape[0], dtype=torch.bool)
    mask[sorted(keep)] = True
    state["text.token_embedding.weight"] = emb * mask[:, None]
    raw = save(state, metadata={"format": "actionclip", "config": json.dumps(model.config.to_dict())})
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(model.config.to_json() + "\n")
    with gzip.GzipFile(out / "model.safetensors.gz", "wb", compresslevel=9, mtime=0) as fh:
        fh.write(raw)
    # a plain save_pretrained folder beside it, for evaluation
    (out / "unpacked").mkdir(exist_ok=True)
    (out / "unpacked" / "model.safetensors").write_bytes(raw)
    (out / "unpacked" / "config.json").write_text(model.config.to_json() + "\n")
    return {"sha256": hashlib.sha256(raw).hexdigest(), "raw_bytes": len(raw),
            "packed_bytes": (out / "model.safetensors.gz").stat().st_size, "embedding_rows_kept": len(keep),
            "global_step": int(ck["progress"].get("global_step", 0)) if isinstance(ck.get("progress"), dict) else None,
            "config": cfg}


def zero_shot(model_dir: Path, prepared: Path, out: Path, threads: int) -> dict:
    """Zero-shot top-1 of a model on the benchmark's val (8 seen actions) and held-out (3 actions) splits."""
    from actionclip.train import EvaluateConfig, evaluate

    ev = evaluate(EvaluateConfig(data=str(prepared), model=str(model_dir), out_dir=str(out), tracking=False,
                                 quiet=True, threads=threads, num_workers=0, batch_size=32, plots=False))
    m = json.loads(Path(ev.paths["metrics"]).read_text())
    return {"val_zero_shot_top1": m["top1"], "heldout_zero_shot_top1": m["zero_shot_top1"],
            "heldout_chance": m["zero_shot_chance"], "heldout_per_class": m["zero_shot_per_class"]}


def model_card(c: dict) -> str:
    """MODEL_CARD.md from card.json."""
    z, r, d = c["zero_shot"], c["recipe"], c["data"]
    per = ", ".join(f"{k} {v:.2f}" for k, v in z["heldout_per_class"].items())
    return f"""# {c['name']}: tiny-8-32px caption-pre-trained on synthetic actions

The start checkpoint of the demo pipeline (`actionclip pipeline run`, `--weights shipped:{c['name']}`), playing the
part CLIP plays for ActionCLIP. Produced by this project's own `actionclip pretrain`; not a model of real videos.

* **Model**: preset `{c['preset']}` (2-layer image and text towers, width 128, 32 px frames, 8 px patches, 8
  frames, Transf fusion), {c['raw_bytes'] / 1e6:.1f} MB of float32 safetensors, shipped gzip-compressed
  ({c['packed_bytes'] / 1e6:.1f} MB, sha256 of the safetensors file `{c['sha256']}`).
* **Recipe**: from random init (CLIP's initialisation), CLIP's symmetric InfoNCE on captions, batch
  {r['batch_size']}, AdamW lr {r['lr']} (fusion x{r['fusion_lr_mult']}), weight decay {r['weight_decay']}, warm-up
  5 % then cosine over a {r['schedule_steps']}-step schedule, **stopped at step {r['steps']}**; random TSN frames,
  no flips, no colour jitter, `--cache-clips`, {r['threads']} torch threads, seed {c['seed']}.
  Reproduce: `{r['command']}` (commit `{c['commit']}`).
* **Data**: `benchmarks/learning.py`'s synthetic set (seeded by the seed above; dataset hash
  `{d['dataset_hash'][:16]}`), splits {d['splits']}. Captions of the `pretrain` and `train` splits only, which name
  every action including the held-out ones ({', '.join(d['heldout'])}); no held-out clip of the `heldout` split and
  no `val` clip was trained on. The generator seeds each clip by (seed, action, index, kind): a demo run with
  another `--seed` sees none of these clips; with the same seed its val clips are clips captioned here (its
  held-out clips are still unseen), so demo measurements use other seeds.
* **Token embedding**: the {c['embedding_rows_kept']} rows of tokens that the captions trained or that a default
  template or synthetic label uses are kept; all other rows are zero (they were never trained: random
  initialisation), which is what lets the file compress. A prompt with other words still runs, but those words carry
  no meaning for this model.
* **Zero-shot** (this checkpoint alone, ActionCLIP's 16 templates, 1 view): {z['val_zero_shot_top1']:.3f} top-1 on the
  8 seen actions (val split, chance 0.125); **{z['heldout_zero_shot_top1']:.3f}** on the 3 held-out actions
  (chance {z['heldout_chance']:.3f}; {per}).
"""


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def newest_checkpoint(run_dir: Path) -> Path:
    ckpts = sorted((run_dir / "checkpoints").glob("step-*.pt"))
    if not ckpts:
        raise SystemExit(f"no training checkpoint in {run_dir / 'checkpoints'}")
    return ckpts[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/actionclip-pretrain-checkpoint")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5000, help="length of the cosine schedule (optimiser steps)")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: the whole schedule)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the caption arm uses twice this)")
    ap.add_argument("--ship", action="store_true", help="replace the shipped checkpoint with this run's")
    args = ap.parse_args()

    from actionclip.pretrained import card as shipped_card
    from actionclip.pretrained import shipped_dir, shipped_path

    work = Path(args.work)
    run_dir = work / "caption-pretrain"
    t0 = time.perf_counter()
    if not list((run_dir / "checkpoints").glob("step-*.pt")):
        cmd = [sys.executable, str(HERE / "learning.py"), "--work", str(work), "--arms", "caption-pretrain",
               "--seed", str(args.seed), "--pretrain-steps", str(args.steps), "--threads", str(args.threads)]
        if args.max_steps:
            cmd += ["--pretrain-max-steps", str(args.max_steps)]
        subprocess.run(cmd, check=True, env=dict(os.environ, OMP_NUM_THREADS=str(2 * args.threads)))
    train_s = time.perf_counter() - t0
    ckpt = newest_checkpoint(run_dir)
    packed = pack(ckpt, work / "packed")
    fresh = zero_shot(work / "packed" / "unpacked", work / "prepared", work / "eval-packed", 2 * args.threads)
    summary = json.loads((work / "prepared" / "summary.json").read_text())
    cfg = packed.pop("config")
    new_card = {
        "name": NAME, "preset": "tiny-8-32px", "seed": args.seed, "commit": commit(),
        "recipe": {"command": f"python benchmarks/pretrain_checkpoint.py --seed {args.seed} --steps {args.steps}"
                              + (f" --max-steps {args.max_steps}" if args.max_steps else ""),
                   "loss": cfg.get("loss"), "lr": cfg.get("lr"), "fusion_lr_mult": cfg.get("fusion_lr_mult"),
                   "batch_size": cfg.get("batch_size"), "weight_decay": cfg.get("weight_decay"),
                   "schedule_steps": args.steps, "steps": packed["global_step"], "threads": 2 * args.threads},
        "data": {"generator": "actionclip.data.generate_synthetic (benchmarks/learning.py defaults)",
                 "dataset_hash": summary["dataset_hash"], "splits": summary["splits"],
                 "heldout": sorted(summary["per_label"].get("heldout", {}))},
        "zero_shot": fresh, **packed,
    }
    rows = [("fresh run", new_card)]
    try:
        old = shipped_card(NAME)
        rows.append(("shipped", old))
        # the shipped weights, decompressed and scored on this run's data
        shipped = shipped_path(NAME, cache_dir=work)
        shipped_scores = zero_shot(shipped, work / "prepared", work / "eval-shipped",
                                   2 * args.threads)
        rows.append(("shipped, scored here", {**old, "zero_shot": shipped_scores}))
        import torch
        from safetensors.torch import load_file

        a = load_file(str(work / "packed" / "unpacked" / "model.safetensors"))
        b = load_file(str(shipped / "model.safetensors"))
        if a.keys() != b.keys():
            print(f"fresh vs shipped: different tensors {sorted(a.keys() ^ b.keys())}")
        else:
            diff = max(float((a[k] - b[k]).abs().max()) for k in a)
            print(f"fresh vs shipped weights: {len(a)} tensors, max |difference| {diff:.3g}; file sha256 "
                  + ("identical" if old["sha256"] == new_card["sha256"] else "differs"))
        # the sha256 covers the safetensors header too: name the config fields that differ there
        fresh_cfg = json.loads((work / "packed" / "config.json").read_text())
        shipped_cfg = json.loads((shipped / "config.json").read_text())
        for tower in sorted(set(fresh_cfg) | set(shipped_cfg)):
            fresh_part, shipped_part = fresh_cfg.get(tower), shipped_cfg.get(tower)
            if fresh_part != shipped_part:
                print(f"config {tower!r}: fresh {fresh_part} / shipped {shipped_part}")
        del torch
    except (OSError, KeyError, ValueError) as exc:
        print(f"no shipped checkpoint to compare with ({type(exc).__name__}: {exc})")
    print(f"caption pre-training + packing: {train_s:.0f} s (seed {args.seed}, {packed['global_step']} steps)")
    print("| checkpoint | steps | sha256 | packed MB | val zero-shot (8 seen) | held-out zero-shot | chance |")
    print("|---|---|---|---|---|---|---|")
    for name, c in rows:
        z = c["zero_shot"]
        print(f"| {name} | {c['global_step']} | {c['sha256'][:12]} | {c['packed_bytes'] / 1e6:.1f} | "
              f"{z['val_zero_shot_top1']:.3f} | {z['heldout_zero_shot_top1']:.3f} | {z['heldout_chance']:.3f} |")
    if args.ship:
        dst = shipped_dir(NAME)
        dst.mkdir(parents=True, exist_ok=True)
        for f in ("config.json", "model.safetensors.gz"):
            (dst / f).write_bytes((work / "packed" / f).read_bytes())
        (dst / "card.json").write_text(json.dumps(new_card, indent=2) + "\n")
        (dst / "MODEL_CARD.md").write_text(model_card(new_card))
        print(f"shipped -> {dst}")


if __name__ == "__main__":
    main()
