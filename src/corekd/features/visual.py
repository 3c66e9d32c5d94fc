"""Visual: per sampled frame, face detection and a descriptor of the face (HOG or a learned expression embedding).

Detector: dlib's frontal face detector (HOG features + linear SVM); its weights are compiled
into the ``dlib-bin`` wheel, so nothing is downloaded. The largest face in a frame, with a margin
of ``margin`` around its box, in grey, then one of two descriptors (``visual.embedding``):

- ``hog``: the crop resized to ``size`` x ``size``, a histogram of oriented gradients
  (scikit-image ``hog``: 9 orientations, 8x8-pixel cells, 2x2-cell blocks, L2-Hys); a classical,
  hand-made facial-expression descriptor.
- ``pyemotion``: a learned facial-expression network, the 7-class CNN whose weights ship in the
  ``PyEmotion`` wheel (``PyEmotion/model/main_model.pkl``, a torch state dict read with
  ``weights_only=True``). The crop is resized to the network's 48 x 48 input, scaled to [-1, 1];
  four (reflection pad 1, 3x3 conv, batch norm, ReLU) blocks, the last three with stride 2, give
  ``[256, 6, 6]``, then a 9216 -> 256 linear layer and ReLU: that 256-d hidden layer is the
  embedding (the network's 7 emotion scores are computed from it and not kept). PyEmotion's own
  code (which imports OpenCV, facenet-pytorch's MTCNN and downloads nothing either) is not
  imported: only its weights file is read, by path, and the forward pass is written here.

An utterance's frames without a face are counted; with no face in any sampled frame the visual
modality is missing for that utterance (never zeros).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import metadata
from pathlib import Path

import numpy as np

from corekd.features.media import sample_frames

EMBEDDINGS = ("hog", "pyemotion")
PYEMOTION_PACKAGE = "PyEmotion"
PYEMOTION_FILE = "PyEmotion/model/main_model.pkl"
PYEMOTION_INPUT = 48  # side of the network's grey input
PYEMOTION_DIM = 256  # the hidden layer before the 7 emotion scores
PYEMOTION_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # order of its 7 outputs


def descriptor_dim(size: int, embedding: str = "hog") -> int:
    if embedding == "pyemotion":
        return PYEMOTION_DIM
    cells = size // 8
    return (cells - 1) ** 2 * 4 * 9


@lru_cache(maxsize=1)
def _detector():
    import dlib

    return dlib.get_frontal_face_detector()


def pyemotion_weights_path() -> Path:
    """The weights file inside the installed PyEmotion wheel (found through the wheel's file list)."""
    dist = metadata.distribution(PYEMOTION_PACKAGE)  # PackageNotFoundError: the features extra is not installed
    for f in dist.files or ():
        if str(f).replace("\\", "/") == PYEMOTION_FILE:
            return Path(str(dist.locate_file(f)))
    raise FileNotFoundError(
        f"{PYEMOTION_FILE} is not in the installed {PYEMOTION_PACKAGE} {dist.version} (expected inside its wheel)"
    )


@lru_cache(maxsize=1)
def pyemotion_sha256() -> str:
    from corekd.files import file_sha256

    return file_sha256(pyemotion_weights_path())


def identity(fps: float, max_frames: int, size: int, margin: float, embedding: str = "hog") -> dict:
    sampling = f"{fps:g} frames/s, at most {max_frames} frames"
    detector = "dlib's built-in frontal_face_detector (compiled into the wheel)"
    if embedding == "pyemotion":
        return {
            "extractor": "dlib frontal face detector (HOG+SVM) + PyEmotion facial-expression CNN, 256-d hidden layer "
            f"of the {PYEMOTION_INPUT}x{PYEMOTION_INPUT} grey face crop",
            "package": f"dlib-bin {metadata.version('dlib-bin')}, {PYEMOTION_PACKAGE} "
            f"{metadata.version(PYEMOTION_PACKAGE)}, scikit-image {metadata.version('scikit-image')}, "
            f"torch {metadata.version('torch')}",
            "model_file": PYEMOTION_FILE,
            "model_sha256": pyemotion_sha256(),
            "detector": detector,
            "dim": PYEMOTION_DIM,
            "sampling": sampling,
            "margin": margin,
        }
    return {
        "extractor": f"dlib frontal face detector (HOG+SVM) + HOG descriptor of the {size}x{size} face crop",
        "package": f"dlib-bin {metadata.version('dlib-bin')}, scikit-image {metadata.version('scikit-image')}",
        "model_file": detector,
        "sampling": sampling,
        "margin": margin,
    }


def face_crop(frame: np.ndarray, margin: float) -> np.ndarray | None:
    """The largest face of an RGB frame ``[H, W, 3]`` with its margin, in grey ``[h, w]`` in [0, 1]; None: no face."""
    from skimage.color import rgb2gray

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
    return rgb2gray(frame[top:bottom, left:right])


def hog_descriptor(crop: np.ndarray, size: int) -> np.ndarray:
    from skimage.feature import hog
    from skimage.transform import resize

    crop = resize(crop, (size, size), anti_aliasing=True)
    return hog(
        crop, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2), block_norm="L2-Hys", feature_vector=True
    ).astype(np.float32)


