"""scikit-learn estimators: TopyEncoder (the paper's model) and the field's baselines."""

from .linear import LinearProbeEncoder
from .ridge import ridge_cv
from .topy import TopyEncoder

__all__ = ["LinearProbeEncoder", "TopyEncoder", "ridge_cv"]
