"""timm backbones as feature-map extractors, with pretrained weights as timm users expect them.

``model.pretrained`` (and ``encoder_pretrained`` / ``local_pretrained``) takes:
- "" : random initialisation;
- ``true``: timm's default pretrained weights of the backbone (its ``hf_hub_id``, e.g.
  ``timm/resnet18.a1_in1k``), read through huggingface_hub's cache (HF_HOME; the Makefile sets
  ``.cache/hf``): downloaded once when online, then always read from the cache file (no request at all).
  Weights not in the cache are refused in one line (WeightsUnavailable, exit 2) at once when
  ``HF_HUB_OFFLINE`` is set (read when the model is built) or the hub cannot be reached within 5 s,
  instead of a minute of HTTP retries and a traceback;
- a timm tag or hub id: ``resnet18.a1_in1k``, ``timm/resnet18.a1_in1k`` or ``hf-hub:timm/resnet18.a1_in1k``
  (the backbone's architecture must match);
- a local file: a state dict of the backbone (.pth/.bin/.safetensors), as before.
"""
from __future__ import annotations

import os
import pickle
import socket
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
from torch import nn

from ..config import ConfigError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm reads from a hub repo, in its order


class WeightsUnavailable(ConfigError, FileNotFoundError):
    """Hub weights that are not in the cache and cannot be downloaded here (one line, exit 2)."""


