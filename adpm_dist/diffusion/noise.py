"""Imbalance-sensitive noise levels lambda_j: pure functions (eq. 14 and 18, docs/algorithm.md).

lambda_j scales the noise standard deviation of class j's forward process (eq. 5, docs/algorithm.md):
rarer classes diffuse faster, so the denoiser must learn wider basins for them. With
``noise.apply = variance`` (the alternative of eq. 5 in docs/algorithm.md) lambda_j scales the variance instead, i.e.
the standard deviation by sqrt(lambda_j): ``noise_std`` is the one place that choice is made.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

FORMULAS = ("A", "B", "power")
APPLY = ("std", "variance")
RULES = ("expected", "argmax")


@dataclass(frozen=True)
class NoiseLaw:
    """The noise settings a trained model keeps (``noise.*``): eq. 14's parameters for re-estimating
    lambda_j on other counts, how lambda scales the noise, and the test-time rule of eq. 18."""
    alpha: float = 1.0 / 6.0
    beta: float = 5.0
    formula: str = "A"
    n_floor: float = 0
    apply: str = "std"
    test_rule: str = "expected"

    def levels(self, counts: Sequence[float] | torch.Tensor) -> torch.Tensor:
        return class_noise_levels(counts, alpha=self.alpha, beta=self.beta, formula=self.formula,
                                  n_floor=self.n_floor)


def class_noise_levels(counts: Sequence[float], *, alpha: float, beta: float, formula: str = "A",
                       n_floor: float = 0) -> torch.Tensor:
    """Per-class noise level lambda_j from the training counts n_j (eq. 14, reconstructed).

    Power law of the expected loss (eq. 7): L(n) = beta * n^-alpha + c. lambda_j is the ratio of
    class j's expected loss to the head class's, so the head class keeps the isotropic DDPM noise:
      A:     (1 + beta (n_max/n_j)^alpha) / (1 + beta)                 c = n_max^-alpha (default)
      B:     (beta n_j^-alpha + 1) / (beta n_max^-alpha + 1)           c = 1
      power: (n_max/n_j)^alpha                                         c = 0 (beta cancels)
    All give 1 for the head class, 1 everywhere when alpha = 0, and lie in [1, IR^alpha].
    n_floor raises tiny classes first (docs/algorithm.md, "Noise levels (eq. 14)": Hyper-Kvasir's tail).
    """
    if formula not in FORMULAS:
        raise ValueError(f"noise.formula: {formula!r} is not one of {', '.join(FORMULAS)}")
    n = torch.as_tensor(counts, dtype=torch.float64)
    if n.ndim != 1 or n.numel() == 0:
        raise ValueError(f"class counts must be a non-empty 1-D sequence, got {counts!r}")
    n = n.clamp(min=max(float(n_floor), 1.0))  # an empty class would give an infinite level
    n_max = n.max()
    if formula == "A":
        levels = (1 + beta * (n_max / n) ** alpha) / (1 + beta)
    elif formula == "B":
        levels = (beta * n ** -alpha + 1) / (beta * n_max ** -alpha + 1)
    else:
        levels = (n_max / n) ** alpha
    return levels.float()


def estimated_noise_level(probs: torch.Tensor, levels: torch.Tensor, rule: str = "expected") -> torch.Tensor:
    """lambda_hat(x) for an unlabelled image from the prior's class probabilities (eq. 18, docs/algorithm.md).

    expected: sum_j p_j lambda_j (in [1, max lambda]);  argmax: lambda of the prior's predicted class.
    Returns shape (B, 1) so it broadcasts over the K label dimensions.
    """
    levels = levels.to(probs.device, probs.dtype)
    if rule == "expected":
        lam = probs @ levels
    elif rule == "argmax":
        lam = levels[probs.argmax(dim=1)]
    else:
        raise ValueError(f"noise.test_rule: {rule!r} is not one of {', '.join(RULES)}")
    return lam.unsqueeze(1)


def noise_std(lam: torch.Tensor, apply: str = "std") -> torch.Tensor:
    """The factor on the noise standard deviation for noise level lambda (docs/algorithm.md, "Forward process (eq. 5)").

    std: lambda itself (recommended); variance: sqrt(lambda), so the variance is lambda (1 - abar).
    Test-time levels (eq. 18) are estimated on lambda first and converted here afterwards.
    """
    if apply == "std":
        return lam
    if apply == "variance":
        return lam.sqrt()
    raise ValueError(f"noise.apply: {apply!r} is not one of {', '.join(APPLY)}")


def soft_counts(probs: torch.Tensor) -> torch.Tensor:
    """n_hat_j = sum_x p_j(x): expected class counts of unlabelled images (alternative of eq. 18).

    Fed to ``class_noise_levels`` in place of the training counts it re-estimates lambda_j on the
    evaluated images themselves; formula A only uses the ratios n_max / n_j, so the (smaller) test
    set size does not matter there, while formula B depends on absolute counts.
    """
    return probs.float().sum(dim=0)
