"""Decoding media with the ffmpeg binary that the ``imageio-ffmpeg`` wheel ships (no system ffmpeg needed).

Audio is decoded to mono float32 PCM at a fixed rate, from an audio file or from a video's sound
track; video frames are sampled at a fixed rate as RGB arrays. Anything ffmpeg cannot decode
raises :class:`MediaError` with ffmpeg's own last line, which the extraction summary reports.
"""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

import numpy as np


class MediaError(Exception):
    """A file that is missing or that ffmpeg cannot decode (reported, never fatal unless --strict)."""


def ffmpeg_exe() -> str:
    try:
        import imageio_ffmpeg
    except ImportError:
        raise MediaError("decoding media needs the 'imageio-ffmpeg' package (pip install '.[features]')") from None
    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg_version() -> str:
    return f"imageio-ffmpeg {metadata.version('imageio-ffmpeg')}"


def _last_line(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def _check_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise MediaError(f"empty file: {path}")
    return path


def decode_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """``[samples]`` float32 in [-1, 1], mono, at ``sample_rate``; a video file gives its sound track."""
    path = _check_file(path)
    cmd = [
        ffmpeg_exe(),
        "-nostdin",
        "-v",
        "error",
        "-i",
        str(path),
        "-vn",
        "-ac",
        "1",
        "-ar",
        str(sample_rate),
        "-f",
        "f32le",
        "-acodec",
        "pcm_f32le",
        "-",
    ]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        raise MediaError(f"ffmpeg could not decode the audio of {path}: {_last_line(proc.stderr)}")
    signal = np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)
    if signal.size == 0:
        raise MediaError(f"no audio samples in {path} (no sound track?)")
    if not np.isfinite(signal).all():
        raise MediaError(f"non-finite audio samples in {path}")
    return signal


def sample_frames(path: str | Path, fps: float, max_frames: int) -> list[np.ndarray]:
    """RGB frames ``[H, W, 3]`` uint8 sampled at ``fps`` frames per second (at most ``max_frames``)."""
    path = _check_file(path)
    probe = subprocess.run(
        [
            ffmpeg_exe(),
            "-nostdin",
            "-v",
            "error",
            "-i",
            str(path),
            "-map",
            "0:v:0",
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "gray",
            "-",
        ],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0 or not probe.stdout:
        raise MediaError(f"ffmpeg could not decode a video frame of {path}: {_last_line(probe.stderr)}")
    import imageio_ffmpeg

    try:
        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24", output_params=["-vf", f"fps={fps:g}"])
        meta = next(reader)
        width, height = meta["size"]
        frames = []
        for raw in reader:
            frames.append(np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3))
            if len(frames) >= max_frames:
                reader.close()
                break
    except (RuntimeError, OSError, StopIteration, KeyError) as exc:
        raise MediaError(f"ffmpeg could not read the frames of {path}: {exc}") from None
    if not frames:
        raise MediaError(f"no video frames in {path}")
    return frames
