"""Using a trained model, in three tiers (docs/architecture.md):

- bottom: the request schema (:mod:`.schema`, no torch), dialogues as the model's input (:mod:`.dialogue`) and
  the model behind plain tensors (:mod:`.module`);
- middle: bundles (:mod:`.bundle`), input readers for ``corekd predict`` (:mod:`.inputs`), media manifests
  through the extractors (:mod:`.media`) and ONNX export and runtime (:mod:`.onnx_export`);
- top: the Python predictor (:mod:`.predictor`) and the HTTP service (:mod:`.app`).

``corekd.load(path)`` is :func:`corekd.serving.predictor.load`. The HTTP service and ONNX export
need the ``serve`` extra (``pip install 'corekd[serve]'``).

The names below are imported on first use, so that the service's request-parsing worker processes
(:mod:`corekd.serving.schema`) start without torch.
"""

__all__ = [
    "BUNDLE_VERSION",
    "Bundle",
    "DialogueInput",
    "Predictor",
    "export_bundle",
    "export_ensemble_bundle",
    "load",
    "parse_dialogue",
    "read_bundle",
]

_FROM = {
    "BUNDLE_VERSION": "bundle",
    "Bundle": "bundle",
    "export_bundle": "bundle",
    "export_ensemble_bundle": "bundle",
    "read_bundle": "bundle",
    "DialogueInput": "dialogue",
    "Predictor": "predictor",
    "load": "predictor",
    "parse_dialogue": "dialogue",
}


def __getattr__(name: str):
    if name in _FROM:
        import importlib

        return getattr(importlib.import_module(f"corekd.serving.{_FROM[name]}"), name)
    raise AttributeError(f"module 'corekd.serving' has no attribute {name!r}")
