"""The evaluation report shown in the KFP UI: an HTML page with the plots embedded and a Markdown summary.

Pure standard library (imported inside the evaluate component's body); the page is one self-contained file because
the KFP UI renders an HTML artifact in a sandboxed frame that cannot fetch side files.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Mapping

HEADLINE = ("top1", "top5", "mean_class_acc", "zero_shot_top1", "zero_shot_top5", "clips_per_s")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def headline(metrics: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The summary numbers present in ``metrics``, in a fixed order."""
    return [(k, metrics[k]) for k in HEADLINE if k in metrics and metrics[k] is not None]


def render_markdown(metrics: Mapping[str, Any], title: str = "ActionCLIP evaluation") -> str:
    """A Markdown summary: headline metrics and per-class accuracy."""
    lines = [f"# {title}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in headline(metrics)]
    per_class = metrics.get("per_class") or {}
    if isinstance(per_class, Mapping) and per_class:
        lines += ["", "## Per-class accuracy", "", "| class | accuracy |", "|---|---|"]
        lines += [f"| {name} | {_fmt(acc)} |" for name, acc in per_class.items()]
    return "\n".join(lines) + "\n"


def render_html(metrics: Mapping[str, Any], plots: Mapping[str, str | Path], title: str = "ActionCLIP evaluation") -> str:
    """A self-contained HTML page: headline metrics, per-class table and every existing PNG inlined as base64."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}img{max-width:100%}</style>",
        "</head><body>", f"<h1>{esc(title)}</h1>", "<table><tr><th>metric</th><th>value</th></tr>",
    ]
    parts += [f"<tr><td>{esc(k)}</td><td>{esc(_fmt(v))}</td></tr>" for k, v in headline(metrics)]
    parts.append("</table>")
    for name, path in plots.items():
        path = Path(path)
        if not path.is_file():
            continue
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts += [f"<h2>{esc(name)}</h2>", f"<img alt='{esc(name)}' src='data:image/png;base64,{data}'>"]
    per_class = metrics.get("per_class") or {}
    if isinstance(per_class, Mapping) and per_class:
        parts += ["<h2>Per-class accuracy</h2>", "<table><tr><th>class</th><th>accuracy</th></tr>"]
        parts += [f"<tr><td>{esc(str(n))}</td><td>{esc(_fmt(a))}</td></tr>" for n, a in per_class.items()]
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
