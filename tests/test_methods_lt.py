"""Issue 19's long-tail methods (docs/baselines.md): crt, lws, tau_norm, posthoc_la (+ ADPM's
model.prior_readout), vs, gcl, mislas, and train.sam_rho.

- every new loss against its closed form or the paper's definition;
- the two-stage mechanics: what trains and what stays fixed in each stage, the class-balanced
  stream, validation only in stage 2, the stage-2 head started once (also across a resume);
- the read-out tau chosen on validation data only;
- SAM's gradient against its definition;
- pretrained backbones from a local file (and a clear error naming a missing or mismatched one);
- engine.train in process: crt through both stages, resumed at the stage boundary, and tau_norm;
- one 2-rank DDP launch (gloo) that trains every new method a step in each of its stages, DDP
  *without* find_unused_parameters, plus a SAM step.

This file is also the worker of that launch (``accelerate launch tests/test_methods_lt.py OUT``).
"""
from __future__ import annotations

import contextlib
import json
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # the DDP worker runs from the repository root
    sys.path.insert(0, str(ROOT))

from adpm_dist.config import ConfigError, load_config  # noqa: E402
from adpm_dist.methods import losses, method_for  # noqa: E402
from adpm_dist.methods.staged import StagedPlan  # noqa: E402
from adpm_dist.runtime.optim import build_optimizer, set_lr  # noqa: E402
from adpm_dist.runtime.sam import forward_backward  # noqa: E402

TINY = ROOT / "configs" / "digits_lt_tiny.yaml"
COUNTS = [40, 30, 20, 15, 10, 10, 8, 6, 4, 2]
NEW = ("crt", "lws", "tau_norm", "posthoc_la", "vs", "gcl", "mislas")
TWO_STAGE = ("crt", "lws", "gcl", "mislas")


def _batch(k: int = 4, b: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, k, generator=g), torch.randint(0, k, (b,), generator=g)


def test_tau_norm_reads_out_ce_weights_and_tau_zero_is_the_trained_classifier():
    """tau_norm's model is ce's (the same state-dict keys, so a study replays it over ce's weights); its read-out
    is w_j / ||w_j||^tau + b_j: at tau = 0 exactly ce's logits, at tau = 1 unit-norm rows plus the bias."""
    torch.manual_seed(0)
    ce = method_for(load_config(TINY, ["method=ce"])).build(COUNTS).eval()
    tau = method_for(load_config(TINY, ["method=tau_norm"])).build(COUNTS).eval()
    assert set(tau.state_dict()) == set(ce.state_dict())
    tau.load_state_dict(ce.state_dict())
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        pooled = tau.pooled(images)
        torch.testing.assert_close(tau.normalised_scores(pooled, 0.0), ce.outputs(images))
        w, b = ce.classifier.head.weight, ce.classifier.head.bias
        torch.testing.assert_close(tau.normalised_scores(pooled, 1.0), pooled @ (w / w.norm(dim=1, keepdim=True)).t() + b)


# ---------------------------------------------------------------- losses: closed forms

def test_posthoc_adjustment_and_tau_normalisation():
    logits, _ = _batch()
    counts = [8, 4, 2, 1]
    log_pi = torch.log(torch.tensor(counts, dtype=torch.float32) / 15)
    torch.testing.assert_close(losses.posthoc_adjusted_logits(logits, counts, tau=0.0), logits)
    torch.testing.assert_close(losses.posthoc_adjusted_logits(logits, counts, tau=1.5), logits - 1.5 * log_pi)
    w = torch.tensor([[3.0, 4.0], [0.6, 0.8]])  # row norms 5 and 1
    torch.testing.assert_close(losses.tau_normalised_weight(w, tau=0.0), w)
    torch.testing.assert_close(losses.tau_normalised_weight(w, tau=1.0), torch.tensor([[0.6, 0.8], [0.6, 0.8]]))
    torch.testing.assert_close(losses.tau_normalised_weight(w, tau=0.5), w / torch.tensor([[5 ** 0.5], [1.0]]))


