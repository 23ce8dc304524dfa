"""Data-loading throughput of the ActionCLIP input pipelines on CPU, compared with the model's own CPU inference.

Writes ``--clips`` H.264 clips of ``--seconds`` s at 340x256 (Kinetics' usual short side 256) with PyAV, then measures
clips/s through ``VideoClipDataset`` + ``make_loader`` + ``normalize_video``:

- test pipeline: 8 test-sampled frames, short side -> 256, centre crop 224, normalise;
- train pipeline: 8 TSN-random frames, multi-scale crop + flip + colour jitter + grayscale, normalise;

each for 0/1/2 loader workers and for resize-on-decode (decord scales while decoding) vs decode-then-resize
(full frames decoded, torchvision resizes), and from JPEG frame folders extracted once from the same clips
(``actionclip data prepare --frames-dir``: only the sampled frames are decoded; ``--no-frame-folders`` skips
them). Steady state: the first batch (worker start-up) is not timed.

    python benchmarks/bench_data.py                 # full table (about 2-4 minutes on 2 cores)
    python benchmarks/bench_data.py --quick         # fewer clips, one repetition
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def write_clip(path: Path, seconds: int, fps: int, width: int, height: int, gop: int, seed: int) -> None:
    """A textured scene panning and changing over time (so the codec has real work), H.264 yuv420p."""
    import av

    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, size=(height // 4, (width + seconds * fps * 2) // 4, 3), dtype=np.uint8)
    texture = np.repeat(np.repeat(texture, 4, axis=0), 4, axis=1)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"preset": "veryfast", "crf": "23", "g": str(gop)}
        for i in range(seconds * fps):
            frame = texture[:, 2 * i: 2 * i + width].copy()
            frame[: height // 3] = (frame[: height // 3].astype(np.int16) + i).clip(0, 255).astype(np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def make_rows(data_dir: Path, n: int, seconds: int, gop: int) -> list[dict]:
    from actionclip.data import probe_video

    data_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        path = data_dir / f"clip_{i:03d}_{seconds}s_gop{gop}.mp4"
        if not path.exists():
            write_clip(path, seconds, 25, 340, 256, gop, seed=i)
        info = probe_video(path)
        rows.append({"path": str(path), "label": f"class{i % 4}", "caption": None, "frames": info.frames,
                     "fps": info.fps, "width": info.width, "height": info.height, "duration": info.duration})
    return rows


def make_frame_rows(rows: list[dict], frames_dir: Path, short_side: int) -> tuple[list[dict], float, float]:
    """Frame-folder copies of ``rows`` (extracted once, reused when up to date) -> (rows, seconds per clip to
    extract, folder size / video size)."""
    from actionclip.data import extract_frames, frame_folder_name

    out, t0, video_bytes, folder_bytes = [], time.perf_counter(), 0, 0
    for r in rows:
        folder = frames_dir / frame_folder_name(r["path"])
        info = extract_frames(r["path"], folder, short_side=short_side)
        out.append({**r, "path": str(folder), **info})
        video_bytes += os.path.getsize(r["path"])
        folder_bytes += sum(p.stat().st_size for p in folder.iterdir())
    return out, (time.perf_counter() - t0) / len(rows), folder_bytes / video_bytes


def loader_clips_per_s(rows, mode: str, resize_on_decode: bool, workers: int, batch: int, epochs: int,
                       num_frames: int, size: int) -> float:
    """Steady-state clips/s: one untimed warm-up epoch starts the (persistent) workers, then ``epochs`` timed ones,
    each from ``iter(loader)`` (prefetch ramp-up included) to the last batch, normalising every batch."""
    from actionclip.data import VideoClipDataset, make_loader, normalize_video

    # decode_scale_min_ratio=1 forces decoder scaling whenever the size differs, to compare the two paths
    ds = VideoClipDataset(rows, ["class0", "class1", "class2", "class3"], num_frames, size, mode=mode,
                          resize_on_decode=resize_on_decode, decode_scale_min_ratio=1.0)
    loader = make_loader(ds, batch_size=batch, shuffle=True, workers=workers, seed=0)
    for b in loader:  # warm-up epoch
        normalize_video(b["video"])
    n, t0 = 0, time.perf_counter()
    for _ in range(epochs):
        for b in loader:
            x = normalize_video(b["video"])  # on the training device in real runs; CPU here
            n += x.shape[0]
    dt = time.perf_counter() - t0
    del loader
    return n / dt


def stage_times(rows, num_frames: int, size: int, rounds: int = 3) -> dict[str, float]:
    """Per-clip milliseconds of each test-pipeline stage in this process (resize-on-decode vs not).

    The two decode variants alternate which goes first (the first read of a clip is slower: ffmpeg/page-cache
    warm-up), and the first round is discarded.
    """
    from actionclip.data import TestTransform, normalize_video, open_video, sample_test_indices
    from actionclip.data.reader import short_side_size
    from actionclip.data.transforms import resize_short_side, scale_size

    keys = ("decode+scale (decord)", "decode full", "resize (torchvision)", "crop+normalise")
    short = scale_size(size)
    t = TestTransform(size)
    out = dict.fromkeys(keys, 0.0)
    for rnd in range(rounds):
        for j, r in enumerate(rows):
            idx = sample_test_indices(r["frames"], num_frames).tolist()
            w, h = short_side_size(r["width"], r["height"], short)
            if (w, h) == (r["width"], r["height"]):
                w = h = -1  # nothing to scale (what the dataset does too)
            times = {}
            for variant in (("scaled", "full") if (rnd + j) % 2 else ("full", "scaled")):
                t0 = time.perf_counter()
                with open_video(r["path"], width=w if variant == "scaled" else -1,
                                height=h if variant == "scaled" else -1, threads=1) as v:
                    frames = v.read(idx)
                times[variant] = time.perf_counter() - t0
                if variant == "full":
                    full = frames
            t2 = time.perf_counter()
            small = resize_short_side(full, short)
            t3 = time.perf_counter()
            normalize_video(t(small)[None])
            t4 = time.perf_counter()
            if rnd == 0:
                continue
            for k, d in zip(keys, (times["scaled"], times["full"], t3 - t2, t4 - t3)):
                out[k] += d * 1000 / (len(rows) * (rounds - 1))
    return out


def model_clips_per_s(preset: str, batch: int, repeats: int) -> float | None:
    import torch

    import actionclip

    if not hasattr(actionclip, "create_model"):
        return None
    model = actionclip.create_model(preset)
    x = torch.randn(batch, model.num_frames, 3, model.image_size, model.image_size)
    with torch.inference_mode():
        model.encode_video(x)  # warm-up
        t0 = time.perf_counter()
        for _ in range(repeats):
            model.encode_video(x)
    return batch * repeats / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=12, help="distinct clips (default 12)")
    ap.add_argument("--epochs", type=int, default=2, help="passes over the clips per measurement (default 2)")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--gop", type=int, default=50, help="x264 keyframe interval in frames (default 50 = 2 s)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--sizes", default="224,112", help="crop sizes (224: ViT-B inputs; 112: where resizing matters)")
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--model", default="ViT-B/32-8", help="preset for the model-speed comparison ('' to skip)")
    ap.add_argument("--data-dir", help="where the clips are written/reused (default: a temporary directory)")
    ap.add_argument("--quick", action="store_true", help="8 clips, 1 timed epoch, size 224 only")
    ap.add_argument("--no-frame-folders", action="store_true", help="skip the JPEG frame-folder rows")
    args = ap.parse_args()
    if args.quick:
        args.clips, args.epochs, args.sizes = 8, 1, "224"
    sizes = [int(x) for x in args.sizes.split(",")]

    import torch

    tmp = None
    if args.data_dir:
        data_dir = Path(args.data_dir)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench_data_")
        data_dir = Path(tmp.name)
    t0 = time.perf_counter()
    rows = make_rows(data_dir, args.clips, args.seconds, args.gop)
    print(f"# {len(rows)} clips, {args.seconds} s, 340x256 H.264 (gop {args.gop}), written/probed in "
          f"{time.perf_counter() - t0:.1f} s; torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
    frame_rows = None
    if not args.no_frame_folders:
        # extraction is timed only when it happens (a reused --data-dir reuses up-to-date folders)
        frame_rows, extract_s, ratio = make_frame_rows(rows, data_dir / "frames", short_side=256)
        print(f"# frame folders: short side 256, JPEG q90, {ratio:.1f}x the videos' bytes; "
              f"{extract_s * 1000:.0f} ms per clip to extract (or reuse)")
    print(f"# {args.frames} frames, batch {args.batch}, {args.epochs} timed epoch(s) after a warm-up epoch\n")

    for size in sizes:
        print(f"per-clip stage times at {size}x{size}, main process, 1 decode thread (ms):")
        for k, v in stage_times(rows, args.frames, size).items():
            print(f"  {k:<24} {v:8.1f}")
    print()

    workers = [int(w) for w in args.workers.split(",")]
    results = []
    print(f"| pipeline | crop | decode | {' | '.join(f'{w} workers' for w in workers)} |")
    print(f"|---|---|---|{'---|' * len(workers)}")
    variants = [("resize-on-decode", rows, True), ("decode-then-resize", rows, False)]
    if frame_rows is not None:
        variants.append(("frame folders", frame_rows, True))
    for size in sizes:
        for mode in ("test", "train"):
            for label, variant_rows, rod in variants:
                speeds = [loader_clips_per_s(variant_rows, mode, rod, w, args.batch, args.epochs, args.frames, size)
                          for w in workers]
                if label != "frame folders":
                    results.append((size, mode, rod, speeds))
                print(f"| {mode} | {size} | {label} | {' | '.join(f'{s:.1f} clips/s' for s in speeds)} |",
                      flush=True)

    if args.model:
        speed = model_clips_per_s(args.model, batch=2, repeats=2)
        if speed is None:
            print("\nmodel comparison skipped: actionclip.create_model not available")
        else:
            at224 = [(m, r, s) for z, m, r, s in results if z == 224] or [(m, r, s) for z, m, r, s in results]
            test_def = min(s[-1] for m, r, s in at224 if m == "test" and r)
            train_def = min(s[-1] for m, r, s in at224 if m == "train" and r)
            print(f"\nmodel {args.model} CPU inference (encode_video, fp32, batch 2): {speed:.2f} clips/s")
            print(f"data/model speed ratio at {workers[-1]} workers, resize-on-decode: test pipeline "
                  f"{test_def / speed:.1f}x, train pipeline {train_def / speed:.1f}x (target >= 3x)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
