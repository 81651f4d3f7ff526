from .adpm import ADPM, build_model
from .denoiser import Denoiser, ImageEncoder, ImageFeatures
from .prior import PriorNetwork, PriorOutput

__all__ = ["ADPM", "build_model", "Denoiser", "ImageEncoder", "ImageFeatures", "PriorNetwork", "PriorOutput"]
