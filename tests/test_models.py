"""The model: DCG prior, denoiser + forward/reverse priors (docs/algorithm.md), ablation switches."""
from __future__ import annotations

import math
import re
import tokenize
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

from adpm_dist.config import load_config
from adpm_dist.diffusion.scheduler import ADPMScheduler
from adpm_dist.methods import build_model
from adpm_dist.models.backbone import FeatureMap
from adpm_dist.models.prior import PriorNetwork, extract_crops, saliency_map, select_windows

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs/digits_lt_tiny.yaml"
COUNTS = [60, 30, 15, 8, 4]


def tiny_model(*overrides: str, counts=COUNTS):
    torch.manual_seed(0)
    return build_model(load_config(TINY, list(overrides)), counts)


def batch(n: int = 6, k: int = len(COUNTS), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % k,
            torch.randint(0, 1000, (n,), generator=g), torch.randn(n, k, generator=g))


# --- DCG region selection and crops -------------------------------------------------------------

def greedy_reference(saliency: torch.Tensor, k: int, window: int) -> list[list[tuple[int, int]]]:
    """DiffMIC/GMIC's retrieve_roi as a per-sample Python loop: argmax window mean, zero it, repeat."""
    out = []
    for a in saliency.clone():
        h, w = a.shape
        picks = []
        for _ in range(k):
            best, pos = -math.inf, None
            for r in range(h - window + 1):
                for c in range(w - window + 1):
                    v = a[r:r + window, c:c + window].mean().item()
                    if v > best:
                        best, pos = v, (r, c)
            picks.append(pos)
            a[pos[0]:pos[0] + window, pos[1]:pos[1] + window] = 0
        out.append(picks)
    return out


@pytest.mark.parametrize("window", [1, 2])
def test_select_windows_matches_per_sample_greedy_loop(window):
    sal = torch.rand(5, 7, 7, generator=torch.Generator().manual_seed(window))
    got = select_windows(sal, 6, window)
    assert got.shape == (5, 6, 2)
    assert got.tolist() == [[list(p) for p in s] for s in greedy_reference(sal, 6, window)]


def test_one_cell_windows_are_the_top_k_cells():
    sal = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(1))
    cells = select_windows(sal, 6, 1)
    top = sal.flatten(1).topk(6, dim=1).indices
    assert torch.equal(cells[..., 0] * 4 + cells[..., 1], top)


def test_saliency_is_sum_of_min_max_normalised_class_maps():
    cam = torch.randn(2, 3, 4, 4)
    ref = sum((c - c.amin((1, 2), keepdim=True)) / (c.amax((1, 2), keepdim=True) - c.amin((1, 2), keepdim=True))
              for c in cam.unbind(1))
    assert torch.allclose(saliency_map(cam), ref, atol=1e-6)


@pytest.mark.parametrize("channels", ["channel0", "rgb"])
def test_crops_equal_slices(channels):
    images = torch.randn(3, 3, 32, 32)
    corners = torch.tensor([[[0, 0], [8, 24]], [[24, 8], [16, 16]], [[3, 5], [0, 24]]])
    crops = extract_crops(images, corners, 8, channels).view(3, 2, 3, 8, 8)
    for b in range(3):
        for n in range(2):
            r, c = corners[b, n].tolist()
            ref = images[b, :, r:r + 8, c:c + 8]
            ref = ref[:1].expand(3, -1, -1) if channels == "channel0" else ref
            assert torch.equal(crops[b, n], ref)


def test_prior_branches_fuse_and_crops_stay_inside():
    prior = PriorNetwork(4, "test_resnet", 2, local_level=2, crop_size=8, num_crops=6)
    out = prior(torch.randn(5, 3, 32, 32))
    assert out.saliency.shape == (5, 4, 4, 4) and out.corners.shape == (5, 6, 2)
    assert torch.allclose(out.fused, 0.5 * (out.global_ + out.local))
    assert torch.allclose(out.global_, out.saliency.mean((2, 3)))
    assert torch.allclose(out.attention.sum(1), torch.ones(5))
    assert int(out.corners.min()) >= 0 and int(out.corners.max()) <= 32 - 8
    # 8 px crops on a 4x4 map of a 32 px image: one cell each, 6 distinct cells per image
    assert (out.corners % 8 == 0).all()
    assert all(len({tuple(c) for c in s}) == 6 for s in out.corners.tolist())


