"""``actionclip data ...``: prepare a dataset, generate the synthetic dataset, probe a video.

Heavy imports (torch, decord, av) happen inside the command functions so ``actionclip --help`` stays fast.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys


def _labels(text: str | None) -> list[str] | None:
    """Comma-separated label names ("moving left,growing"); "" means an explicit empty list."""
    if text is None:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="prepare video datasets, generate the synthetic dataset, probe videos")
    sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    sub.required = True

    p = sub.add_parser("prepare", help="probe videos and write manifest.jsonl, labels.txt, summary.json, ...")
    p.add_argument("source", nargs="+", help="dataset directory or annotation file(s)")
    p.add_argument("--out", "-o", required=True, help="output directory (the prepared dataset)")
    p.add_argument("--format", default="auto",
                   choices=["auto", "synthetic", "folder", "mmaction", "kinetics", "frames", "captions"])
    p.add_argument("--label-map", help="label names: one per line, or an id,name CSV")
    p.add_argument("--video-root", help="directory that relative paths in annotation files are relative to")
    p.add_argument("--captions", action="append", help="extra caption list (JSONL/CSV) -> 'pretrain' rows")
    p.add_argument("--heldout", help="comma-separated labels kept out of fine-tuning (zero-shot evaluation)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-bad-fraction", type=float, default=0.1,
                   help="fail if more than this fraction of videos is unreadable (default 0.1)")
    p.add_argument("--workers", type=int, default=4, help="parallel probes (default 4)")
    p.add_argument("--frames-dir", metavar="DIR",
                   help="also extract every video into JPEG frame folders under DIR and point the manifest at them "
                        "(training then decodes only the frames it samples; see docs/data.md)")
    p.add_argument("--frame-size", type=int, default=256,
                   help="scale extracted frames down to this short side in pixels (never up); 0 keeps the video's "
                        "size (default 256)")
    p.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality of extracted frames (default 90)")
    p.add_argument("--frame-stride", type=int, default=1,
                   help="extract every k-th frame (default 1: all); 2 or 3 cut the disk with little effect on sampling")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=cmd_prepare)

    s = sub.add_parser("synth", help="generate the synthetic action dataset (H.264 mp4 + captions)")
    s.add_argument("out", help="output directory")
    s.add_argument("--classes", help="comma-separated actions (default: 8 seen + 2 held-out)")
    s.add_argument("--heldout", help="comma-separated held-out actions (default: standing still, shaking)")
    s.add_argument("--clips-per-class", type=int, default=12)
    s.add_argument("--pretrain-clips-per-class", type=int, default=6)
    s.add_argument("--frames", type=int, default=16)
    s.add_argument("--size", type=int, default=64)
    s.add_argument("--fps", type=int, default=8)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--action-only-captions", type=float, default=0.3,
                   help="fraction of captions naming only the action, 'an object shaking' (default 0.3)")
    s.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    s.add_argument("--prepare", metavar="DIR", help="also prepare the generated data into DIR")
    s.add_argument("--list-actions", action="store_true", help="print the available actions and exit")
    s.add_argument("--debug", action="store_true", help="show tracebacks")
    s.set_defaults(func=cmd_synth)

    q = sub.add_parser("probe", help="print frame count, fps, size and duration of videos as JSON lines")
    q.add_argument("videos", nargs="+")
    q.add_argument("--debug", action="store_true", help="show tracebacks")
    q.set_defaults(func=cmd_probe)


def cmd_prepare(args: argparse.Namespace) -> int:
    from actionclip.data import prepare_dataset

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ds = prepare_dataset(
        args.source, args.out, format=args.format, label_map=args.label_map, video_root=args.video_root,
        captions=args.captions, heldout=_labels(args.heldout), val_fraction=args.val_fraction, seed=args.seed,
        max_bad_fraction=args.max_bad_fraction, workers=args.workers, progress=not args.no_progress,
        frames_dir=args.frames_dir, frame_short_side=args.frame_size, jpeg_quality=args.jpeg_quality,
        frame_stride=args.frame_stride,
    )
    s = ds.summary
    print(f"prepared {s['num_videos']} videos into {ds.root}: splits {s['splits']}, "
          f"{s['num_labels']} labels, {s['num_heldout_labels']} held out, {s['rejected']} rejected "
          f"(see rejected.jsonl); dataset_hash {ds.dataset_hash[:12]}")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from actionclip.data.synthetic import ACTIONS, generate_synthetic

    if args.list_actions:
        print("\n".join(ACTIONS))
        return 0
    out = generate_synthetic(
        args.out, classes=_labels(args.classes), heldout=_labels(args.heldout),
        clips_per_class=args.clips_per_class, pretrain_clips_per_class=args.pretrain_clips_per_class,
        frames=args.frames, size=args.size, fps=args.fps, seed=args.seed,
        action_only_captions=args.action_only_captions, workers=args.workers, progress=True,
    )
    print(f"wrote synthetic dataset to {out}")
    if args.prepare:
        from actionclip.data import prepare_dataset

        ds = prepare_dataset(out, args.prepare, progress=True)
        print(f"prepared {ds.summary['num_videos']} videos into {ds.root}: splits {ds.summary['splits']}")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from actionclip.data import VideoReadError, probe_video

    failed = 0
    for path in args.videos:
        try:
            print(json.dumps({"path": path, **probe_video(path).to_dict()}))
        except VideoReadError as exc:
            failed += 1
            print(json.dumps({"path": path, "error": str(exc)}))
    if failed:
        print(f"{failed} of {len(args.videos)} videos unreadable", file=sys.stderr)
    return 1 if failed else 0
