"""model.pretrained as timm users write it: true (timm's default hub weights), a timm tag or hub id,
or a local file. The hub path is tested OFFLINE on a hub cache built here (never a download)."""
from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

from adpm_dist.models.backbone import FeatureMap, hub_id

REPO = "timm/test_resnet.r160_in1k"  # timm's default pretrained weights of test_resnet


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A huggingface_hub cache holding REPO's model.safetensors, offline (HF_HOME in tmp)."""
    import huggingface_hub.constants as constants
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # read at import: set the live values
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    torch.manual_seed(3)
    ref = timm.create_model("test_resnet", pretrained=False)
    repo_dir = tmp_path / "hub" / f"models--{REPO.replace('/', '--')}"
    snap = repo_dir / "snapshots" / ("c" * 40)
    snap.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text("c" * 40)
    save_file(ref.state_dict(), str(snap / "model.safetensors"))
    return ref


@pytest.mark.parametrize("value", ["true", "True", "test_resnet.r160_in1k", REPO, f"hf-hub:{REPO}"])
def test_hub_weights_load_from_the_cache_offline(hub_cache, value):
    fm = FeatureMap("test_resnet", 2, value)
    assert torch.equal(fm.net.conv1[0].weight, hub_cache.conv1[0].weight)
    assert fm.pretrained_mean_std == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # the weights' normalisation, recorded


def test_hub_weights_missing_from_the_cache(hub_cache):
    with pytest.raises(FileNotFoundError, match="not in the hub cache"):
        FeatureMap("test_resnet", 2, "hf-hub:timm/test_resnet.other")


def test_local_files_still_load(tmp_path, hub_cache):
    torch.save(hub_cache.state_dict(), tmp_path / "w.pth")
    assert torch.equal(FeatureMap("test_resnet", 2, str(tmp_path / "w.pth")).net.conv1[0].weight,
                       hub_cache.conv1[0].weight)
    with pytest.raises(FileNotFoundError, match="pretrained checkpoint not found"):
        FeatureMap("test_resnet", 2, str(tmp_path / "missing.pth"))


def test_hub_id_forms():
    assert hub_id("resnet18", "true", "timm/resnet18.a1_in1k") == "timm/resnet18.a1_in1k"
    assert hub_id("resnet18", "resnet18.tv_in1k", None) == "timm/resnet18.tv_in1k"
    assert hub_id("resnet18", "weights/r18.pth", None) is None


def test_hub_weights_bring_their_normalisation():
    from adpm_dist.config import load_config
    from adpm_dist.data.transforms import IMAGENET_MEAN, normalisation, transform_for

    tiny = Path(__file__).resolve().parents[1] / "configs" / "digits_lt_tiny.yaml"
    assert normalisation(load_config(tiny))[0] == IMAGENET_MEAN
    hub = load_config(tiny, ["model.pretrained=true"])  # test_resnet's weights: mean = std = 0.5
    assert normalisation(hub) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert torch.allclose(transform_for(hub, train=False).shift.flatten(), torch.tensor([127.5] * 3))
    mine = load_config(tiny, ["model.pretrained=true", "data.mean=[0.1,0.2,0.3]", "data.std=[1,1,1]"])
    assert normalisation(mine) == ((0.1, 0.2, 0.3), (1.0, 1.0, 1.0))  # the user's setting wins
