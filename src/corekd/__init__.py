"""corekd: robust multimodal emotion recognition in conversations when modalities go missing.

Python entry points: :func:`corekd.run` (the same job as ``corekd run``), :func:`corekd.load` (a
model bundle -> a predictor), the corpus API in
:mod:`corekd.data`, the methods registry in :mod:`corekd.methods`.
"""

from corekd.version import __version__

__all__ = ["__version__", "load", "run"]


def load(path, *, device="cpu", runtime="torch", onnx_path=None):
    """A predictor for a model bundle folder (``corekd export-bundle``); see :func:`corekd.serving.load`."""
    from corekd.serving.predictor import load as _load

    return _load(path, device=device, runtime=runtime, onnx_path=onnx_path)


def __getattr__(name: str):
    # ``corekd.run`` is imported on first use, so that importing a light submodule (the feature extraction
    # workers, corekd.features.worker) does not pull in torch.
    if name == "run":
        from corekd.pipeline import run

        return run
    raise AttributeError(f"module 'corekd' has no attribute {name!r}")
