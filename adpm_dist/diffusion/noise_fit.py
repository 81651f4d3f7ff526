"""The noise law fitted, not searched: eq. 7's power law fitted to per-class losses, mapped onto eq. 14.

The paper (docs/algorithm.md, "Expected-loss power law (eq. 7)") models the expected loss of a class
trained on n images as E[L](n) = beta n^-alpha + c and sets the noise level of class j from it
("Noise levels (eq. 14)"): lambda_j = E[L](n_j) / E[L](n_max). It then grid-searches alpha and beta.
Here the law is fitted instead, to the per-class validation losses of a model trained on the same
counts (tune/search_noise.py --fit, docs/tune.md): weighted least squares, bootstrap intervals over
the validation samples, a goodness of fit that says whether a power law describes the losses at all,
and the `noise.*` settings under which `class_noise_levels` reproduces the fitted ratio exactly.

Pure numpy/scipy; no torch, no files.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import least_squares, nnls

MIN_CLASSES = 3            # three parameters: fewer classes cannot determine the law
ALPHA_STARTS = (0.1, 0.5, 1.0, 2.0)  # deterministic multi-start: the cost is not convex in alpha
# Upper bound of alpha. Learning curves fall like n^-0.1 .. n^-1 (the paper's grid: 0 .. 1); a larger
# alpha only fits one outlying small class (b -> 0, alpha -> infinity, never converging). A fit that
# ends on this bound says so in its verdict.
ALPHA_MAX = 4.0
TINY_C = 1e-9              # c below this share of the head class's loss counts as 0 (formula power)


@dataclass(frozen=True)
class PowerLawFit:
    """E[L](n) = beta n^-alpha + c (eq. 7) fitted to per-class mean losses, and what it was fitted on.

    r2: weighted R^2 of the law against the constant model L = c (the weighted mean loss), which has
    R^2 0 by construction: 1 = the counts explain every difference between the classes' losses,
    <= 0 = a power law in n is no better than one loss for all classes. With 3 classes the law
    passes through every point (3 parameters): r2 is 1 trivially and r2_adjusted is None.
    """
    alpha: float
    beta: float
    c: float
    counts: tuple[float, ...]
    losses: tuple[float, ...]
    weights: tuple[float, ...]
    r2: float
    r2_adjusted: float | None
    sse: float                 # weighted residual sum of squares of the law
    sse_constant: float        # ... of the constant model

    def predict(self, n) -> np.ndarray:
        return self.beta * np.asarray(n, dtype=float) ** -self.alpha + self.c

    def verdict(self) -> str:
        """One line: does the per-class loss follow a power law in n at all?"""
        adj = "n/a with 3 classes" if self.r2_adjusted is None else f"{self.r2_adjusted:.3f}"
        bound = f"; alpha ended on its bound {ALPHA_MAX:g}: no learning curve" if self.alpha >= ALPHA_MAX - 1e-9 else ""
        return (f"power law explains {100 * self.r2:.1f}% of the weighted variance of the {len(self.counts)} "
                f"class losses around one constant loss (R^2 {self.r2:.3f}, adjusted {adj}; constant model: 0){bound}")

    def to_dict(self) -> dict:
        return asdict(self) | {"verdict": self.verdict()}


def fit_power_law(counts: Sequence[float], losses: Sequence[float], *,
                  weights: Sequence[float] | None = None, alpha_starts: Sequence[float] = ALPHA_STARTS) -> PowerLawFit:
    """Weighted least squares of L_j = beta n_j^-alpha + c (eq. 7) with alpha, beta, c >= 0 (alpha <= ALPHA_MAX).

    weights: per class, typically its number of validation samples, so that a class's mean loss
    counts by its precision; classes with weight 0 are left out. Deterministic (fixed starts;
    the bootstrap starts its refits at the point fit's alpha only).
    """
    n, loss, w = _checked(counts, losses, weights)
    n_max = n.max()
    x = n / n_max  # fitted as b x^-alpha + c with b = beta n_max^-alpha: well conditioned for any n
    best = min((_refine(x, loss, w, a0) for a0 in alpha_starts), key=lambda r: r.cost)
    alpha, b, c = (float(v) for v in best.x)
    beta = float(b * n_max ** alpha)
    fitted = b * x ** -alpha + c
    sse = float(np.sum(w * (loss - fitted) ** 2))
    sse_constant = float(np.sum(w * (loss - np.average(loss, weights=w)) ** 2))
    varies = sse_constant > 1e-18 * float(np.sum(w * loss ** 2))  # else equal losses up to rounding
    r2 = 1.0 - sse / sse_constant if varies else 0.0  # equal losses: nothing for the counts to explain
    m = len(n)
    r2_adjusted = 1.0 - (1.0 - r2) * (m - 1) / (m - 3) if m > 3 else None
    return PowerLawFit(alpha, beta, c, tuple(map(float, n)), tuple(map(float, loss)), tuple(map(float, w)),
                       r2, r2_adjusted, sse, sse_constant)


def _checked(counts, losses, weights) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(counts, losses, weights) of the classes with data, or a ValueError naming the problem."""
    n, loss = np.asarray(counts, dtype=float), np.asarray(losses, dtype=float)
    w = np.ones_like(loss) if weights is None else np.asarray(weights, dtype=float)
    if not (n.ndim == loss.ndim == w.ndim == 1) or not (len(n) == len(loss) == len(w)):
        raise ValueError(f"counts, losses and weights must be 1-D and of one length; got lengths "
                         f"{len(np.atleast_1d(n))}, {len(np.atleast_1d(loss))}, {len(np.atleast_1d(w))}")
    for name, v in (("counts", n), ("losses", loss), ("weights", w)):
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name} contain NaN or infinite values: {v.tolist()}")
    if np.any(w < 0):
        raise ValueError(f"weights must be >= 0, got {w.tolist()}")
    keep = w > 0
    if np.any(n[keep] <= 0):
        raise ValueError(f"training counts must be > 0 (n^-alpha), got {n[keep].tolist()}")
    if keep.sum() < MIN_CLASSES:
        raise ValueError(f"fitting beta n^-alpha + c needs >= {MIN_CLASSES} classes with data (weight > 0), "
                         f"got {int(keep.sum())}")
    return n[keep], loss[keep], w[keep]