def test_paper_geometry_32px_crops_of_224px_on_7x7_map():
    prior = PriorNetwork(3, "test_resnet", -1, local_level=2, crop_size=32, num_crops=6)
    out = prior(torch.randn(2, 3, 224, 224))
    assert out.saliency.shape[-2:] == (7, 7) and (out.corners % 32 == 0).all()


def test_no_hard_coded_device_in_model_code():
    """No .cuda() and no "cuda..." device strings in the model code (docstrings and comments aside)."""
    for path in (ROOT / "adpm_dist/models").glob("*.py"):
        with open(path, "rb") as f:
            tokens = list(tokenize.tokenize(f.readline))
        code = " ".join(t.string for t in tokens if t.type not in (tokenize.COMMENT,)
                        and not (t.type == tokenize.STRING and t.string.startswith('"""')))
        assert not re.search(r"\.cuda\s*\(|[\'\"]cuda", code), path


# --- backbones from local checkpoints ---------------------------------------------------------

def test_feature_map_loads_a_local_checkpoint(tmp_path):
    torch.manual_seed(123)
    reference = timm.create_model("test_resnet")
    torch.save(reference.state_dict(), tmp_path / "w.pth")
    loaded = FeatureMap("test_resnet", 2, str(tmp_path / "w.pth"))
    fresh = FeatureMap("test_resnet", 2)
    ref = reference.state_dict()
    for name, value in loaded.net.state_dict().items():
        key = name.replace("_", ".", 1) if name not in ref else name   # timm feature wrappers rename layers
        assert torch.equal(value, ref[key]), name
    assert not torch.equal(loaded.net.state_dict()["conv1.0.weight"], fresh.net.state_dict()["conv1.0.weight"])
    with pytest.raises(FileNotFoundError, match="pretrained checkpoint not found"):
        FeatureMap("test_resnet", 2, str(tmp_path / "missing.pth"))


def test_config_passes_local_checkpoints_to_both_prior_branches(tmp_path):
    torch.manual_seed(5)
    torch.save(timm.create_model("test_resnet").state_dict(), tmp_path / "w.pth")
    a = tiny_model(f"model.pretrained={tmp_path / 'w.pth'}", f"model.local_pretrained={tmp_path / 'w.pth'}")
    w = a.prior.features.net.state_dict()["conv1.0.weight"]
    assert torch.equal(w, a.prior.local_features.net.state_dict()["conv1.0.weight"])


# --- training step: every ablation switch and noise variant ---------------------------------------

