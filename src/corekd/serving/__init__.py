"""Using a trained model: bundles (:mod:`.bundle`), the Python predictor (:mod:`.predictor`), input readers
for ``corekd predict`` (:mod:`.inputs`), the HTTP service (:mod:`.app`, its request schema in :mod:`.schema`)
and ONNX export (:mod:`.onnx_export`).

``corekd.load(path)`` is :func:`corekd.serving.predictor.load`. The HTTP service and ONNX export
need the ``serve`` extra (``pip install 'corekd[serve]'``).

The names below are imported on first use, so that the service's request-parsing worker processes
(:mod:`corekd.serving.schema`) start without torch.
"""

__all__ = ["BUNDLE_VERSION", "Bundle", "DialogueInput", "Predictor", "export_bundle", "load", "parse_dialogue", "read_bundle"]

_FROM = {"BUNDLE_VERSION": "bundle", "Bundle": "bundle", "export_bundle": "bundle", "read_bundle": "bundle",
         "DialogueInput": "predictor", "Predictor": "predictor", "load": "predictor", "parse_dialogue": "predictor"}


def __getattr__(name: str):
    if name in _FROM:
        import importlib

        return getattr(importlib.import_module(f"corekd.serving.{_FROM[name]}"), name)
    raise AttributeError(f"module 'corekd.serving' has no attribute {name!r}")