def _refine(x: np.ndarray, loss: np.ndarray, w: np.ndarray, alpha0: float):
    """Bounded nonlinear least squares from alpha0, with b and c started at their best for that alpha."""
    sw = np.sqrt(w)
    design = np.stack([x ** -alpha0, np.ones_like(x)], axis=1)
    (b0, c0), _ = nnls(design * sw[:, None], loss * sw)  # linear in (b, c) given alpha: exact, >= 0

    def residuals(p):
        return sw * (p[1] * x ** -p[0] + p[2] - loss)

    return least_squares(residuals, x0=[alpha0, b0, c0], bounds=([0, 0, 0], [ALPHA_MAX, np.inf, np.inf]),
                         method="trf", x_scale="jac", xtol=1e-13, ftol=1e-13, gtol=1e-13, max_nfev=500)


@dataclass(frozen=True)
class BootstrapFit:
    """The point fit and percentile intervals of alpha, beta, c over refits on resampled validation losses."""
    fit: PowerLawFit
    intervals: dict[str, tuple[float, float]]
    n_boot: int
    seed: int
    level: float

    def to_dict(self) -> dict:
        return {"fit": self.fit.to_dict(), "intervals": {k: list(v) for k, v in self.intervals.items()},
                "n_boot": self.n_boot, "seed": self.seed, "level": self.level}


def bootstrap_fit(counts: Sequence[float], class_losses: Sequence[Sequence[float]], *, n_boot: int = 200,
                  seed: int = 0, level: float = 0.9) -> BootstrapFit:
    """Fit eq. 7 to per-class mean losses (weights = samples per class) and bootstrap it.

    class_losses: per class, its per-sample validation losses (NLL). Each replicate resamples the
    samples within every class with replacement (classes keep their sizes; classes without samples
    are left out) and refits; the intervals are the (1 -+ level) / 2 percentiles of the refits.
    """
    if len(counts) != len(class_losses):
        raise ValueError(f"counts and class_losses must have one entry per class; got {len(counts)} and "
                         f"{len(class_losses)}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    present = [(n, np.asarray(s, dtype=float)) for n, s in zip(counts, class_losses) if len(s) > 0]
    n = [p[0] for p in present]
    samples = [p[1] for p in present]
    sizes = [len(s) for s in samples]
    fit = fit_power_law(n, [s.mean() for s in samples], weights=sizes)
    rng = np.random.default_rng(seed)
    draws = np.array([_refit(n, samples, sizes, rng, fit.alpha) for _ in range(n_boot)])
    tail = 100 * (1 - level) / 2
    intervals = {name: (float(np.percentile(draws[:, i], tail)), float(np.percentile(draws[:, i], 100 - tail)))
                 for i, name in enumerate(("alpha", "beta", "c"))} if n_boot else {}
    return BootstrapFit(fit, intervals, n_boot, seed, level)


def _refit(n, samples, sizes, rng, alpha0: float) -> tuple[float, float, float]:
    means = [s[rng.integers(0, len(s), len(s))].mean() for s in samples]
    f = fit_power_law(n, means, weights=sizes, alpha_starts=(min(max(alpha0, 0.05), ALPHA_MAX - 0.05),))
    return f.alpha, f.beta, f.c


def eq14_settings(fit: PowerLawFit) -> dict:
    """`noise.*` overrides under which eq. 14 (`class_noise_levels`) gives lambda_j = E[L](n_j) / E[L](n_max).

    (beta n_j^-alpha + c) / (beta n_max^-alpha + c) is formula B, (beta' n^-alpha + 1) / (beta' n_max^-alpha + 1),
    with beta' = beta / c. For c = 0 (or negligible against the head class's loss) it is formula
    `power`, (n_max / n_j)^alpha, where beta cancels; for beta = 0 every class has the same expected
    loss: alpha = 0, the isotropic model. The counts must be the ones the law was fitted on (the
    training counts of the run that will use these settings), since formula B uses absolute counts.
    """
    head = fit.beta * max(fit.counts) ** -fit.alpha
    if fit.beta <= 0 or head <= 0:
        return {"noise.alpha": 0.0, "noise.beta": 1.0, "noise.formula": "power"}
    if fit.c <= TINY_C * head:
        return {"noise.alpha": fit.alpha, "noise.beta": 1.0, "noise.formula": "power"}
    return {"noise.alpha": fit.alpha, "noise.beta": fit.beta / fit.c, "noise.formula": "B"}


__all__ = ["PowerLawFit", "BootstrapFit", "fit_power_law", "bootstrap_fit", "eq14_settings"]