def test_vs_loss_by_hand_and_its_special_cases():
    logits, labels = _batch()
    counts = [8, 4, 2, 1]
    torch.testing.assert_close(losses.vs_loss(logits, labels, counts, gamma=0.0, tau=0.0),
                               F.cross_entropy(logits, labels))
    torch.testing.assert_close(losses.vs_loss(logits, labels, counts, gamma=0.0, tau=0.7),
                               losses.logit_adjusted_loss(logits, labels, counts, tau=0.7))
    # two classes, n = (4, 1), gamma = 1, tau = 1: Delta = (1, 1/4), iota = log(4/5), log(1/5)
    z, y = torch.tensor([[1.0, 2.0]]), torch.tensor([1])
    a0, a1 = 1.0 + math.log(0.8), 0.25 * 2.0 + math.log(0.2)
    expected = -a1 + math.log(math.exp(a0) + math.exp(a1))
    assert losses.vs_loss(z, y, [4, 1], gamma=1.0, tau=1.0).item() == pytest.approx(expected, rel=1e-6)


def test_gcl_clouds_and_loss():
    cos = torch.tensor([[0.5, 0.2, -0.1], [0.3, 0.9, 0.0]])
    labels = torch.tensor([0, 2])
    counts = [100, 10, 1]  # m = log n_max - log n_j = (0, log 10, log 100); m / max m = (0, 1/2, 1)
    eps = torch.tensor([[2.0, -0.4, 0.3], [-3.0, 0.5, -1.5]])  # clipped to [-1, 1], then |.|
    clouded = losses.gcl_cosines(cos, counts, noise_mul=0.5, eps=eps)
    expected = cos - 0.5 * torch.tensor([[1.0, 0.4, 0.3], [1.0, 0.5, 1.0]]) * torch.tensor([0.0, 0.5, 1.0])
    torch.testing.assert_close(clouded, expected)
    assert torch.equal(clouded[:, 0], cos[:, 0])  # the head class gets no cloud
    torch.testing.assert_close(losses.gcl_loss(cos, labels, counts, noise_mul=0.0, scale=30.0, margin=0.0, eps=eps),
                               F.cross_entropy(30 * cos, labels))
    margined = expected - 0.2 * F.one_hot(labels, 3)
    torch.testing.assert_close(losses.gcl_loss(cos, labels, counts, noise_mul=0.5, scale=16.0, margin=0.2, eps=eps),
                               F.cross_entropy(16 * margined, labels))


def test_mixup_cross_entropy():
    logits, labels = _batch()
    partner = labels.roll(1)
    torch.testing.assert_close(losses.mixup_cross_entropy(logits, labels, partner, lam=1.0),
                               F.cross_entropy(logits, labels))
    torch.testing.assert_close(losses.mixup_cross_entropy(logits, labels, partner, lam=0.3),
                               0.3 * F.cross_entropy(logits, labels) + 0.7 * F.cross_entropy(logits, partner))


def test_label_aware_smoothing_follows_eq_5_and_6():
    counts = [100, 55, 10]  # r = (1, 1/2, 0)
    for shape in ("concave", "linear", "convex"):
        eps = losses.label_aware_epsilons(counts, head=0.4, tail=0.1, shape=shape)
        torch.testing.assert_close(eps[[0, 2]], torch.tensor([0.4, 0.1]))  # head and tail ends
    mid = {s: losses.label_aware_epsilons(counts, head=0.4, tail=0.1, shape=s)[1].item()
           for s in ("concave", "linear", "convex")}
    assert mid["linear"] == pytest.approx(0.25)
    assert mid["concave"] == pytest.approx(0.1 + 0.3 * math.sin(math.pi / 4))
    assert mid["convex"] == pytest.approx(0.4 + 0.3 * math.sin(1.5 * math.pi + math.pi / 4))
    assert mid["concave"] > mid["linear"] > mid["convex"]
    logits, labels = _batch(k=3)
    smooth = losses.label_aware_smoothing_loss(logits, labels, counts, head=0.2, tail=0.2, shape="concave")
    torch.testing.assert_close(smooth, F.cross_entropy(logits, labels, label_smoothing=0.2))
    torch.testing.assert_close(losses.label_aware_smoothing_loss(logits, labels, counts, head=0.0, tail=0.0,
                                                                 shape="linear"), F.cross_entropy(logits, labels))
    with pytest.raises(ValueError, match="shape"):
        losses.label_aware_epsilons(counts, head=0.1, tail=0.0, shape="flat")


