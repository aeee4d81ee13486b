"""Moved to :mod:`calibtune.training.open`; this import path keeps working."""

from .training.open import *  # noqa: F403
