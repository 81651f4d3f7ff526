"""The logit-adjusted prior as the chains' mean (method=adpm_adjusted_chain; docs/algorithm.md,
"Adjusted chain (eq. 5 and 16 with the adjusted prior)"). Pure functions.

mu_k = softmax(z_k - tau log pi) for each prior branch k (logits z_k), pi_j = n_j / sum n the training
class frequencies: Menon et al. (2021)'s post-hoc logit adjustment (their eq. 9) applied to the mean
the label diffuses toward, instead of to a read-out after the chain. tau = 0 is ADPM's own mean;
tau = 1 turns a prior that estimates p(y | x) under the training distribution into an estimate under
balanced classes (the balanced error's Bayes rule, Menon et al. Sec. 4).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def adjustment_shift(class_counts: Sequence[float] | torch.Tensor, tau: float) -> torch.Tensor:
    """-tau log pi_j (float32, shape (K,)): what the chains add to the prior's logits. A class with no
    training sample counts as n_j = 1, so that no shift is infinite (as the baselines' losses do)."""
    if tau < 0:
        raise ValueError(f"model.chain_tau must be >= 0, got {tau}")
    n = torch.as_tensor(class_counts, dtype=torch.float64).clamp_min(1.0)
    if n.ndim != 1 or n.numel() == 0:
        raise ValueError(f"class counts must be a non-empty 1-D sequence, got {class_counts!r}")
    return (-tau * (n / n.sum()).log()).float()


def adjusted_prior(logits: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """softmax(logits + shift) in float32 (also under autocast): p_j proportional to e^{z_j} pi_j^-tau."""
    return F.softmax(logits.float() + shift.to(logits.device, torch.float32), dim=1)