def test_new_keys_are_checked():
    with pytest.raises(ConfigError, match="baseline.stage2_epochs"):
        load_config(TINY, ["method=crt", "baseline.stage2_epochs=0"])
    with pytest.raises(ConfigError, match="train.sam_rho"):
        load_config(TINY, ["train.sam_rho=0.05", "train.grad_accum=2"])
    with pytest.raises(ConfigError, match="baseline.posthoc_base"):
        load_config(TINY, ["method=posthoc_la", "baseline.posthoc_base=crt"])
    with pytest.raises(ConfigError, match="model.prior_readout"):
        load_config(TINY, ["model.prior_readout=tau"])
    assert load_config(TINY, ["baseline.readout_tau_grid=0,0.5"]).baseline.readout_tau_grid == [0.0, 0.5]


# ---------------------------------------------------------------- two stages in one run

def _staged(name: str, *overrides: str):
    cfg = load_config(TINY, [f"method={name}", "train.epochs=2", "baseline.stage2_epochs=3", *overrides])
    method = method_for(cfg)
    torch.manual_seed(0)
    model = method.build(COUNTS)
    return cfg, method, model, build_optimizer(model, cfg.train)


def _step(cfg, method, model, opt, epoch: int, seed: int = 0) -> None:
    """One optimizer step as the engine takes it (start_epoch, set_lr, losses, backward, step)."""
    method.start_epoch(model, epoch)
    model.train()
    set_lr(opt, cfg.train, epoch + 0.5)
    g = torch.Generator().manual_seed(seed)
    images, labels = torch.randn(8, 3, 32, 32, generator=g), torch.arange(8) % 10
    method.losses(model, images, labels, epoch=epoch, generator=g)["loss"].backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def _snapshot(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict, module) -> set[str]:
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


def test_epoch_plan_stream_and_validation_follow_the_stages():
    cfg, method, _, _ = _staged("crt", "train.val_every=2")
    plan = method.epochs()
    assert isinstance(plan, StagedPlan) and (plan.warmup, plan.total, plan.stage2) == (0, 5, 2)
    assert [method.class_balanced(e) for e in range(5)] == [False, False, True, True, True]
    assert [plan.validates(e, 2) for e in range(5)] == [False, False, False, True, True]  # stage 2 only
    assert [method.phase(e) for e in (1, 2)] == ["crt stage 1", "crt stage 2"]
    assert method_for(load_config(TINY, ["method=tau_norm"])).epochs().total == 2  # no stage 2


@pytest.mark.parametrize("name", TWO_STAGE)
def test_stage_two_trains_only_its_module(name):
    cfg, method, model, opt = _staged(name)
    assert [g["name"] for g in opt.param_groups] == ["classifier", "prior"]
    start = _snapshot(model.prior)
    _step(cfg, method, model, opt, 0)
    assert not _changed(start, model.prior)  # stage 1: the stage-2 module untouched (zero gradient, fresh Adam)
    _step(cfg, method, model, opt, 1)
    stage1, head2 = _snapshot(model.classifier), _snapshot(model.prior)
    for epoch in (2, 3):
        _step(cfg, method, model, opt, epoch, seed=epoch)
    changed = _changed(stage1, model.classifier)
    if name == "mislas":  # shifted BN: running statistics re-estimated, affine parameters fixed
        assert changed and all("running_" in k or "num_batches_tracked" in k for k in changed), changed
    else:
        assert not changed, changed
    assert _changed(head2, model.prior)
    assert float(model.in_stage2) == 1.0


