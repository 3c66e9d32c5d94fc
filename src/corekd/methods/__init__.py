"""Training objectives: one module per method, found by name through the registry.

Adding a method: write ``corekd/methods/<name>.py`` with a ``@register``-ed :class:`Method`
subclass, and add its import below (the one registry line).
"""

from corekd.methods import (  # noqa: F401  (registers the methods)  # noqa: F401,E402  (methods with their own model modules)  # noqa: F401  (baselines, issue 14)
    contrastive_view,
    corekd,
    corrkd,
    decoupled,
    gcnet,
    mmin,
    no_kd,
    reconstruction,
    teacher,
    vanilla_kd,
)
from corekd.methods.base import Method, StepContext, TrainView
from corekd.methods.registry import method_class, register, registered

__all__ = ["Method", "StepContext", "TrainView", "method_class", "register", "registered"]