@lru_cache(maxsize=1)
def _pyemotion_params() -> dict:
    import torch

    record = torch.load(pyemotion_weights_path(), map_location="cpu", weights_only=True)
    state = record["network"] if isinstance(record, dict) and "network" in record else record
    return {
        k: v.float() for k, v in state.items() if k != "num_batches_tracked" and not k.endswith(".num_batches_tracked")
    }


def pyemotion_forward(crops, with_scores: bool = False):
    """PyEmotion's network on grey crops ``[N, 48, 48]`` in [0, 1]: the 256-d embeddings ``[N, 256]``
    (and, with ``with_scores``, its 7 sigmoid emotion scores ``[N, 7]``, order :data:`PYEMOTION_CLASSES`)."""
    import torch
    import torch.nn.functional as F

    p = _pyemotion_params()
    x = torch.as_tensor(np.asarray(crops, np.float32)).unsqueeze(1)  # [N, 1, 48, 48]
    x = (x - 0.5) / 0.5
    with torch.no_grad():
        for block, stride in (("conv_1", 1), ("conv_2", 2), ("conv_3", 2), ("conv_4", 2)):
            x = F.pad(x, (1, 1, 1, 1), mode="reflect")
            x = F.conv2d(x, p[f"{block}.1.weight"], p[f"{block}.1.bias"], stride=stride)
            x = F.batch_norm(
                x,
                p[f"{block}.2.running_mean"],
                p[f"{block}.2.running_var"],
                p[f"{block}.2.weight"],
                p[f"{block}.2.bias"],
                training=False,
                eps=1e-5,
            )
            x = F.relu(x)
        # x: [N, 256, 6, 6]
        h = F.relu(F.linear(x.reshape(x.shape[0], -1), p["linear.0.weight"], p["linear.0.bias"]))  # [N, 256]
        if not with_scores:
            return h.numpy()
        scores = torch.sigmoid(F.linear(h, p["linear.2.weight"], p["linear.2.bias"]))  # [N, 7]
        return h.numpy(), scores.numpy()


def pyemotion_descriptor(crop: np.ndarray) -> np.ndarray:
    from skimage.transform import resize

    small = resize(crop, (PYEMOTION_INPUT, PYEMOTION_INPUT), anti_aliasing=True)
    return pyemotion_forward(small[None])[0].astype(np.float32)


def face_descriptor(frame: np.ndarray, size: int, margin: float, embedding: str = "hog") -> np.ndarray | None:
    """The descriptor of the largest face in an RGB frame ``[H, W, 3]``, or None when no face is found."""
    crop = face_crop(frame, margin)
    if crop is None:
        return None
    if embedding == "pyemotion":
        return pyemotion_descriptor(crop)
    return hog_descriptor(crop, size)


def extract_visual(
    path: str, fps: float, max_frames: int, size: int, margin: float, embedding: str = "hog"
) -> tuple[np.ndarray, int]:
    """(``[faces, D]`` descriptors of the sampled frames with a face, number of sampled frames)."""
    if embedding not in EMBEDDINGS:
        raise ValueError(f"visual.embedding: expected one of {EMBEDDINGS}, got {embedding!r}")
    frames = sample_frames(path, fps, max_frames)
    found = [d for d in (face_descriptor(f, size, margin, embedding) for f in frames) if d is not None]
    dim = descriptor_dim(size, embedding)
    return (np.stack(found) if found else np.zeros((0, dim), np.float32)), len(frames)
