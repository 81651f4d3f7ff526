"""The networks: the DCG prior (prior.py), the denoiser and its image encoder (denoiser.py), timm
feature maps (backbone.py), and ADPM as one module (adpm.py). Which network a method trains is the
method's business (adpm_dist/methods)."""
from .adpm import ADPM, build_prior
from .adpm import build_model as build_adpm
from .denoiser import Denoiser, ImageEncoder, ImageFeatures
from .prior import PriorNetwork, PriorOutput

__all__ = ["ADPM", "build_adpm", "build_prior", "Denoiser", "ImageEncoder", "ImageFeatures",
           "PriorNetwork", "PriorOutput"]
