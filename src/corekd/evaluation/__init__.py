"""Evaluation: metrics, predictions under masks, reports built from flat records."""

from corekd.evaluation.metrics import METRICS, classification_metrics
from corekd.evaluation.predict import Predictions, predict, run_model
from corekd.evaluation.report import render_report, write_report

__all__ = ["METRICS", "Predictions", "classification_metrics", "predict", "render_report", "run_model", "write_report"]