VARIANTS = {
    "adpm": [],
    "v1_no_reverse_prior": ["model.reverse_prior=false"],
    "v2_no_forward_prior": ["model.forward_prior=false"],
    "no_image_conditioning": ["model.reverse_prior=false", "model.feature_product=false"],
    "isotropic_alpha0": ["noise.alpha=0"],
    "formula_B": ["noise.formula=B"],
    "formula_power": ["noise.formula=power"],
    "lambda_on_variance": ["noise.apply=variance"],
    "n_floor": ["noise.n_floor=10"],
    "rgb_crops": ["model.crop_channels=rgb"],
    "no_mmd": ["diffusion.mmd_weight=0"],
    "encoder_shares_prior_map": ["model.encoder=prior"],
    "predict_y0": ["diffusion.prediction=y0"],
    "balanced_softmax_prior": ["model.prior_loss=balanced_softmax"],
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_trains_a_step(name):
    from adpm_dist.runtime.optim import build_optimizer

    model = tiny_model(*VARIANTS[name])
    cfg = load_config(TINY, VARIANTS[name])
    opt = build_optimizer(model, cfg.train)
    images, labels, t, eps = batch()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    losses = model(images, labels, t, eps, joint=True)
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    # every parameter is used (DDP without find_unused_parameters), so every one gets a gradient
    unused = [k for k, p in model.named_parameters() if p.grad is None]
    assert not unused, unused
    opt.step()
    if name == "predict_y0":  # zero-initialised output layer: the inner layers get gradient from step 2 on
        opt.zero_grad()
        model(images, labels, t, eps, joint=True)["loss"].backward()
        opt.step()
    assert all(not torch.equal(before[k], p) for k, p in model.named_parameters() if k.endswith("lin1.lin.weight"))
    assert (model.levels == 1).all() == (name == "isotropic_alpha0")


def test_untrained_y0_denoiser_returns_the_prior():
    """diffusion.prediction=y0: y0_hat = mu + output with a zero-initialised output layer, so before
    training the loss is MSE(mu, y0) and every sampler ends at exactly the prior's probabilities."""
    model = tiny_model("diffusion.prediction=y0").eval()
    images, labels, t, eps = batch()
    mu = model.prior_probs(images)
    for sampler in ("truncated", "respaced", "ddim"):
        y0, prior = model.sample(images, sampler=sampler, steps=10, generator=torch.Generator().manual_seed(0))
        assert torch.allclose(y0, mu, atol=1e-4), sampler
    model.train()
    loss = model(images, labels, t, eps, joint=True)["diffusion"]
    fused = model.chain_means(model.prior_eval(images))[0]
    mse = F.mse_loss(fused, F.one_hot(labels, 5).float())
    assert loss.item() >= mse.item() - 1e-6  # plus the (non-negative) MMD terms of the other chains


def test_balanced_softmax_prior_loss_is_ce_on_logits_plus_log_counts():
    """model.prior_loss=balanced_softmax (Ren et al. 2020): CE(fused + log n_j); ce: plain CE (the paper)."""
    images, labels, t, eps = batch()
    for prior_loss, shift in (("ce", torch.zeros(5)), ("balanced_softmax", torch.tensor(COUNTS).float().log())):
        model = tiny_model(f"model.prior_loss={prior_loss}")
        loss = model(images, labels, t, eps, joint=False)["prior_ce"]
        torch.manual_seed(1)
        expected = F.cross_entropy(model.prior(images).fused + shift, labels)
        assert torch.allclose(loss, expected, atol=1e-5), prior_loss


def test_prior_warm_up_step_trains_only_the_prior():
    model = tiny_model()
    images, labels, t, eps = batch()
    losses = model(images, labels, t, eps, joint=False)
    assert set(losses) == {"prior_ce", "loss"}
    losses["loss"].backward()
    assert all(p.grad is None for p in model.denoiser.parameters())


def test_frozen_prior_stays_put_through_joint_steps():
    """train.freeze_prior (CARD's frozen f_phi): joint steps neither train the prior nor move its
    BatchNorm statistics, its LR is 0 after the warm-up (DeepSpeed steps every group) and not before."""
    from adpm_dist.runtime.optim import build_optimizer, set_lr

    model = tiny_model("train.freeze_prior=true")
    cfg = load_config(TINY, ["train.freeze_prior=true"])
    opt = build_optimizer(model, cfg.train)
    lrs = lambda: {g["name"]: g["lr"] for g in opt.param_groups}  # noqa: E731
    set_lr(opt, cfg.train, -0.5)  # warm-up: the prior trains
    assert lrs()["prior"] == cfg.train.prior_lr
    images, labels, t, eps = batch()
    prior_before = {k: v.clone() for k, v in model.prior.state_dict().items()}
    denoiser_before = {k: v.clone() for k, v in model.denoiser.state_dict().items()}
    for step in range(2):
        set_lr(opt, cfg.train, 0.5 + step)
        assert lrs()["prior"] == 0.0 and lrs()["denoiser"] > 0
        losses = model(images, labels, t, eps, joint=True)
        assert set(losses) == {"diffusion", "loss"}
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
    assert all(torch.equal(v, model.prior.state_dict()[k]) for k, v in prior_before.items())  # incl. BN buffers
    assert any(not torch.equal(v, model.denoiser.state_dict()[k]) for k, v in denoiser_before.items())
    assert set(model(images, labels, t, eps, joint=False)) == {"prior_ce", "loss"}  # the warm-up still trains it


@pytest.mark.parametrize("overrides", [["method=ce"], ["train.prior_warmup_epochs=0"]])
def test_freeze_prior_needs_adpm_and_a_trained_prior(overrides):
    from adpm_dist.config import ConfigError

    with pytest.raises(ConfigError, match="train.freeze_prior: "):
        load_config(TINY, ["train.freeze_prior=true", *overrides])
    load_config(TINY, ["train.freeze_prior=true", "train.prior_warmup_epochs=0", "model.pretrained=w.pth"])


def test_diffusion_loss_does_not_reach_the_prior():
    """DCG outputs enter the diffusion loss under no_grad (docs/algorithm.md, "Training loop")."""
    model = tiny_model()
    images, labels, t, eps = batch()
    model(images, labels, t, eps)["diffusion"].backward()
    assert all(p.grad is None for p in model.prior.parameters())
    assert model.prior.training  # prior_means switches to eval and back


def test_forward_prior_chains_share_eps_and_lambda():
    """Eq. 16: y_t^k = sab y0 + (1 - sab) mu_k + lambda_y sdev eps for k in f, g, l; loss eq. 17."""
    model = tiny_model()
    images, labels, t, eps = batch()
    seen = {}
    original = model.denoiser.forward

    def spy(feats, y_t, mu, tt):
        seen.update(y_t=y_t, mu=mu, t=tt)
        return original(feats, y_t, mu, tt)

    model.denoiser.forward = spy
    mus = model.prior_means(images)   # before the step: its train-mode CE pass updates BN statistics
    model(images, labels, t, eps)
    y0 = F.one_hot(labels, len(COUNTS)).float()
    lam = model.levels[labels].unsqueeze(1)
    sab = model.scheduler.sab[t].float().unsqueeze(1)
    sdev = model.scheduler.sdev[t].float().unsqueeze(1)
    expected = torch.cat([sab * y0 + (1 - sab) * mu + lam * sdev * eps for mu in mus])
    assert torch.allclose(seen["y_t"], expected, atol=1e-5)
    assert torch.allclose(seen["mu"], torch.cat(mus)) and torch.equal(seen["t"], t.repeat(3))


def test_lambda_on_variance_uses_its_square_root():
    std_model, var_model = tiny_model(), tiny_model("noise.apply=variance")
    assert torch.equal(std_model.levels, var_model.levels)   # lambda_j itself is the same eq. 14 value
    images, labels, t, eps = batch()
    seen = []
    var_model.scheduler.add_noise = lambda y0, mu, e, tt, lam: seen.append(lam) or y0
    var_model(images, labels, t, eps)
    assert torch.allclose(seen[0], var_model.levels[labels].sqrt().unsqueeze(1))


# --- sampling through the model ------------------------------------------------------------------

@pytest.mark.parametrize("sampler", ["truncated", "respaced", "ddim"])
def test_cached_features_equal_recomputing_them_every_step(sampler):
    model = tiny_model().eval()
    images = batch()[0]
    kw = dict(sampler=sampler, steps=12)
    cached, mu = model.sample(images, generator=torch.Generator().manual_seed(3), **kw)
    calls = []
    encode = model.denoiser.encode
    model.denoiser.encode = lambda *a: calls.append(1) or encode(*a)
    uncached, mu2 = model.sample(images, generator=torch.Generator().manual_seed(3), cache_features=False, **kw)
    assert len(calls) == 12                       # DiffMIC: the encoder runs at every step
    assert torch.allclose(cached, uncached, atol=1e-5) and torch.equal(mu, mu2)


def test_sample_computes_prior_and_features_once():
    model = tiny_model().eval()
    counts = {"prior": 0, "encode": 0}
    prior_fwd, encode = model.prior.forward, model.denoiser.encode
    model.prior.forward = lambda x: counts.__setitem__("prior", counts["prior"] + 1) or prior_fwd(x)
    model.denoiser.encode = lambda *a: counts.__setitem__("encode", counts["encode"] + 1) or encode(*a)
    model.sample(batch()[0], sampler="truncated", steps=30)
    assert counts == {"prior": 1, "encode": 1}


def test_shared_encoder_has_no_backbone_and_matches_uncached():
    model = tiny_model("model.encoder=prior").eval()
    assert model.denoiser.encoder.features is None and model.denoiser.shares_prior_features
    images = batch()[0]
    a, _ = model.sample(images, sampler="ddim", steps=4, generator=torch.Generator().manual_seed(0))
    b, _ = model.sample(images, sampler="ddim", steps=4, generator=torch.Generator().manual_seed(0),
                        cache_features=False)
    assert torch.allclose(a, b, atol=1e-5)


def test_precomputed_keys_values_equal_computing_them_from_tokens():
    model = tiny_model().eval()
    images, labels, t, _ = batch()
    feats = model.denoiser.encode(images)
    y, mu = torch.randn(6, len(COUNTS)), torch.softmax(torch.randn(6, len(COUNTS)), 1)
    fresh = type(feats)(feats.tokens, feats.pooled)
    assert torch.allclose(model.denoiser(feats, y, mu, t), model.denoiser(fresh, y, mu, t), atol=1e-6)


def test_several_samples_vote():
    model = tiny_model().eval()
    images = batch()[0]
    votes, mu = model.sample(images, sampler="ddim", steps=5, samples=7, test_rule="argmax",
                             generator=torch.Generator().manual_seed(0))
    share = votes.softmax(1)
    assert votes.shape == mu.shape == (6, len(COUNTS))
    assert torch.allclose(share.sum(1), torch.ones(6)) and torch.allclose(share * 7, (share * 7).round(), atol=1e-4)


def test_test_levels_override_and_soft_counts():
    model = tiny_model().eval()
    images = batch()[0]
    batches = [{"image": images[:4]}, {"image": images[4:]}]
    levels = model.soft_count_levels(batches, "cpu")
    probs = model.prior_probs(images)
    n_hat = probs.sum(0)
    expected = (1 + 5 * (n_hat.max() / n_hat.clamp_min(1)) ** (1 / 6)) / 6     # formula A, alpha 1/6, beta 5
    assert torch.allclose(levels, expected, atol=1e-5)
    assert torch.allclose(model.soft_count_levels(batches, "cpu", lambda n: 2 * n),
                          model.levels_from_counts(2 * n_hat))
    # with every lambda_j = 1 the anisotropic sampler is the isotropic one
    kw = dict(sampler="truncated", steps=8)
    a, _ = model.sample(images, generator=torch.Generator().manual_seed(1), levels=torch.ones(len(COUNTS)), **kw)
    iso = tiny_model("noise.alpha=0").eval()
    b, _ = iso.sample(images, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.allclose(a, b, atol=1e-5)


def test_scheduler_is_shared_not_a_parameter():
    model = tiny_model()
    assert isinstance(model.scheduler, ADPMScheduler)
    assert "levels" in model.state_dict() and not any("scheduler" in k for k in model.state_dict())


def test_config_keys_of_this_module_are_checked():
    from adpm_dist.config import ConfigError

    cfg = load_config(TINY, ["diffusion.sampler=ddim", "diffusion.samples=3", "noise.apply=variance",
                             "noise.test_levels=soft_counts", "model.crop_channels=rgb"])
    assert (cfg.diffusion.sampler, cfg.model.crop_size) == ("ddim", 8)
    for bad, key in [("diffusion.sampler=plms", "diffusion.sampler"), ("model.crop_size=64", "model.crop_size"),
                     ("noise.apply=var", "noise.apply"), ("noise.test_levels=test", "noise.test_levels"),
                     ("diffusion.samples=0", "diffusion.samples"), ("model.crop_channels=grey", "model.crop_channels"),
                     ("diffusion.respace_start=10", "diffusion.respace_start")]:
        with pytest.raises(ConfigError, match=key):
            load_config(TINY, [bad])
