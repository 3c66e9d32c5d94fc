"""Training objectives: one module per method, found by name through the registry.

Adding a method: write ``corekd/methods/<name>.py`` with a ``@register``-ed :class:`Method`
subclass, and add its import below (the one registry line).
"""

from corekd.methods import corekd, no_kd, teacher, vanilla_kd  # noqa: F401  (registers the methods)
from corekd.methods import decoupled, reconstruction  # noqa: F401,E402  (methods with their own model modules)
from corekd.methods import contrastive_view, corrkd  # noqa: F401  (baselines, issue 14)
from corekd.methods.base import Method, StepContext, TrainView
from corekd.methods.registry import method_class, register, registered

__all__ = ["Method", "StepContext", "TrainView", "method_class", "register", "registered"]
