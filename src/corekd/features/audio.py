"""Audio: openSMILE feature sets through the ``opensmile`` package (its binary and configs ship in the wheel).

Default: eGeMAPSv02 functionals, one 88-d vector per utterance. Options: the low-level
descriptors as a frame sequence (eGeMAPSv02: 25-d at 100 frames/s) and ComParE_2016 (6373
functionals or 65 LLDs). Audio is decoded by ffmpeg (``corekd.features.media``) to 16 kHz mono,
from the audio file or, when only a video is given, from the video's sound track.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import metadata

import numpy as np

from corekd.features.media import MediaError, decode_audio

LLD_FRAME_RATE = 100.0  # openSMILE's eGeMAPS / ComParE LLDs: 10 ms hop


@lru_cache(maxsize=4)
def _smile(feature_set: str, level: str):
    import opensmile

    fs = {"eGeMAPSv02": opensmile.FeatureSet.eGeMAPSv02, "ComParE_2016": opensmile.FeatureSet.ComParE_2016}[feature_set]
    fl = {"functionals": opensmile.FeatureLevel.Functionals, "lld": opensmile.FeatureLevel.LowLevelDescriptors}[level]
    return opensmile.Smile(feature_set=fs, feature_level=fl)


def identity(feature_set: str, level: str, sample_rate: int) -> dict:
    return {
        "extractor": f"openSMILE {feature_set} {'functionals' if level == 'functionals' else 'low-level descriptors'}",
        "package": f"opensmile {metadata.version('opensmile')}",
        "model_file": f"{feature_set}.conf (shipped in the opensmile wheel)",
        "sample_rate": sample_rate,
    }


def extract_audio(path: str, feature_set: str, level: str, sample_rate: int) -> np.ndarray:
    """``[D]`` (functionals) or ``[frames, D]`` (LLDs) float32 for one file."""
    signal = decode_audio(path, sample_rate)
    min_samples = int(0.1 * sample_rate)  # openSMILE's windows need some signal; pad very short clips with silence
    if signal.size < min_samples:
        signal = np.concatenate([signal, np.zeros(min_samples - signal.size, np.float32)])
    frame = _smile(feature_set, level).process_signal(signal, sample_rate)
    values = frame.to_numpy(dtype=np.float64)
    if values.size == 0:
        raise MediaError(f"openSMILE returned no {level} for {path}")
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0) if not np.isfinite(values).all() else values
    out = values.astype(np.float32)
    return out[0] if level == "functionals" else out
