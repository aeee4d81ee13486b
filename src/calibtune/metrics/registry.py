"""Metrics by name: ``METRICS`` (name → :class:`MetricSpec`) and :func:`register_metric`.

The order of ``METRICS`` is the order of the keys in :func:`calibtune.metrics.summarize` (and so in
``metrics.json`` and ``calibtune metrics --format json``). Every metric is called as
``fn(preds, target, mask, bins)``: ``mask`` marks the real options of ``(N, K)`` probabilities (or is
``None``), ``bins`` is the binning convention of the summary (:class:`Bins`); most metrics use neither.
Adding a metric is one :func:`register_metric` call; it then appears in every summary.

Example:
    >>> spec = METRICS["ece"]
    >>> spec.display, spec.higher_is_better
    ('ECE', False)
    >>> round(spec.bind(Bins(n_bins=2))([0.25, 0.25, 0.55, 0.75, 0.75], [0, 0, 1, 1, 1]), 4)
    0.29
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from .calibration import calibration_error, classwise_calibration_error
from .scores import accuracy, auroc, aurc, brier_score, nll, selective_accuracy
from .smooth import smooth_ece


@dataclass(frozen=True)
class Bins:
    """The binning convention of one summary (see :func:`~calibtune.metrics.reliability_bins`).

    ``n_bins`` is resolved (a number); ``binning=None`` is the preset's.
    """

    n_bins: int = 15
    binning: str | None = None
    edge: str = "right"
    preset: str | None = None


MetricFn = Callable[[Any, Any, Any, Bins], float]


@dataclass(frozen=True)
class MetricSpec:
    """One named metric: its function, its direction, how reports title it."""

    name: str
    fn: MetricFn  # fn(preds, target, mask, bins) -> float (NaN where undefined)
    higher_is_better: bool
    display: str  # column title in reports ("ECE", "Brier")
    class_probs_only: bool = False  # defined for (N, K) class probabilities only, not for (N,) confidences
    contract: bool = False  # one of the keys that every summary is guaranteed to hold (``CONTRACT_KEYS``)

    def bind(self, bins: Bins = Bins()) -> Callable[..., float]:
        """The metric as ``f(preds, target, mask=None)`` under ``bins`` (what :func:`bootstrap_ci` resamples)."""
        def f(preds: Any, target: Any, mask: Any = None) -> float:
            return self.fn(preds, target, mask, bins)
        return f


METRICS: dict[str, MetricSpec] = {}

#: The metrics that tables show (``calibtune eval``'s report, the console table), in this order; every
#: metric of :data:`METRICS` stays in ``metrics.json``. Names are checked against :data:`METRICS` on use.
REPORT_METRICS: tuple[str, ...] = ("accuracy", "ece", "ace", "mce", "rmsce", "smece", "classwise_ece", "brier", "nll",
                                   "auroc", "aurc")


def report_metrics(*, class_probs: bool = True) -> list[str]:
    """:data:`REPORT_METRICS` as registered; ``class_probs=False`` leaves out those defined only for
    ``(N, K)`` class probabilities (tables of confidences, e.g. of generated answers).

    >>> report_metrics(class_probs=False)[:3], "classwise_ece" in report_metrics(class_probs=False)
    (['accuracy', 'ece', 'ace'], False)
    """
    return [m for m in REPORT_METRICS if class_probs or not METRICS[m].class_probs_only]


def register_metric(name: str, fn: Callable[..., float], *, higher_is_better: bool, display: str,
                    binned: bool = False, class_probs_only: bool = False, contract: bool = False) -> MetricSpec:
    """Add the metric ``name`` to :data:`METRICS` (after the ones registered before) and return its spec.

    ``fn(preds, target)`` returns a float; with ``binned=True`` it is ``fn(preds, target, mask, bins)`` and
    also gets the options mask (or ``None``) and the summary's :class:`Bins`. A name already registered
    is a ``ValueError``.

    Example:
        >>> spec = register_metric("error_rate", lambda p, t: 1 - accuracy(p, t), higher_is_better=False,
        ...                        display="error rate")
        >>> spec.bind()([[0.9, 0.1], [0.3, 0.7]], [0, 0])
        0.5
        >>> del METRICS["error_rate"]
    """
    if name in METRICS:
        raise ValueError(f"Metric {name!r} is already registered; registered metrics: {list(METRICS)}.")
    call = fn if binned else _ignore_bins(fn)
    spec = MetricSpec(name=name, fn=call, higher_is_better=higher_is_better, display=display,
                      class_probs_only=class_probs_only, contract=contract)
    METRICS[name] = spec
    return spec


def _ignore_bins(fn: Callable[[Any, Any], float]) -> MetricFn:
    def call(preds: Any, target: Any, mask: Any, bins: Bins) -> float:
        return fn(preds, target)
    return call


def _binned(norm: str) -> MetricFn:
    def call(preds: Any, target: Any, mask: Any, bins: Bins) -> float:
        return calibration_error(preds, target, n_bins=bins.n_bins, binning=bins.binning, edge=bins.edge,
                                 preset=bins.preset, norm=norm)
    return call


def _ace(preds: Any, target: Any, mask: Any, bins: Bins) -> float:
    return calibration_error(preds, target, n_bins=bins.n_bins, binning="mass", edge=bins.edge)


def _classwise(preds: Any, target: Any, mask: Any, bins: Bins) -> float:
    return classwise_calibration_error(preds, target, n_bins=bins.n_bins, edge=bins.edge, mask=mask)


register_metric("accuracy", accuracy, higher_is_better=True, display="accuracy", contract=True)
register_metric("ece", _binned("l1"), higher_is_better=False, display="ECE", binned=True, contract=True)
register_metric("mce", _binned("max"), higher_is_better=False, display="MCE", binned=True, contract=True)
register_metric("rmsce", _binned("l2"), higher_is_better=False, display="RMSCE", binned=True, contract=True)
register_metric("ace", _ace, higher_is_better=False, display="ACE", binned=True, contract=True)
register_metric("smece", smooth_ece, higher_is_better=False, display="smECE", contract=True)
register_metric("brier", brier_score, higher_is_better=False, display="Brier", contract=True)
register_metric("nll", nll, higher_is_better=False, display="NLL", contract=True)
register_metric("auroc", auroc, higher_is_better=True, display="AUROC", contract=True)
register_metric("aurc", aurc, higher_is_better=False, display="AURC")
register_metric("selective_accuracy_10", partial(selective_accuracy, coverage=0.1), higher_is_better=True,
                display="selective accuracy (10%)")
register_metric("classwise_ece", _classwise, higher_is_better=False, display="classwise ECE", binned=True,
                class_probs_only=True, contract=True)
