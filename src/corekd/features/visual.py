"""Visual: per sampled frame, face detection and an appearance descriptor of the face.

Detector: dlib's frontal face detector (HOG features + linear SVM); its weights are compiled
into the ``dlib-bin`` wheel, so nothing is downloaded. Descriptor of the largest face in a frame:
the face crop (a margin of ``margin`` around the box) in grey, resized to ``size`` x ``size``,
then a histogram of oriented gradients (scikit-image ``hog``: 9 orientations, 8x8-pixel cells,
2x2-cell blocks, L2-Hys). HOG of the face crop is a classical facial-expression descriptor; it is
not a learned expression network (see docs/features.md for why none is used).

An utterance's frames without a face are counted; with no face in any sampled frame the visual
modality is missing for that utterance (never zeros).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import metadata

import numpy as np

from corekd.features.media import sample_frames


def descriptor_dim(size: int) -> int:
    cells = size // 8
    return (cells - 1) ** 2 * 4 * 9


@lru_cache(maxsize=1)
def _detector():
    import dlib

    return dlib.get_frontal_face_detector()


def identity(fps: float, max_frames: int, size: int, margin: float) -> dict:
    return {
        "extractor": f"dlib frontal face detector (HOG+SVM) + HOG descriptor of the {size}x{size} face crop",
        "package": f"dlib-bin {metadata.version('dlib-bin')}, scikit-image {metadata.version('scikit-image')}",
        "model_file": "dlib's built-in frontal_face_detector (compiled into the wheel)",
        "sampling": f"{fps:g} frames/s, at most {max_frames} frames",
        "margin": margin,
    }


def face_descriptor(frame: np.ndarray, size: int, margin: float) -> np.ndarray | None:
    """The descriptor of the largest face in an RGB frame ``[H, W, 3]``, or None when no face is found."""
    from skimage.color import rgb2gray
    from skimage.feature import hog
    from skimage.transform import resize

    faces = _detector()(frame, 0)
    if len(faces) == 0:
        return None
    box = max(faces, key=lambda r: r.width() * r.height())
    h, w = frame.shape[:2]
    mx, my = int(box.width() * margin), int(box.height() * margin)
    top, bottom = max(box.top() - my, 0), min(box.bottom() + my, h)
    left, right = max(box.left() - mx, 0), min(box.right() + mx, w)
    if bottom - top < 8 or right - left < 8:
        return None
    crop = resize(rgb2gray(frame[top:bottom, left:right]), (size, size), anti_aliasing=True)
    return hog(crop, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2), block_norm="L2-Hys",
               feature_vector=True).astype(np.float32)


def extract_visual(path: str, fps: float, max_frames: int, size: int, margin: float) -> tuple[np.ndarray, int]:
    """(``[faces, D]`` descriptors of the sampled frames with a face, number of sampled frames)."""
    frames = sample_frames(path, fps, max_frames)
    found = [d for d in (face_descriptor(f, size, margin) for f in frames) if d is not None]
    dim = descriptor_dim(size)
    return (np.stack(found) if found else np.zeros((0, dim), np.float32)), len(frames)