@pytest.mark.parametrize("name", ["mislas", "crt"])
def test_stage_two_head_starts_once_and_survives_a_resume(name):
    cfg, method, model, opt = _staged(name)
    _step(cfg, method, model, opt, 1)
    method.start_epoch(model, 2)
    head1 = model.classifier.head.state_dict()
    same = all(torch.equal(v, model.prior.head.state_dict()[k]) for k, v in head1.items())
    assert same == (name == "mislas")  # mislas continues from the stage-1 head; cRT starts afresh
    _step(cfg, method, model, opt, 2)
    resumed = method.build(COUNTS)  # a resume inside stage 2: the weights (with in_stage2) are loaded first
    resumed.load_state_dict(model.state_dict())
    head2 = _snapshot(resumed.prior)
    method.start_epoch(resumed, 3)
    assert not _changed(head2, resumed.prior)  # not copied again
    fresh = method.build(COUNTS)  # a resume at the boundary: the checkpoint is still a stage-1 one
    state = model.state_dict() | {"in_stage2": torch.zeros(())}
    fresh.load_state_dict(state)
    method.start_epoch(fresh, 2)
    if name == "mislas":
        torch.testing.assert_close(fresh.prior.head.weight, fresh.classifier.head.weight)


def test_lws_learns_only_class_scales_and_predicts_with_them():
    cfg, method, model, opt = _staged("lws")
    for epoch in range(4):
        _step(cfg, method, model, opt, epoch, seed=epoch)
    assert not torch.equal(model.prior.scale, torch.ones(10))
    model.eval()
    images = torch.randn(3, 3, 32, 32)
    pooled = model.classifier.features(images).mean(dim=(2, 3))
    scores, _ = model.sample(images)
    torch.testing.assert_close(scores, model.classifier.head(pooled) * model.prior.scale, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- read-outs chosen on validation

@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    from adpm_dist.data.prepare import prepare

    out = tmp_path_factory.mktemp("digits_lt_methods")
    prepare("digits_lt", out, progress=False)
    return out


def _validation_scores(cfg, fn):
    from adpm_dist.data import build_transform, load_manifest
    from adpm_dist.data.plan import plan_data
    from adpm_dist.data.stream import eval_batches

    manifest = load_manifest(cfg.data.shards)
    parts, keys = plan_data(manifest, cfg).val_source()
    out, labels = [], []
    for b in eval_batches(manifest, parts, 256, build_transform(cfg.data.image_size, train=False), include_keys=keys):
        out.append(fn(b["image"]))
        labels.append(b["label"])
    return torch.cat(out), torch.cat(labels)


@pytest.mark.parametrize("name", ["posthoc_la", "tau_norm", "adpm"])
def test_readout_tau_is_the_best_grid_value_on_validation(name, shards):
    from adpm_dist.evaluate import classification_metrics

    grid = "0,0.5,1,2"
    overrides = [f"method={name}", f"data.shards={shards}", f"baseline.readout_tau_grid={grid}",
                 "model.prior_readout=posthoc_la"]
    cfg = load_config(TINY, overrides)
    method = method_for(cfg)
    torch.manual_seed(0)
    model = method.build([300] + [30] * 8 + [3]).eval()
    for p in model.parameters():  # a visibly biased classifier, so that tau matters
        p.data.add_(0.05 * torch.randn_like(p))
    with torch.no_grad():
        if name == "adpm":
            z, y = _validation_scores(cfg, lambda im: model.prior(im).fused.float())
            scores = lambda tau: losses.posthoc_adjusted_logits(z, model.readout_counts, tau=tau)  # noqa: E731
        elif name == "tau_norm":
            z, y = _validation_scores(cfg, model.pooled)
            scores = lambda tau: model.normalised_scores(z, tau)  # noqa: E731
        else:
            z, y = _validation_scores(cfg, model.scores)
            scores = lambda tau: model.adjusted(z, tau)  # noqa: E731
    f1 = [classification_metrics(y.numpy(), scores(t).argmax(1).numpy(), [str(j) for j in range(10)],
                                 present_only=True)["macro_f1"] for t in (0.0, 0.5, 1.0, 2.0)]
    expected = (0.0, 0.5, 1.0, 2.0)[f1.index(max(f1))]
    assert method.prediction_levels(model, [{"never": "read"}], "cpu", lambda n: n) is None
    assert float(model.readout_tau) == expected
    assert "readout_tau" not in model.state_dict()  # recomputed for any weights, never stored stale
    if name != "adpm":  # prediction reads the chosen tau
        images = torch.randn(4, 3, 32, 32)
        s, p = model.sample(images)
        with torch.no_grad():
            by_hand = (model.normalised_scores(model.pooled(images), expected) if name == "tau_norm"
                       else model.adjusted(model.scores(images), expected))
        torch.testing.assert_close(s, by_hand)
        assert torch.equal(s.argmax(1), p.argmax(1))
        again = method.build([300] + [30] * 8 + [3]).eval()  # as the predict CLI: weights, then sample()
        again.load_state_dict(model.state_dict())
        assert math.isnan(float(again.readout_tau))
        torch.testing.assert_close(again.sample(images)[0], s)  # chose the same tau at its first prediction
        assert float(again.readout_tau) == expected


def test_readout_without_the_validation_shards_warns_and_uses_tau_one(tmp_path, capsys):
    cfg = load_config(TINY, ["method=posthoc_la", f"data.shards={tmp_path / 'gone'}"])
    model = method_for(cfg).build(COUNTS).eval()
    model.sample(torch.randn(2, 3, 32, 32))
    assert float(model.readout_tau) == 1.0 and "no validation data to choose tau" in capsys.readouterr().out


def test_adpm_prior_readout_changes_only_the_prior_block(shards):
    cfg = load_config(TINY, [f"data.shards={shards}", "model.prior_readout=posthoc_la", "diffusion.test_timesteps=3"])
    method = method_for(cfg)
    torch.manual_seed(0)
    model = method.build([300] + [30] * 8 + [3]).eval()
    model.readout_tau.fill_(1.0)
    images = torch.randn(4, 3, 32, 32)
    scores, prior = method.predictions(model, images, generator=torch.Generator().manual_seed(0))
    raw = load_config(TINY, ["diffusion.test_timesteps=3"])
    raw_scores, raw_prior = method_for(raw).predictions(model, images, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(scores, raw_scores)
    fused = model.prior(images).fused.float()
    torch.testing.assert_close(prior, F.softmax(losses.posthoc_adjusted_logits(fused, model.readout_counts, tau=1.0), 1))
    torch.testing.assert_close(raw_prior, F.softmax(fused, 1))


# ---------------------------------------------------------------- SAM

class _Acc:
    """What forward_backward needs of an Accelerator, single process."""
    state = type("State", (), {"deepspeed_plugin": None})()

    def autocast(self):
        return contextlib.nullcontext()

    def backward(self, loss):
        loss.backward()


def test_sam_gradient_is_the_gradient_at_the_ascent_point():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    x, y = torch.randn(7, 5), torch.randint(0, 3, (7,))
    gen = torch.Generator().manual_seed(3)

    def losses_fn():
        noise = torch.randn(7, 5, generator=gen) * 0.1  # a random draw: SAM's second pass must see the same
        loss = F.cross_entropy(model(x + noise), y)
        return {"loss": loss}

    w = [p.detach().clone().requires_grad_() for p in model.parameters()]
    start = gen.get_state()
    by_hand = torch.func.functional_call  # the same computation, done explicitly below
    names = [n for n, _ in model.named_parameters()]

    def loss_at(params):
        gen.set_state(start)
        noise = torch.randn(7, 5, generator=gen) * 0.1
        return F.cross_entropy(by_hand(model, dict(zip(names, params)), (x + noise,)), y)

    g = torch.autograd.grad(loss_at(w), w)
    norm = torch.sqrt(sum((gi ** 2).sum() for gi in g))
    ascent = [(wi + 0.05 * gi / norm).detach().requires_grad_() for wi, gi in zip(w, g)]
    expected = torch.autograd.grad(loss_at(ascent), ascent)
    gen.set_state(start)
    out = forward_backward(_Acc(), model, losses_fn, gen, rho=0.05)
    assert out["loss"].item() == pytest.approx(loss_at(w).item())  # the reported loss is the one at w
    for p, wi, e in zip(model.parameters(), w, expected):
        torch.testing.assert_close(p.detach(), wi.detach())  # weights restored
        torch.testing.assert_close(p.grad, e)
    model.zero_grad()
    gen.set_state(start)
    forward_backward(_Acc(), model, losses_fn, gen, rho=0.0)  # off: the plain gradient
    for p, gi in zip(model.parameters(), g):
        torch.testing.assert_close(p.grad, gi)


# ---------------------------------------------------------------- pretrained backbones from a local file

def test_every_new_method_and_adpm_start_from_a_local_timm_checkpoint(tmp_path):
    import timm

    source = timm.create_model("test_resnet", pretrained=False)
    with torch.no_grad():
        for p in source.parameters():  # unlike any random initialisation
            p.normal_()
    path = tmp_path / "test_resnet.pth"
    torch.save(source.state_dict(), path)
    reference = {k: v for k, v in source.state_dict().items()}

    def loaded(features) -> bool:
        mine = features.net.state_dict()
        return all(torch.equal(v, reference[k]) for k, v in mine.items() if k in reference) and len(mine) > 10

    for name in NEW:
        model = method_for(load_config(TINY, [f"method={name}", f"model.pretrained={path}"])).build(COUNTS)
        assert loaded(model.classifier.features), name
    adpm = method_for(load_config(TINY, [f"model.pretrained={path}", f"model.encoder_pretrained={path}",
                                         f"model.local_pretrained={path}"])).build(COUNTS)
    assert loaded(adpm.prior.features) and loaded(adpm.prior.local_features) and loaded(adpm.denoiser.encoder.features)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        method_for(load_config(TINY, ["method=crt", f"model.pretrained={tmp_path / 'missing.pth'}"])).build(COUNTS)
    wrong = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), wrong)
    with pytest.raises(ValueError, match="resnet18.pth does not fit timm model 'test_resnet'"):
        method_for(load_config(TINY, ["method=gcl", f"model.pretrained={wrong}"])).build(COUNTS)


