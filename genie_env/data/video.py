"""mp4 encoding and decoding of uint8 frames through the ffmpeg binary that imageio-ffmpeg ships.

Datasets are encoded **losslessly** (H.264, ``yuv444p``, ``crf 0``): at 64x64 a lossy codec and 4:2:0 chroma
subsampling visibly damage small sprites and thin robot links, and the world models' PSNR targets are
measured against these frames. The only loss left is the RGB<->YUV rounding (about 52 dB PSNR on noise).
Preview videos for people use the widely playable ``yuv420p``.
"""

from __future__ import annotations

import os
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from genie_env.data.errors import VideoError

LOSSLESS = ["-crf", "0", "-pix_fmt", "yuv444p", "-preset", "veryfast"]
PREVIEW = ["-crf", "18", "-pix_fmt", "yuv420p"]


def write_video(path: str | os.PathLike[str], frames: np.ndarray, fps: float, lossless: bool = True) -> None:
    """Encode ``frames`` (T, H, W, 3) uint8 to an mp4 at ``path`` (not atomic: callers write to a temp path).

    Raises:
        ValueError: for frames that are not a non-empty (T, H, W, 3) uint8 array.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be a non-empty (T, H, W, 3) uint8 array, got {frames.shape} {frames.dtype}")
    height, width = frames.shape[1:3]
    params = LOSSLESS if lossless else PREVIEW
    if not lossless and (height % 2 or width % 2):
        frames = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)))
        height, width = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (width, height),
        fps=fps,
        codec="libx264",
        output_params=["-f", "mp4", *params],
        macro_block_size=1,
        pix_fmt_out=None,
        ffmpeg_log_level="error",
    )
    writer.send(None)
    try:
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()


def read_video(path: str | os.PathLike[str], expected_frames: int | None = None) -> np.ndarray:
    """Decode an mp4 into (T, H, W, 3) uint8.

    Args:
        path: the video file.
        expected_frames: if given, the number of frames the video must hold.

    Raises:
        VideoError: naming the file, if it is missing, cannot be decoded, or has the wrong frame count.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video file missing: {path}")
    try:
        gen = imageio_ffmpeg.read_frames(str(path))
        meta = next(gen)
        width, height = meta["size"]
        frames = [np.frombuffer(buf, np.uint8).reshape(height, width, 3) for buf in gen]
    except (RuntimeError, OSError, StopIteration, KeyError, ValueError) as exc:
        # ffmpeg's message ends with the reason; its banner before that is noise.
        reason = " ".join(str(exc).strip().splitlines()[-2:])
        raise VideoError(f"cannot decode video {path}: {reason}") from exc
    if not frames:
        raise VideoError(f"video {path} holds no frames (truncated or corrupt file)")
    if expected_frames is not None and len(frames) != expected_frames:
        raise VideoError(
            f"video {path} holds {len(frames)} frames, expected {expected_frames} (truncated or corrupt file)"
        )
    return np.stack(frames)
