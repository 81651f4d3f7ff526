"""Long-tail baselines on ADPM's data pipeline, training loop, selection and metrics (``method=``).

losses.py: the losses as pure functions; model.py: the models behind the loop's interface and
``build_baseline``; docs/baselines.md: methods, keys, formulas, references, the quality benchmark.
"""
from .classifiers import CLASSIFIER_METHODS, Baseline, build_baseline, training_epochs

__all__ = ["CLASSIFIER_METHODS", "Baseline", "build_baseline", "training_epochs"]
