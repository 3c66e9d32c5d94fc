"""Models: encoders, dialogue context, fusion, and the model that composes them."""

from corekd.models.model import ERCModel, ModelConfig, Output

__all__ = ["ERCModel", "ModelConfig", "Output"]