# ---------------------------------------------------------------- engine.train, in process

def test_engine_trains_crt_through_both_stages_and_resumes_at_the_boundary(shards, tmp_path):
    from adpm_dist.runtime.engine import train

    base = [f"data.shards={shards}", "method=crt", "train.epochs=1", "baseline.stage2_epochs=1",
            "train.keep_checkpoints=3", "train.ema_decay=0"]
    metrics = train(load_config(TINY, [*base, f"run.output_dir={tmp_path / 'a'}"]))
    history = metrics["history"]
    assert [row["phase"] for row in history] == ["crt stage 1", "crt stage 2"]
    assert "val_macro_f1" not in history[0] and "val_macro_f1" in history[1]
    assert metrics["best_epoch"] == 2 and metrics["method"] == "crt"
    best = torch.load(tmp_path / "a" / "checkpoints" / "best.pt", weights_only=True)
    assert float(best["model"]["in_stage2"]) == 1.0 and "prior.head.weight" in best["model"]
    steps = (tmp_path / "a" / "checkpoints").glob("step_*")
    boundary = min(steps, key=lambda p: int(p.name.split("_")[1]))  # saved after epoch 1 (stage 1)
    resumed = train(load_config(TINY, [*base, f"run.output_dir={tmp_path / 'b'}", f"train.resume={boundary}"]))
    assert resumed["macro_f1"] == metrics["macro_f1"] and resumed["val_macro_f1"] == metrics["val_macro_f1"]