class FeatureMap(nn.Module):
    """A timm model cut at one stage (``level``: index into its feature_info, -1 = deepest).

    Small images (digits-LT at 32 px) want a shallower level so that the map keeps several cells
    for the CAM and the cross-attention tokens.
    """

    def __init__(self, name: str, level: int = -1, pretrained: str = ""):
        super().__init__()
        try:
            probe = timm.create_model(name, pretrained=False, features_only=True)
        except RuntimeError as e:  # timm raises RuntimeError("Unknown model ...")
            raise ValueError(f"model backbone {name!r} is not a timm model: {e}") from None
        n_levels = len(probe.feature_info)
        if not -n_levels <= level < n_levels:
            raise ValueError(f"feature level {level} out of range for {name!r} ({n_levels} levels)")
        index = level % n_levels
        kwargs = pretrained_kwargs(name, pretrained, probe.pretrained_cfg)
        try:
            self.net = timm.create_model(name, features_only=True, out_indices=(index,), **kwargs)
        except OSError as e:  # huggingface_hub: not in the cache while offline, or no network
            raise FileNotFoundError(f"pretrained weights {pretrained!r} ({kwargs['pretrained_cfg_overlay']}) are not in the "
                                    f"hub cache and cannot be downloaded here ({type(e).__name__}); run once online "
                                    "with the same HF_HOME, or give a local file") from None
        except (RuntimeError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as e:
            if not pretrained:
                raise
            raise ValueError(f"pretrained checkpoint {pretrained} does not fit timm model {name!r} "
                             f"(not a state dict of that architecture): {e}") from None
        # the normalisation the weights were trained with (the data pipeline uses ImageNet's mean/std)
        self.pretrained_mean_std = (tuple(self.net.pretrained_cfg.get("mean", ())),
                                    tuple(self.net.pretrained_cfg.get("std", ()))) if pretrained else None
        self.channels = self.net.feature_info.channels()[0]
        self.reduction = self.net.feature_info.reduction()[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.net(x)[0]


def hub_id(name: str, pretrained: str, default: str | None) -> str | None:
    """The hub id ``model.pretrained`` names (None for a local file): ``true`` -> timm's default for the
    backbone, ``hf-hub:org/repo`` / ``org/repo`` as given, a timm tag ``arch.tag`` -> ``timm/arch.tag``."""
    value = str(pretrained).strip()
    if value.lower() in ("true", "1", "yes"):
        if not default:
            raise ValueError(f"model.pretrained=true: timm has no pretrained weights for {name!r}")
        return default
    if value.startswith("hf-hub:"):
        return value.removeprefix("hf-hub:")
    if Path(value).exists() or value.endswith((".pth", ".pt", ".bin", ".safetensors")) or value.startswith((".", "/", "~")):
        return None
    if "/" in value and value.count("/") == 1:
        return value
    if "." in value and value.split(".", 1)[0] == name:
        return f"timm/{value}"
    return None


def hub_pretrained_cfg(name: str, pretrained: str) -> dict | None:
    """timm's pretrained config (mean, std, ...) of the hub weights ``model.pretrained`` names, from
    timm's registry (no download); None for a local file or a hub repo timm does not list."""
    try:
        default = timm.models.get_pretrained_cfg(name)
        repo = hub_id(name, pretrained, default.hf_hub_id if default else None)
    except (RuntimeError, ValueError):
        return None
    if repo is None:
        return None
    tag = repo.split("/", 1)[1] if repo.startswith("timm/") else None
    found = timm.models.get_pretrained_cfg(tag) if tag else None
    return found.to_dict() if found is not None else None


def pretrained_kwargs(name: str, pretrained: str, pretrained_cfg: dict) -> dict:
    """timm.create_model's arguments for ``model.pretrained`` (module docstring)."""
    if not pretrained:
        return {}
    repo = hub_id(name, pretrained, pretrained_cfg.get("hf_hub_id"))
    if repo is not None:
        if cached := cached_hub_file(repo):  # read as a local file: no request, online or not
            return {"pretrained": True, "pretrained_cfg_overlay": {"hf_hub_id": repo, "url": "", "file": cached,
                                                                   "source": ""}}
        check_downloadable(repo, pretrained)
        return {"pretrained": True, "pretrained_cfg_overlay": {"hf_hub_id": repo, "url": "", "file": None}}
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pretrained checkpoint not found: {path} (model.pretrained takes a local file, "
                                "true for timm's hub weights, or a hub id such as hf-hub:timm/resnet18.a1_in1k)")
    return {"pretrained": True, "pretrained_cfg_overlay": {"file": str(path)}}


def check_backbone(name: str) -> str | None:
    """What is wrong with a backbone name (model.backbone / encoder / local_backbone), or None: a name timm
    does not know, with its closest known names (a typo should not cost a traceback after start-up)."""
    import difflib

    if name in ("", "prior") or timm.is_model(name):  # "": the same as backbone; "prior": the encoder reuses it
        return None
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    return f"{name!r} is not a timm model" + (f"; did you mean {', '.join(close)}?" if close else
                                              " (timm.list_models() lists them)")


def cached_hub_file(repo: str) -> str | None:
    """The weights file of hub repo ``repo`` in huggingface_hub's cache (HF_HOME), or None."""
    from huggingface_hub import constants, try_to_load_from_cache

    for name in WEIGHT_FILES:
        found = try_to_load_from_cache(repo, name, cache_dir=constants.HF_HUB_CACHE)
        if isinstance(found, str):
            return found
    return None


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE")
    return value.strip().lower() in ("1", "true", "yes", "on") if value is not None else bool(constants.HF_HUB_OFFLINE)


def check_downloadable(repo: str, pretrained: str) -> None:
    """Refuse at once what would otherwise cost a minute of HTTP retries: weights not in the cache while
    offline, or a hub that cannot be reached."""
    from huggingface_hub import constants

    where = f"pretrained weights {pretrained!r} ({repo}) are not in the hub cache {constants.HF_HUB_CACHE}"
    advice = "run once online with the same HF_HOME, or give a local file (a state dict of the backbone)"
    if hub_offline():
        raise WeightsUnavailable(f"{where} and HF_HUB_OFFLINE is set; {advice}")
    endpoint = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=5).close()
    except OSError as e:
        raise WeightsUnavailable(f"{where} and {constants.ENDPOINT} cannot be reached ({e}); {advice}") from None
