"""Media made from nothing, for tests, benchmarks and demos: speech-like audio and short face videos.

The face is scikit-image's bundled astronaut photograph (``skimage.data.astronaut()``, shipped in the
wheel); the videos are encoded with the ffmpeg of ``imageio-ffmpeg``. Nothing is downloaded.
"""

from __future__ import annotations

import wave

import numpy as np


def speech_like(path, seconds=1.0, f0=140.0, sr=16000, seed=0):
    """A voiced, syllable-modulated harmonic tone with a gliding pitch and a little noise, as 16-bit PCM."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    pitch = f0 * (1 + 0.15 * np.sin(2 * np.pi * 1.5 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 0.5  # about 4 syllables a second
    signal = 0.25 * voiced * envelope + 0.01 * rng.standard_normal(t.size)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes((np.clip(signal, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def hopper_image():
    """A second, differently expressed face: matplotlib's bundled Grace Hopper portrait, ``[256, 256, 3]`` uint8."""
    import matplotlib.cbook as cbook
    import matplotlib.image as mpimg

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        image = mpimg.imread(f, format="jpg")  # [600, 512, 3]
    return np.ascontiguousarray(image[20:532:2, 0:512:2, :3])  # [256, 256, 3], the face centred


def face_video(path, frames=10, fps=10, with_audio=None, shift=0, image=None):
    """An mp4 of a face photograph (default: scikit-image's bundled astronaut), optionally with a sound track."""
    import imageio_ffmpeg
    from skimage import data

    if image is None:
        image = np.ascontiguousarray(data.astronaut()[:256, 128:384])  # [256, 256, 3], the face centred
    writer = imageio_ffmpeg.write_frames(
        str(path), (256, 256), fps=fps, macro_block_size=1, audio_path=str(with_audio) if with_audio else None
    )
    writer.send(None)
    for k in range(frames):
        writer.send(np.ascontiguousarray(np.roll(image, k + shift, axis=1)))
    writer.close()
    return path


def noise_video(path, frames=6, fps=6):
    import imageio_ffmpeg

    rng = np.random.default_rng(1)
    writer = imageio_ffmpeg.write_frames(str(path), (64, 64), fps=fps, macro_block_size=1)
    writer.send(None)
    for _ in range(frames):
        writer.send(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    writer.close()
    return path
