"""Model-core throughput: video clips/s, text prompts/s, achieved GFLOP/s against a same-shape GEMM, peak memory.

    python benchmarks/bench_model.py                      # ViT-B/32-8 and ViT-B/16-8, 2 threads, float32
    python benchmarks/bench_model.py --presets tiny-8 --quick

Each configuration runs in its own subprocess so its peak RSS is its own. The baseline is a straightforward eager
re-statement of the original CLIP code (``tests/reference_clip.py``: sequence-first ``nn.MultiheadAttention``,
77-token padded text) loaded with the same weights; both must give the same outputs. On a GPU the same table is
produced in bf16 when ``--device cuda`` is given.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def image_tower_flops(cfg) -> float:
    """Multiply-adds x 2 of one frame through the image tower (the fusion and text tower excluded)."""
    v = cfg.vision
    n = (v.image_size // v.patch_size) ** 2 + 1
    w = v.width
    per_layer = 2 * (n * w * 3 * w + 2 * n * n * w + n * w * w + 2 * n * w * int(w * v.mlp_ratio))
    patch = 2 * (n - 1) * 3 * v.patch_size**2 * w
    return v.layers * per_layer + patch + 2 * w * cfg.embed_dim


def timed(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def run_one(preset: str, device: str, quick: bool, compile_: bool) -> dict:
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    import actionclip
    import reference_clip as R
    from actionclip.checkpoint import to_openai_state_dict

    torch.manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = actionclip.create_model(preset, fusion={"kind": "meanP"}).to(device, dtype)
    cfg = model.config
    v, t = cfg.vision, cfg.text
    ref = R.CLIP(embed=cfg.embed_dim, resolution=v.image_size, patch=v.patch_size, vwidth=v.width, vlayers=v.layers,
                 twidth=t.width, tlayers=t.layers).eval()
    ref.load_state_dict(to_openai_state_dict(model.float()), strict=True)
    model = model.to(device, dtype)
    ref = ref.to(device, dtype)

    rows = []
    reps = 1 if quick else 3
    for batch in (1, 8):
        video = torch.randn(batch, cfg.num_frames, 3, v.image_size, v.image_size, device=device, dtype=dtype)
        with torch.inference_mode():
            ours = model.encode_video(video)
            base = ref.encode_image(video.flatten(0, 1)).view(batch, cfg.num_frames, -1).mean(1)
            err = float((ours.float() - base.float()).abs().max() / base.float().abs().max())
            t_base = timed(lambda: ref.encode_image(video.flatten(0, 1)), reps)
            t_ours = timed(lambda: model.encode_video(video), reps)
            t_comp = None
            if compile_:
                compiled = torch.compile(model.encode_video)
                t_comp = timed(lambda: compiled(video), reps, warmup=2)
        flops = image_tower_flops(cfg) * batch * cfg.num_frames
        rows.append({"batch": batch, "baseline_clips_s": batch / t_base, "ours_clips_s": batch / t_ours,
                     "compiled_clips_s": batch / t_comp if t_comp else None,
                     "ours_gflops": flops / t_ours / 1e9, "max_rel_err": err})

    # a GEMM with the shape of the tower's MLP (the dominant matmul), as the achievable rate on this machine
    n_tok = ((v.image_size // v.patch_size) ** 2 + 1) * 8 * cfg.num_frames
    a = torch.randn(n_tok, v.width, device=device, dtype=dtype)
    b = torch.randn(v.width, int(v.width * v.mlp_ratio), device=device, dtype=dtype)
    t_gemm = timed(lambda: a @ b, 5 if not quick else 2)
    gemm_gflops = 2 * n_tok * v.width * b.shape[1] / t_gemm / 1e9

    labels = actionclip.kinetics400_labels()
    prompts = actionclip.build_prompts(labels if not quick else labels[:50])
    ids = actionclip.tokenize(prompts).to(device)
    with torch.inference_mode():
        ours_t = model.encode_text(ids[:512])
        ref_t = ref.encode_text(ids[:512])
        text_err = float((ours_t.float() - ref_t.float()).abs().max() / ref_t.float().abs().max())
        t_trim = timed(lambda: [model.encode_text(ids[i:i + 512]) for i in range(0, len(ids), 512)], 1, warmup=0)
        # the padded baseline costs ~10x more; time it on the first 1024 prompts and report its rate
        n_pad = min(len(ids), 1024)
        t_pad = timed(lambda: [ref.encode_text(ids[i:i + 512]) for i in range(0, n_pad, 512)], 1, warmup=0)
        t_pad *= len(ids) / n_pad
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"preset": preset, "device": device, "dtype": str(dtype).replace("torch.", ""), "video": rows,
            "gemm_gflops": gemm_gflops, "prompts": len(prompts), "text_trimmed_per_s": len(prompts) / t_trim,
            "text_padded77_per_s": len(prompts) / t_pad, "text_max_rel_err": text_err, "peak_rss_mb": peak_mb,
            "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["ViT-B/32-8", "ViT-B/16-8"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and prompts (smoke run)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(encode_video)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(run_one(args.child, args.device, args.quick, args.compile)))
        return

    results = []
    for preset in args.presets:
        cmd = [sys.executable, __file__, "--child", preset, "--device", args.device, "--threads", str(args.threads)]
        cmd += ["--quick"] * args.quick + ["--compile"] * args.compile
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))

    print(f"\nvideo encoding ({args.device}, {args.threads} threads; baseline = eager original CLIP code)")
    print("| preset | dtype | batch | baseline clips/s | ours clips/s | compiled clips/s | ours GFLOP/s | GEMM GFLOP/s | % of GEMM | max rel err |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for row in r["video"]:
            comp = f"{row['compiled_clips_s']:.2f}" if row["compiled_clips_s"] else "-"
            print(f"| {r['preset']} | {r['dtype']} | {row['batch']} | {row['baseline_clips_s']:.2f} | {row['ours_clips_s']:.2f} | "
                  f"{comp} | {row['ours_gflops']:.1f} | {r['gemm_gflops']:.1f} | {100 * row['ours_gflops'] / r['gemm_gflops']:.0f}% | "
                  f"{row['max_rel_err']:.1e} |")
    print("\ntext encoding (400 Kinetics classes x 16 templates unless --quick)")
    print("| preset | prompts | trimmed prompts/s | padded-77 prompts/s | speed-up | max rel err | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['preset']} | {r['prompts']} | {r['text_trimmed_per_s']:.0f} | {r['text_padded77_per_s']:.0f} | "
              f"{r['text_trimmed_per_s'] / r['text_padded77_per_s']:.1f}x | {r['text_max_rel_err']:.1e} | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
