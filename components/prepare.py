"""Component: prepare the dataset (manifest + label map pointing at videos on shared storage; videos never copied)."""
# No `from __future__ import annotations` here: KFP reads the real annotation objects of a component.

from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def prepare_data(
    dataset: Output[Dataset],
    data_source: str = "synthetic",
    data_format: str = "auto",
    label_map: str = "",
    video_root: str = "",
    heldout_labels: List[str] = [],
    val_fraction: float = 0.2,
    max_bad_fraction: float = 0.1,
    synthetic_dir: str = "/data/synthetic",
    synthetic_classes: List[str] = [],
    synthetic_clips_per_class: int = 12,
    synthetic_pretrain_clips: int = 6,
    synthetic_frames: int = 16,
    synthetic_size: int = 64,
    seed: int = 0,
    workers: int = 4,
    frames_dir: str = "",
    frame_size: int = 256,
    frame_stride: int = 1,
) -> None:
    """Probe every video of a source and write the prepared dataset directory as the ``dataset`` artifact.

    Args:
        dataset: output directory: manifest.jsonl, labels.txt, heldout_labels.txt, summary.json, rejected.jsonl.
        data_source: "synthetic" (generate clips into ``synthetic_dir`` first) or a path on shared storage (a class
            folder tree, an MMAction2 list, a Kinetics CSV, frame folders or a caption list).
        data_format: "auto" or a format name understood by ``actionclip.data.prepare_dataset``.
        label_map: optional label-map file (MMAction2 lists).
        video_root: optional root that relative paths in list files are resolved against.
        heldout_labels: labels kept out of fine-tuning for zero-shot evaluation (synthetic data has its own).
        val_fraction: fraction of each label's clips used for validation.
        max_bad_fraction: fail when more than this fraction of the videos cannot be read.
        synthetic_dir: where the synthetic clips are written (shared storage, so later stages can read them).
        synthetic_classes: action classes to synthesise (empty: the 8 seen + 3 held-out defaults).
        synthetic_clips_per_class: clips per class (train + val) for the synthetic source.
        synthetic_pretrain_clips: extra captioned pre-training clips per class (synthetic source).
        synthetic_frames: frames per synthetic clip.
        synthetic_size: synthetic frame size in pixels (square).
        seed: seed for the synthetic clips and the train/val split.
        workers: parallel probing (and frame extraction) workers.
        frames_dir: when set (shared storage), extract every video into JPEG frame folders there and point the
            manifest at them, so training decodes only the frames it samples (docs/data.md, "Frame folders").
        frame_size: scale extracted frames down to this short side in pixels, never up (0 keeps the video's size).
        frame_stride: extract every k-th frame (1: all; 2 or 3 cut the disk with little effect on TSN sampling).
    """
    from components._runtime import stage_errors, timed

    with stage_errors("prepare-data"):
        from actionclip.data import generate_synthetic, prepare_dataset

        with timed("prepare-data"):
            source, fmt = data_source, data_format
            if data_source == "synthetic":
                source = str(generate_synthetic(
                    synthetic_dir,
                    classes=list(synthetic_classes) or None,
                    heldout=list(heldout_labels) or None,
                    clips_per_class=synthetic_clips_per_class,
                    pretrain_clips_per_class=synthetic_pretrain_clips,
                    frames=synthetic_frames,
                    size=synthetic_size,
                    seed=seed,
                    workers=workers,
                ))
                fmt = "synthetic"
            prepared = prepare_dataset(
                source,
                dataset.path,
                format=fmt,
                label_map=label_map or None,
                video_root=video_root or None,
                heldout=list(heldout_labels) or None,
                val_fraction=val_fraction,
                seed=seed,
                max_bad_fraction=max_bad_fraction,
                workers=workers,
                progress=False,
                frames_dir=frames_dir or None,
                frame_short_side=frame_size,
                frame_stride=frame_stride,
            )
        summary = prepared.summary
        dataset.metadata.update({
            "dataset_hash": prepared.dataset_hash,
            "source": data_source,
            "num_labels": len(prepared.labels),
            "num_heldout_labels": len(prepared.heldout_labels),
            "num_videos": sum(1 for _ in prepared.rows()),
            "rejected": int(summary.get("rejected", 0)) if isinstance(summary, dict) else 0,
        })
        print(f"prepared {dataset.metadata['num_videos']} videos, {len(prepared.labels)} labels "
              f"(+{len(prepared.heldout_labels)} held out), hash {prepared.dataset_hash[:12]} -> {dataset.path}")
