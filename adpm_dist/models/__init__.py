from .adpm import ADPM, build_prior
from .adpm import build_model as build_adpm
from .denoiser import Denoiser, ImageEncoder, ImageFeatures
from .prior import PriorNetwork, PriorOutput


def build_model(cfg, class_counts: list[int]):
    """The model of ``cfg.method``: ADPM, or a baseline behind the same interface (adpm_dist/baselines)."""
    if cfg.method == "adpm":
        return build_adpm(cfg, class_counts)
    from ..methods import build_baseline  # lazy: baselines imports models' submodules

    return build_baseline(cfg, class_counts)


__all__ = ["ADPM", "build_model", "build_adpm", "build_prior", "Denoiser", "ImageEncoder", "ImageFeatures",
           "PriorNetwork", "PriorOutput"]
