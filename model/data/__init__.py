"""Video data layer: decord reader, TSN sampling, clip transforms, dataset formats, preparation, a synthetic
action dataset and the torch loader. See docs/data.md and docs/ARCHITECTURE.md ("Data")."""
from .formats import DatasetFormatError, read_label_map
from .loader import VideoClipDataset, make_loader, set_epoch
from .prepare import DatasetError, PreparedDataset, prepare_dataset
from .reader import VideoInfo, VideoReadError, open_video, probe_video, read_frames
from .sampling import sample_multiview_indices, sample_test_indices, sample_train_indices
from .synthetic import generate_synthetic
from .transforms import CLIP_MEAN, CLIP_STD, TestTransform, TrainTransform, normalize_video

__all__ = [
    "VideoReadError", "VideoInfo", "open_video", "probe_video", "read_frames",
    "sample_train_indices", "sample_test_indices", "sample_multiview_indices",
    "TrainTransform", "TestTransform", "normalize_video", "CLIP_MEAN", "CLIP_STD",
    "PreparedDataset", "prepare_dataset", "DatasetError", "DatasetFormatError", "read_label_map",
    "generate_synthetic",
    "VideoClipDataset", "make_loader", "set_epoch",
]
