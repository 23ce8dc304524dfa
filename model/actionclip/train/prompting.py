"""The prompt stage: measure each candidate template by zero-shot accuracy and keep the best.

Every candidate (ActionCLIP's 16 templates and/or user ones) is scored alone by top-1 zero-shot accuracy on a split
(ActionCLIP scoring with that one template); the rule then keeps templates, and the kept set's ensemble accuracy is
reported as the stage's zero-shot top-1/top-5. Output ``prompt.json``:

    {"templates": [...kept, in candidate order], "scores": {template: top1}, "rule": "...",
     "zero_shot": {"top1": ..., "top5": ...}, "labels": [...], "split": "val", "num_clips": N, "dataset_hash": "..."}
"""
from __future__ import annotations

from actionclip.errors import ConfigError
from actionclip.tracking import scalar_metrics
from actionclip.train.common import split_rows, start_scoring_stage, tracked_stage, write_json
from actionclip.train.config import PromptConfig
from actionclip.train.result import StageResult


def candidate_templates(cfg: PromptConfig) -> list[str]:
    from actionclip import TEMPLATES

    out = list(TEMPLATES) if cfg.include_default else []
    for t in cfg.templates:
        if t not in out:
            out.append(t)
    return out


def select(scores: list[float], rule: str, keep: int) -> list[int]:
    """Indices kept by the rule, in candidate order. top_k: the ``keep`` highest scores, ties to the earlier one."""
    if rule == "all":
        return list(range(len(scores)))
    best = sorted(range(len(scores)), key=lambda k: (-scores[k], k))[:keep]
    return sorted(best)


def read_prompt_templates(path: str) -> list[str]:
    """Templates kept by the prompt stage (``prompt.json``), or ActionCLIP's 16 when ``path`` is empty."""
    from actionclip.zeroshot import TEMPLATES, PromptError, read_prompt_file

    if not path:
        return list(TEMPLATES)
    try:
        return read_prompt_file(path)
    except PromptError as exc:  # a stage setting that points at a bad file: a config error of the stage
        raise ConfigError(str(exc)) from None


def prompt(cfg: PromptConfig) -> StageResult:
    """Score the candidate templates on ``cfg.split`` and write ``out_dir/prompt.json`` and ``metrics.json``."""
    from actionclip import load
    from actionclip.train.metrics import classification_metrics
    from actionclip.train.plots import bars_png
    from actionclip.train.scoring import encode_clips, eval_loader, per_template_top1, prompt_bank, view_scores

    out, device, ds = start_scoring_stage(cfg)
    rows = split_rows(ds, cfg.split, ds.labels)
    if cfg.max_clips:
        rows = rows[:cfg.max_clips]
    candidates = candidate_templates(cfg)
    with tracked_stage(cfg, True, ds.dataset_hash) as tracker:
        model = load(cfg.model, device=device)
        loader = eval_loader(rows, ds.labels, model, cfg.batch_size, cfg.num_workers)
        feats, y, clips_per_s = encode_clips(model, loader, device)
        bank = prompt_bank(model, ds.labels, candidates)
        scores = per_template_top1(feats, y, bank)
        kept = select(scores, cfg.rule, cfg.keep)
        m = classification_metrics(view_scores(feats, bank[kept]), y, ds.labels)
        rule = (f"top_k: the {min(cfg.keep, len(candidates))} of {len(candidates)} candidate templates with the highest "
                f"zero-shot top-1 on split {cfg.split!r} ({len(rows)} clips), ties to the earlier candidate"
                if cfg.rule == "top_k" else f"all: every one of the {len(candidates)} candidate templates")
        artifact = {
            "templates": [candidates[k] for k in kept],
            "scores": {t: s for t, s in zip(candidates, scores)},
            "rule": rule,
            "zero_shot": {"top1": m["top1"], "top5": m["top5"]},
            "labels": list(ds.labels),
            "split": cfg.split,
            "num_clips": len(rows),
            "dataset_hash": ds.dataset_hash,
        }
        prompt_path = write_json(out / "prompt.json", artifact)
        metrics = {
            "zero_shot_top1": m["top1"], "zero_shot_top5": m["top5"], "zero_shot_mean_class_acc": m["mean_class_acc"],
            "templates_kept": len(kept), "templates_scored": len(candidates),
            "best_template_top1": max(scores), "mean_template_top1": sum(scores) / len(scores),
            "clips_per_s": clips_per_s,
        }
        metrics_path = write_json(out / "metrics.json", metrics)
        tracker.log_metrics(scalar_metrics(metrics))
        for k, s in enumerate(scores):  # one series, x = candidate index: readable as a chart in the MLflow UI
            tracker.log_metrics({"template_top1": s}, step=k)
        plot = bars_png({t: s for t, s in zip(candidates, scores)}, out / "template_scores.png",
                        f"zero-shot top-1 per template ({cfg.split})", "top-1")
        for p in (prompt_path, metrics_path, plot):
            tracker.log_artifact(p)
        run_id = tracker.run_id
    return StageResult("prompt", str(out), {"prompt": str(prompt_path), "metrics": str(metrics_path),
                                            "template_scores_png": str(plot)}, scalar_metrics(metrics), run_id)
