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


# ---------------------------------------------------------------- issue 19: decoupled, post-hoc, VS, GCL, MiSLAS
# Equation numbers are given where the paper numbers the formula; otherwise its section.

def posthoc_adjusted_logits(logits: torch.Tensor, class_counts, *, tau: float) -> torch.Tensor:
    """Menon et al. 2021, eq. 9: predict argmax_j f_j(x) - tau log pi_j (post-hoc logit adjustment of a
    classifier trained with plain CE). tau = 0: the classifier's own scores."""
    return logits - tau * log_prior(class_counts, logits)


def tau_normalised_weight(weight: torch.Tensor, *, tau: float) -> torch.Tensor:
    """Kang et al. 2020, Sec. 4 (tau-normalised classifier): w_j / ||w_j||^tau for every class row j of a
    (K, C) linear weight. tau = 0: unchanged; tau = 1: unit rows (every class the same norm)."""
    return weight / weight.norm(dim=1, keepdim=True).clamp_min(1e-12).pow(tau)


def vs_loss(logits: torch.Tensor, labels: torch.Tensor, class_counts, *, gamma: float, tau: float) -> torch.Tensor:
    """Kini et al. 2021, the VS loss (Sec. 3, without class weights): CE(Delta * f(x) + iota, y) with
    Delta_j = (n_j / n_max)^gamma (multiplicative, the CDT part) and iota_j = tau log pi_j (additive, the
    LA part). gamma = 0: the logit-adjusted loss; gamma = tau = 0: CE. Predict with f(x) alone."""
    n = _counts(class_counts, logits)
    delta = (n / n.max()).pow(gamma)
    return F.cross_entropy(logits * delta + tau * log_prior(class_counts, logits), labels)


def gcl_cosines(cosines: torch.Tensor, class_counts, *, noise_mul: float, eps: torch.Tensor) -> torch.Tensor:
    """Li et al. 2022, Sec. 3.2 (Gaussian clouded logits), as their code: cos_j - noise_mul |e_j| m_j / max m
    with m_j = log n_max - log n_j and e ~ N(0, 1) clipped to [-1, 1] per sample and class (``eps``: the
    unclipped draw, from the caller's generator). The head class (m = 0) gets no cloud, the rarest the largest."""
    m = _counts(class_counts, cosines).log()
    m = m.max() - m
    return cosines - noise_mul * eps.clamp(-1, 1).abs() * (m / m.max().clamp_min(1e-12))


def gcl_loss(cosines: torch.Tensor, labels: torch.Tensor, class_counts, *, noise_mul: float, scale: float,
             margin: float, eps: torch.Tensor) -> torch.Tensor:
    """Li et al. 2022, stage 1: CE(scale * (clouded cosines - margin 1[j = y]), y); margin = 0 in their
    default setting. noise_mul = margin = 0: a cosine classifier with CE."""
    clouded = gcl_cosines(cosines, class_counts, noise_mul=noise_mul, eps=eps)
    clouded = clouded - margin * F.one_hot(labels, cosines.shape[1]).to(cosines.dtype)
    return F.cross_entropy(scale * clouded, labels)


def mixup_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, partner: torch.Tensor, *,
                        lam: float) -> torch.Tensor:
    """Zhang et al. 2018 (mixup), as MiSLAS stage 1: lam CE(f(x~), y) + (1 - lam) CE(f(x~), y'), where
    x~ = lam x + (1 - lam) x' was mixed by the caller and y' (``partner``) is the label of x'."""
    return lam * F.cross_entropy(logits, labels) + (1.0 - lam) * F.cross_entropy(logits, partner)


def label_aware_epsilons(class_counts, *, head: float, tail: float, shape: str,
                         like: torch.Tensor | None = None) -> torch.Tensor:
    """Zhong et al. 2021, eq. 6: epsilon_j = f(n_j) from ``tail`` (n_min) to ``head`` (n_max):
    concave eps_K + (eps_1 - eps_K) sin(pi r / 2), linear eps_K + (eps_1 - eps_K) r, convex
    eps_1 + (eps_1 - eps_K) sin(3 pi / 2 + pi r / 2), with r = (n_j - n_min) / (n_max - n_min)."""
    n = _counts(class_counts, like if like is not None else torch.empty(0)).double()
    r = (n - n.min()) / (n.max() - n.min()).clamp_min(1e-12)
    if shape == "concave":
        eps = tail + (head - tail) * torch.sin(torch.pi * r / 2)
    elif shape == "linear":
        eps = tail + (head - tail) * r
    elif shape == "convex":
        eps = head + (head - tail) * torch.sin(1.5 * torch.pi + torch.pi * r / 2)
    else:
        raise ValueError(f"label-aware smoothing shape {shape!r} is not one of concave, linear, convex")
    return eps.float()


def label_aware_smoothing_loss(logits: torch.Tensor, labels: torch.Tensor, class_counts, *, head: float,
                               tail: float, shape: str) -> torch.Tensor:
    """Zhong et al. 2021, eq. 5: CE against q = (1 - eps_y) onehot(y) + eps_y / K (uniform), eps_y from
    ``label_aware_epsilons``: mean_i (1 - eps_{y_i}) (-log p_{y_i}) + eps_{y_i} mean_j (-log p_j).
    head = tail = 0: CE; head = tail = e: PyTorch's label_smoothing=e."""
    eps = label_aware_epsilons(class_counts, head=head, tail=tail, shape=shape, like=logits)[labels]
    log_p = F.log_softmax(logits, dim=1)
    nll = -log_p.gather(1, labels.unsqueeze(1)).squeeze(1)
    return ((1.0 - eps) * nll + eps * (-log_p.mean(dim=1))).mean()
