"""Experiments: a base config plus axes (corpora, seeds, method variants, a sweep's values) run as units.

``run`` is ``corekd run`` (one corpus; a sweep when the config has one), ``compare`` is ``corekd compare`` (a grid).
Imported on first use, so that :mod:`corekd.experiments.folder` (read by the CLI before anything heavy) does not
pull in torch.
"""

__all__ = ["GridResult", "Interrupted", "RunResult", "compare", "read_results", "run"]


def __getattr__(name: str):
    if name in ("GridResult", "Interrupted", "RunResult", "compare", "run"):
        from corekd.experiments import engine

        return getattr(engine, name)
    if name == "read_results":
        from corekd.experiments.folder import read_results

        return read_results
    raise AttributeError(f"module 'corekd.experiments' has no attribute {name!r}")
