"""The evaluate stage: multi-view ActionCLIP scoring, closed-set metrics, zero-shot on held-out labels, plots.

Each video gives ``num_clips`` temporal views x ``num_crops`` spatial crops; each view is scored as ActionCLIP does
(x100, softmax over classes per template, mean over templates) and the view probabilities are averaged. Writes
``out_dir/metrics.json``:

    {"top1", "top5", "mean_class_acc", "per_class": {label: acc}, "confusion": [[...]], "labels": [...], "n",
     "zero_shot_top1", "zero_shot_top5", "zero_shot_mean_class_acc", "zero_shot_per_class", "zero_shot_confusion",
     "heldout_labels", "zero_shot_n", "clips_per_s", "views", "templates"}

and PNGs: confusion.png, per_class.png, zero_shot_confusion.png (when held-out labels exist), training_curves.png
(when a training history is found).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from actionclip.tracking import scalar_metrics
from actionclip.train.common import split_rows, start_scoring_stage, tracked_stage, write_json
from actionclip.train.config import EvaluateConfig
from actionclip.train.result import StageResult


def _metric_name(label: str) -> str:
    # MLflow metric names allow letters, digits, _ - . / and spaces
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", label)


def find_history(cfg: EvaluateConfig) -> Path | None:
    """The training history for the curves plot: ``cfg.history``, else ``history.json`` in the model directory."""
    if cfg.history:
        p = Path(cfg.history)
        return p if p.is_file() else None
    p = Path(cfg.model)
    cand = p / "history.json" if p.is_dir() else p.parent / "history.json"
    return cand if cand.is_file() else None


def evaluate(cfg: EvaluateConfig) -> StageResult:
    """Evaluate ``cfg.model`` on ``cfg.split`` (and held-out labels); outputs under ``cfg.out_dir``."""
    from actionclip import load
    from actionclip.train.prompting import read_prompt_templates
    from actionclip.train.metrics import classification_metrics
    from actionclip.train.plots import bars_png, confusion_png, curves_png
    from actionclip.train.scoring import encode_clips, eval_loader, prompt_bank, view_scores

    out, device, ds = start_scoring_stage(cfg)
    labels = list(ds.labels)
    rows = split_rows(ds, cfg.split, labels)
    heldout_rows = (split_rows(ds, "heldout", ds.heldout_labels, require=False)
                    if cfg.heldout and ds.heldout_labels else [])
    templates = read_prompt_templates(cfg.prompt)
    paths: dict[str, str] = {}
    with tracked_stage(cfg, True, ds.dataset_hash, extra_params={"eval_clips": len(rows),
                                                                  "heldout_clips": len(heldout_rows)}) as tracker:
        model = load(cfg.model, device=device)
        loader = eval_loader(rows, labels, model, cfg.batch_size, cfg.num_workers, cfg.num_clips, cfg.num_crops)
        feats, y, clips_per_s = encode_clips(model, loader, device)
        m = classification_metrics(view_scores(feats, prompt_bank(model, labels, templates)), y, labels)
        metrics: dict = {**m, "labels": labels, "clips_per_s": clips_per_s, "views": cfg.num_clips * cfg.num_crops,
                         "templates": templates}
        if heldout_rows:
            hl = list(ds.heldout_labels)
            hloader = eval_loader(heldout_rows, hl, model, cfg.batch_size, cfg.num_workers, cfg.num_clips,
                                  cfg.num_crops)
            hfeats, hy, _ = encode_clips(model, hloader, device)
            zs = classification_metrics(view_scores(hfeats, prompt_bank(model, hl, templates)), hy, hl)
            metrics.update({"zero_shot_top1": zs["top1"], "zero_shot_top5": zs["top5"],
                            "zero_shot_mean_class_acc": zs["mean_class_acc"], "zero_shot_per_class": zs["per_class"],
                            "zero_shot_confusion": zs["confusion"], "zero_shot_n": zs["n"], "heldout_labels": hl,
                            "zero_shot_chance": 1.0 / len(hl)})
        paths["metrics"] = str(write_json(out / "metrics.json", metrics))
        tracker.log_metrics(scalar_metrics(metrics))
        tracker.log_metrics({f"class_acc/{_metric_name(k)}": v for k, v in m["per_class"].items()})
        tracker.log_artifact(paths["metrics"])
        if cfg.plots:
            views = f"{cfg.num_clips}x{cfg.num_crops} views"
            paths["confusion_png"] = str(confusion_png(m["confusion"], labels, out / "confusion.png",
                                                       f"{cfg.split}: top-1 {m['top1']:.3f} ({views})"))
            paths["per_class_png"] = str(bars_png(m["per_class"], out / "per_class.png",
                                                  f"per-class accuracy ({cfg.split})"))
            if heldout_rows:
                paths["zero_shot_confusion_png"] = str(confusion_png(
                    metrics["zero_shot_confusion"], metrics["heldout_labels"], out / "zero_shot_confusion.png",
                    f"zero-shot (held-out labels): top-1 {metrics['zero_shot_top1']:.3f}"))
            hist = find_history(cfg)
            if hist is not None:
                history = json.loads(hist.read_text(encoding="utf-8"))
                if history.get("steps"):
                    paths["curves_png"] = str(curves_png(history, out / "training_curves.png", "training"))
            for key, p in paths.items():
                if key.endswith("_png"):
                    tracker.log_artifact(p)
        run_id = tracker.run_id
    return StageResult("evaluate", str(out), paths, scalar_metrics(metrics), run_id)
