"""Losses of eq. 17 (docs/algorithm.md): noise-prediction MSE on the fused chain + RBF-MMD on the prior chains."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def rbf_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """DiffMIC's Gaussian kernel k(a, b) = exp(-||a - b||^2 / D^2) for rows of (n, D) and (m, D) (eq. 17)."""
    d = a.shape[1]
    return torch.exp(-torch.cdist(a, b).pow(2) / d**2)


def rbf_mmd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Biased (V-statistic, diagonal included) MMD^2 between two samples (eq. 17)."""
    return rbf_kernel(a, a).mean() + rbf_kernel(b, b).mean() - 2 * rbf_kernel(a, b).mean()


def diffusion_loss(eps: torch.Tensor, eps_fused: torch.Tensor, eps_global: torch.Tensor | None = None,
                   eps_local: torch.Tensor | None = None, mmd_weight: float = 0.5) -> torch.Tensor:
    """Eq. 17: MSE(eps, eps_theta^f) + w (MMD(eps, eps_theta^g) + MMD(eps, eps_theta^l)).

    Chains that are switched off (ablation V2: no forward prior) are passed as None.
    """
    loss = F.mse_loss(eps_fused, eps)
    for other in (eps_global, eps_local):
        if other is not None:
            loss = loss + mmd_weight * rbf_mmd(eps, other)
    return loss
