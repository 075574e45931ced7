"""Video I/O: read a clip, pick frames, resize/crop to the model's size, write results.

Sources: any container ffmpeg reads (mp4, mov, webm, avi, …), GIFs, and folders of image frames
(natural order: ``frame2`` before ``frame10``). Outputs: H.264 mp4, GIF, a folder of PNGs, and a
side-by-side grid of several clips. Every write is atomic.

- :mod:`.select`: frame selection, sizes, pixels ↔ tensors
- :mod:`.read`: the decoders (decord, the ffmpeg binary, Pillow for GIFs, folders and images)
- :mod:`.write`: the mp4/GIF/frame-folder writers and :func:`side_by_side`
"""

from __future__ import annotations

from .read import (
    BACKENDS,
    DEFAULT_FPS,
    FOLDER_META,
    IMAGE_SUFFIXES,
    count_frames,
    frame_files,
    natural_key,
    probe,
    read_image,
    read_mask_frames,
    read_video,
)
from .select import (
    MAX_SIDE,
    Clip,
    VideoInfo,
    check_size,
    default_size,
    parse_size,
    resize_crop,
    select_indices,
    to_frames,
    to_tensor,
)
from .write import MP4_CRF, side_by_side, write_video

__all__ = [
    "BACKENDS", "DEFAULT_FPS", "FOLDER_META", "IMAGE_SUFFIXES", "MAX_SIDE", "MP4_CRF",
    "Clip", "VideoInfo",
    "check_size", "count_frames", "default_size", "frame_files", "natural_key", "parse_size", "probe",
    "read_image", "read_mask_frames", "read_video", "resize_crop", "select_indices", "side_by_side", "to_frames", "to_tensor",
    "write_video",
]