def test_engine_trains_tau_norm_with_a_validation_chosen_tau(shards, tmp_path, capsys):
    from adpm_dist.runtime.engine import train

    metrics = train(load_config(TINY, [f"data.shards={shards}", "method=tau_norm", "train.epochs=1",
                                       f"run.output_dir={tmp_path}", "train.ema_decay=0"]))
    assert metrics["method"] == "tau_norm" and math.isfinite(metrics["macro_f1"])
    assert capsys.readouterr().out.count("tau_norm: tau = ") == 2  # one validation, one final evaluation


# ---------------------------------------------------------------- 2 ranks, DDP over gloo

def test_ddp_two_ranks_train_every_new_method(tmp_path):
    from test_distributed import ACCELERATE, free_port, run

    out = tmp_path / "out"
    cmd = [ACCELERATE, "launch", "--config_file", "configs/accelerate/cpu_ddp.yaml", "--main_process_port",
           str(free_port()), "tests/test_methods_lt.py", str(out)]
    rc = run(cmd, tmp_path / "log", tmp_path, timeout=400)
    log = (tmp_path / "log").read_text()
    assert rc == 0, log[-4000:]
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert reports[0] == reports[1]  # the same parameters on both ranks after every method's steps
    assert set(reports[0]) == {*NEW, "ce+sam"}


