"""Using a trained model: bundles (:mod:`.bundle`), the Python predictor (:mod:`.predictor`), input readers
for ``corekd predict`` (:mod:`.inputs`), the HTTP service (:mod:`.app`) and ONNX export (:mod:`.onnx_export`).

``corekd.load(path)`` is :func:`corekd.serving.predictor.load`. The HTTP service and ONNX export
need the ``serve`` extra (``pip install 'corekd[serve]'``).
"""

from corekd.serving.bundle import BUNDLE_VERSION, Bundle, export_bundle, read_bundle
from corekd.serving.predictor import DialogueInput, Predictor, load, parse_dialogue

__all__ = ["BUNDLE_VERSION", "Bundle", "DialogueInput", "Predictor", "export_bundle", "load", "parse_dialogue", "read_bundle"]
