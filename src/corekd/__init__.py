"""corekd: robust multimodal emotion recognition in conversations when modalities go missing.

Python entry points: :func:`corekd.run` (the same job as ``corekd run``), the corpus API in
:mod:`corekd.data`, the methods registry in :mod:`corekd.methods`.
"""

__version__ = "0.1.0"

from corekd.pipeline import run  # noqa: E402

__all__ = ["__version__", "run"]
