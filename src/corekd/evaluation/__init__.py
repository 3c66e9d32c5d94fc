"""Evaluation: metrics, predictions under masks, mechanism analyses, the defaults' provenance (reports: corekd.reporting)."""

from corekd.evaluation.metrics import METRICS, classification_metrics
from corekd.evaluation.predict import Predictions, predict, run_model

__all__ = ["METRICS", "Predictions", "classification_metrics", "predict", "run_model"]
