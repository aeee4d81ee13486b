"""Calibration metrics: pure functions over numpy arrays or torch tensors, floats and dataclasses out.

Inputs are ``(N, K)`` class probabilities with integer labels, or ``(N,)`` confidences with 0/1
correctness (equivalently binary P(y=1) with labels). ``METRICS`` names them (``register_metric``
adds one); ``summarize`` computes them all.
"""

from .bootstrap import bootstrap_ci
from .calibration import (
    PRESETS,
    ReliabilityBins,
    calibration_error,
    classwise_calibration_error,
    decimal_edges,
    equal_mass_edges,
    reliability_bins,
)
from .registry import METRICS, REPORT_METRICS, Bins, MetricSpec, register_metric, report_metrics
from .scores import accuracy, aurc, auroc, brier_score, nll, risk_coverage_curve, selective_accuracy
from .smooth import SmoothReliability, smooth_ece, smooth_ece_at, smooth_reliability
from .summary import CONTRACT_KEYS, pad_probabilities, summarize

__all__ = [
    "CONTRACT_KEYS", "METRICS", "PRESETS", "REPORT_METRICS", "Bins", "MetricSpec", "ReliabilityBins", "SmoothReliability", "accuracy",
    "aurc", "auroc", "bootstrap_ci", "brier_score", "calibration_error", "classwise_calibration_error",
    "decimal_edges", "equal_mass_edges", "nll", "pad_probabilities", "register_metric", "reliability_bins", "report_metrics",
    "risk_coverage_curve", "selective_accuracy", "smooth_ece", "smooth_ece_at", "smooth_reliability", "summarize",
]
