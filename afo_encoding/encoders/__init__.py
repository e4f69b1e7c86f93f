"""scikit-learn estimators: TopyEncoder (the paper's model) and the field's baselines."""

from .topy import TopyEncoder

__all__ = ["TopyEncoder"]
