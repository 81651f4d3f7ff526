"""Long-tail classification losses as pure functions of (logits, labels, class counts, settings).

n_j = training samples of class j (the DataPlan's class_counts, i.e. after the validation carve-out),
pi_j = n_j / sum n, K = number of classes. A class with no training sample counts as n_j = 1 so
that no weight or log-prior is infinite. Every mean over the batch is PyTorch's: a plain mean, or,
with class weights w, the weighted mean sum_i w_{y_i} l_i / sum_i w_{y_i} (F.cross_entropy's rule,
also the one Cao et al.'s LDAM-DRW code uses). tests/test_baselines.py checks each against its
closed form.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _counts(class_counts, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(class_counts, dtype=torch.float64).clamp_min(1.0).to(like.device, torch.float32)


def inverse_frequency_weights(class_counts, like: torch.Tensor | None = None) -> torch.Tensor:
    """w_j = (1 / n_j) / mean_k (1 / n_k): inverse class frequency, normalised to mean 1."""
    inv = 1.0 / _counts(class_counts, like if like is not None else torch.empty(0))
    return inv / inv.mean()


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, class_counts) -> torch.Tensor:
    """Class-weighted CE with the inverse-frequency weights above (weighted batch mean)."""
    return F.cross_entropy(logits, labels, weight=inverse_frequency_weights(class_counts, logits))


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, *, gamma: float) -> torch.Tensor:
    """Lin et al. 2017, eq. 4 without alpha: mean_i -(1 - p_{y_i})^gamma log p_{y_i}; gamma = 0 is CE."""
    log_p = F.log_softmax(logits, dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)
    return (-(1.0 - log_p.exp()).pow(gamma) * log_p).mean()


def log_prior(class_counts, like: torch.Tensor) -> torch.Tensor:
    """log pi_j = log(n_j / sum n)."""
    n = _counts(class_counts, like)
    return (n / n.sum()).log()


def logit_adjusted_loss(logits: torch.Tensor, labels: torch.Tensor, class_counts, *, tau: float) -> torch.Tensor:
    """Menon et al. 2021, eq. 10: CE(f(x) + tau log pi, y). Predict with f(x) alone (the balanced error's
    Bayes rule for tau = 1). tau = 0 is CE."""
    return F.cross_entropy(logits + tau * log_prior(class_counts, logits), labels)


def balanced_softmax_loss(logits: torch.Tensor, labels: torch.Tensor, class_counts) -> torch.Tensor:
    """Ren et al. 2020, eq. 4: CE on softmax_j(f_j + log n_j), i.e. n_j e^{f_j} / sum_k n_k e^{f_k}.

    log n_j and log pi_j differ by a constant, so this equals the logit-adjusted loss with tau = 1
    (Menon et al. note the equivalence); both are kept because both are cited baselines.
    """
    return F.cross_entropy(logits + _counts(class_counts, logits).log(), labels)


def ldam_margins(class_counts, *, max_margin: float, like: torch.Tensor | None = None) -> torch.Tensor:
    """Cao et al. 2019, eq. 12: Delta_j = C / n_j^(1/4), C chosen so that the largest margin (rarest
    class) is ``max_margin``."""
    q = _counts(class_counts, like if like is not None else torch.empty(0)).pow(-0.25)
    return q * (max_margin / q.max())


def ldam_loss(cosines: torch.Tensor, labels: torch.Tensor, class_counts, *, max_margin: float, scale: float,
              weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cao et al. 2019, eq. 13 as in their code: CE(scale * (cos - Delta_y 1[j = y]), y, weight).

    ``cosines``: (B, K) cosines between the normalised feature and the normalised class weights
    (``model.CosineHead``). ``weight``: per-class weights (DRW), or None.
    """
    margins = ldam_margins(class_counts, max_margin=max_margin, like=cosines)
    shifted = cosines - F.one_hot(labels, cosines.shape[1]).to(cosines.dtype) * margins[labels].unsqueeze(1)
    return F.cross_entropy(scale * shifted, labels, weight=weight)


def class_balanced_weights(class_counts, *, beta: float, like: torch.Tensor | None = None) -> torch.Tensor:
    """Cui et al. 2019: w_j proportional to 1 / E_{n_j} = (1 - beta) / (1 - beta^n_j), normalised to
    sum K (Cao et al.'s DRW code). beta = 0: all 1; beta -> 1: inverse frequency."""
    n = _counts(class_counts, like if like is not None else torch.empty(0)).double()
    w = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), n))
    return (w * (len(w) / w.sum())).float()


def drw_weights(class_counts, *, beta: float, epoch: int, start_epoch: int,
                like: torch.Tensor | None = None) -> torch.Tensor | None:
    """Deferred re-weighting (Cao et al. 2019, Alg. 1): no weights before ``start_epoch``, then the
    class-balanced weights above."""
    return class_balanced_weights(class_counts, beta=beta, like=like) if epoch >= start_epoch else None
