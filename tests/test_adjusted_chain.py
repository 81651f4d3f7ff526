"""method=adpm_adjusted_chain: ADPM whose chains diffuse toward the logit-adjusted prior
(docs/algorithm.md, "Adjusted chain (eq. 5 and 16 with the adjusted prior)").

Closed forms of the adjusted prior; the chain means and the forward process's mean (eq. 5) equal
it; sampling starts from it while eq. 18 still reads the raw posterior; the shift travels with the
weights; and one tiny engine run, predicted again through `python -m adpm_dist.predict`'s library
and its run report.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from adpm_dist.config import ConfigError, load_config
from adpm_dist.diffusion.adjusted import adjusted_prior, adjustment_shift
from adpm_dist.diffusion.noise import estimated_noise_level
from adpm_dist.methods import method_for

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "digits_lt_tiny.yaml"
COUNTS = [60, 30, 10]


def test_adjusted_prior_closed_form():
    pi = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    z = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
    for tau in (0.0, 0.5, 1.0, 2.0):
        shift = adjustment_shift(COUNTS, tau)
        torch.testing.assert_close(shift, (-tau * pi.log()).float())
        expected = z.double().exp() * pi.pow(-tau)  # p_j proportional to e^{z_j} pi_j^-tau
        torch.testing.assert_close(adjusted_prior(z, shift), (expected / expected.sum(1, keepdim=True)).float())
    torch.testing.assert_close(adjusted_prior(z, adjustment_shift(COUNTS, 0.0)), F.softmax(z, dim=1))
    # a prior that reproduces the training frequencies (z = log pi) becomes uniform at tau = 1
    uniform = adjusted_prior(pi.log().float().unsqueeze(0), adjustment_shift(COUNTS, 1.0))
    torch.testing.assert_close(uniform, torch.full((1, 3), 1 / 3))
    assert torch.isfinite(adjustment_shift([5, 0, 1], 1.0)).all()  # an empty class counts as 1
    assert adjusted_prior(z.half(), adjustment_shift(COUNTS, 1.0)).dtype == torch.float32
    with pytest.raises(ValueError, match="chain_tau"):
        adjustment_shift(COUNTS, -1.0)


def _model(tau: float = 1.0, *overrides: str):
    cfg = load_config(TINY, ["method=adpm_adjusted_chain", f"model.chain_tau={tau}", "diffusion.test_timesteps=3",
                             *overrides])
    torch.manual_seed(0)
    return method_for(cfg).build(COUNTS).eval()


def test_chain_means_and_the_forward_mean_are_the_adjusted_prior():
    model, images = _model(1.0), torch.randn(4, 3, 32, 32)
    out = model.prior_eval(images)
    mus = model.chain_means(out)
    shift = adjustment_shift(COUNTS, 1.0)
    assert len(mus) == 3  # fused, global, local (eq. 16), each toward its own adjusted prior
    for mu, z in zip(mus, (out.fused, out.global_, out.local)):
        torch.testing.assert_close(mu, adjusted_prior(z, shift))
    y0 = F.one_hot(torch.tensor([0, 1, 2, 0]), 3).float()
    s = model.scheduler
    for i in (0, 249, len(s) - 1):  # eq. 5 with eps = 0 is the mean: sab y0 + (1 - sab) mu
        mean = s.add_noise(y0, mus[0], torch.zeros_like(y0), i, lam=1.7)
        torch.testing.assert_close(mean, s.sab[i].float() * y0 + (1 - s.sab[i].float()) * mus[0])
    last = s.add_noise(y0, mus[0], torch.zeros_like(y0), len(s) - 1)  # the chain ends at the adjusted prior
    assert (last - mus[0]).abs().max() < 1e-2
    plain = method_for(load_config(TINY, ["diffusion.test_timesteps=3"])).build(COUNTS)
    assert "chain_logit_shift" not in plain.state_dict()  # plain ADPM checkpoints keep their keys
    torch.testing.assert_close(plain.chain_means(out)[0], F.softmax(out.fused.float(), dim=1))


def test_sampling_starts_from_the_adjusted_prior_and_eq18_reads_the_raw_posterior(monkeypatch):
    from adpm_dist.models import adpm as adpm_module

    model, images = _model(1.0, "noise.alpha=1"), torch.randn(4, 3, 32, 32)
    seen = {}

    def spy(scheduler, eps_fn, mu, lam, **kw):
        seen["mu"], seen["lam"] = mu, lam
        return mu
    monkeypatch.setattr(adpm_module, "sample_labels", spy)
    _, prior_block = model.sample(images, generator=torch.Generator().manual_seed(0))
    z = model.prior(images).fused
    torch.testing.assert_close(seen["mu"], adjusted_prior(z, model.chain_logit_shift))
    torch.testing.assert_close(prior_block, seen["mu"])  # the prior block is the chain's mean
    raw = estimated_noise_level(F.softmax(z.float(), dim=1), model.levels)
    torch.testing.assert_close(seen["lam"], raw)


def test_shift_is_saved_with_the_weights_and_prior_readout_is_refused():
    model = _model(0.5)
    state = model.state_dict()
    torch.testing.assert_close(state["chain_logit_shift"], adjustment_shift(COUNTS, 0.5))
    rebuilt = _model(0.5)
    rebuilt_dummy = method_for(load_config(TINY, ["method=adpm_adjusted_chain", "model.chain_tau=0.5"])).build([1, 1, 1])
    rebuilt_dummy.load_state_dict(state)  # as predict rebuilds a checkpoint: dummy counts, then the weights
    torch.testing.assert_close(rebuilt_dummy.chain_logit_shift, rebuilt.chain_logit_shift)
    with pytest.raises(ConfigError, match="model.prior_readout"):
        load_config(TINY, ["method=adpm_adjusted_chain", "model.prior_readout=posthoc_la"])
    with pytest.raises(ConfigError, match="model.chain_tau"):
        load_config(TINY, ["method=adpm_adjusted_chain", "model.chain_tau=-0.5"])


def test_tiny_run_trains_predicts_and_reports(fold_only_shards, tmp_path):
    from adpm_dist.predict import load_model, predict_images
    from adpm_dist.report.run_report import write_report
    from adpm_dist.runtime.engine import train

    out = tmp_path / "run"
    metrics = train(load_config(TINY, [f"data.shards={fold_only_shards}", "data.eval_part=fold0",
                                       "method=adpm_adjusted_chain", "train.epochs=1", "train.prior_warmup_epochs=0",
                                       "diffusion.test_timesteps=3", f"run.output_dir={out}", "train.ema_decay=0"]))
    assert metrics["method"] == "adpm_adjusted_chain" and math.isfinite(metrics["macro_f1"])
    assert 0 <= metrics["prior_agreement"] <= 1
    loaded = load_model(out, device="cpu")  # rebuilt with dummy counts: the shift comes from the weights
    counts = [metrics["train_counts"][c] for c in loaded.class_names]
    torch.testing.assert_close(loaded.model.chain_logit_shift, adjustment_shift(counts, 1.0))
    files = []
    for i in range(2):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.full((32, 32, 3), 60 + 70 * i, dtype=np.uint8)).save(path)
        files.append(path)
    rows = predict_images(loaded, files, steps=3)
    assert [r["error"] for r in rows] == ["", ""] and all(r["prediction"] in loaded.class_names for r in rows)
    assert write_report(out).is_file()


def test_report_trace_follows_the_adjusted_chain():
    """report tsne's trace is ADPM.sample's chain for the adjusted chain too (it used the raw prior)."""
    from adpm_dist.report.tsne import trace_reverse_chain

    model, images = _model(1.0, "noise.alpha=1"), torch.randn(4, 3, 32, 32)
    _, y0 = trace_reverse_chain(model, images, steps=3, generator=torch.Generator().manual_seed(5))
    expected, _ = model.sample(images, steps=3, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(y0, expected, atol=1e-5, rtol=0)
