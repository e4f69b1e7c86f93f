"""scikit-learn estimators: TopyEncoder (the paper's model) and the field's baselines."""

from .afo import AllForOneEncoder
from .linear import LinearProbeEncoder
from .ridge import ridge_cv
from .topy import TopyEncoder

__all__ = ["AllForOneEncoder", "LinearProbeEncoder", "TopyEncoder", "ridge_cv"]