def ddp_worker(out: Path) -> None:
    """Every new method a step per stage on 2 ranks, each rank its own images; DDP without
    find_unused_parameters (the zero-gradient touch of staged.py is what keeps DDP happy)."""
    from adpm_dist.runtime.distributed import build_accelerator

    acc = build_accelerator("no", find_unused_parameters=False)
    assert acc.num_processes == 2
    report = {}
    for name in (*NEW, "ce+sam"):
        method_name, rho = (name, 0.0) if name != "ce+sam" else ("ce", 0.05)
        cfg = load_config(TINY, [f"method={method_name}", "train.epochs=1", "baseline.stage2_epochs=1",
                                 f"train.sam_rho={rho}"])
        method = method_for(cfg)
        torch.manual_seed(0)
        module = method.build(COUNTS)
        model, opt = acc.prepare(module, build_optimizer(module, cfg.train))
        report[name] = ddp_steps(acc, cfg, method, model, opt, rho)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{acc.process_index}.json").write_text(json.dumps(report, sort_keys=True))
    acc.wait_for_everyone()
    acc.end_training()  # without it a gloo rank can abort at exit (SIGABRT, docs/distributed.md)


def ddp_steps(acc, cfg, method, model, opt, rho: float) -> str:
    raw = acc.unwrap_model(model)
    gen = torch.Generator().manual_seed(11 + acc.process_index)
    for epoch in range(method.epochs().total):
        method.start_epoch(raw, epoch)
        model.train()
        set_lr(opt, cfg.train, epoch + 0.5)
        for _ in range(2):  # DDP reports a parameter without gradient at the *next* step
            images = torch.randn(4, 3, 32, 32, generator=gen)
            labels = torch.randint(0, 10, (4,), generator=gen)
            forward_backward(acc, model, lambda: method.losses(model, images, labels, epoch=epoch, generator=gen),
                             gen, rho)
            opt.step()
            opt.zero_grad(set_to_none=True)
    # parameters only: BatchNorm running statistics follow each rank's own last batch (DDP broadcasts
    # rank 0's at the start of a forward, not after it)
    flat = torch.cat([p.detach().float().flatten() for p in raw.parameters()])
    assert torch.isfinite(flat).all()
    return f"{flat.double().sum().item():.10e} {flat.double().abs().sum().item():.10e}"


if __name__ == "__main__":
    ddp_worker(Path(sys.argv[1]))
