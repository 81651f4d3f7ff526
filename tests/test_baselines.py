"""Long-tail baselines (``method=``, docs/baselines.md): losses against closed forms, every method
through one optimizer step, the class-balanced stream, three methods through engine.train, the
quality benchmark's aggregation and a smoke run of benchmarks/quality.py, and one 2-process DDP run."""
from __future__ import annotations

import json
import math
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from process_group import run_session

from adpm_dist.methods import losses
from adpm_dist.methods import REGISTRY, ClassifierModel, method_for
from benchmarks.tables import (BEGIN, END, LEVERS, METHODS, SAMPLING_LEVERS, frequency_groups, lever_table, mean_std, replace_section,
                                         run_scores, validation_scores)
from adpm_dist.config import ConfigError, from_dict, load_config, save_config
from adpm_dist.data import build_transform, load_manifest
from adpm_dist.data.prepare import prepare
from adpm_dist.data.stream import class_balanced_copies, train_batches
from adpm_dist.methods import build_model
from adpm_dist.models import build_adpm
from adpm_dist.runtime.optim import build_optimizer, clipped_parameters, set_lr

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "digits_lt_tiny.yaml"
COUNTS = [40, 30, 20, 15, 10, 10, 8, 6, 4, 2]
BASELINES = tuple(name for name, cls in REGISTRY.items() if not cls.has_diffusion)


def _batch(k: int = 4, b: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, k, generator=g), torch.randint(0, k, (b,), generator=g)


# ---------------------------------------------------------------- losses: closed forms

def test_focal_with_gamma_zero_is_ce_and_matches_its_formula():
    logits, labels = _batch()
    torch.testing.assert_close(losses.focal_loss(logits, labels, gamma=0.0), F.cross_entropy(logits, labels))
    # two equal logits: p_y = 1/2, so FL = (1/2)^gamma log 2 (Lin et al. eq. 4)
    two = torch.zeros(1, 2)
    assert math.isclose(losses.focal_loss(two, torch.tensor([1]), gamma=2.0).item(), 0.25 * math.log(2), rel_tol=1e-6)
    assert losses.focal_loss(logits, labels, gamma=2.0) < F.cross_entropy(logits, labels)  # down-weights easy samples


def test_logit_adjusted_and_balanced_softmax():
    logits, labels = _batch()
    counts = [8, 4, 2, 1]
    ce = F.cross_entropy(logits, labels)
    torch.testing.assert_close(losses.logit_adjusted_loss(logits, labels, counts, tau=0.0), ce)
    log_pi = torch.log(torch.tensor(counts, dtype=torch.float32) / 15)
    torch.testing.assert_close(losses.logit_adjusted_loss(logits, labels, counts, tau=0.5),
                               F.cross_entropy(logits + 0.5 * log_pi, labels))
    # balanced softmax (Ren et al. eq. 4): -log(n_y e^{f_y} / sum_k n_k e^{f_k}), by hand
    n = torch.tensor(counts, dtype=torch.float32)
    by_hand = -torch.log(n[labels] * logits.exp().gather(1, labels[:, None]).squeeze(1)
                         / (n * logits.exp()).sum(1)).mean()
    torch.testing.assert_close(losses.balanced_softmax_loss(logits, labels, counts), by_hand)
    torch.testing.assert_close(losses.balanced_softmax_loss(logits, labels, counts),
                               losses.logit_adjusted_loss(logits, labels, counts, tau=1.0))


def test_weighted_ce_by_hand_on_two_classes():
    w = losses.inverse_frequency_weights([3, 1])
    torch.testing.assert_close(w, torch.tensor([0.5, 1.5]))  # 1/n normalised to mean 1
    logits, labels = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
    l0, l1 = math.log(1 + math.exp(-2)), math.log(1 + math.exp(-1))
    expected = (0.5 * l0 + 1.5 * l1) / (0.5 + 1.5)  # PyTorch's weighted mean
    assert math.isclose(losses.weighted_cross_entropy(logits, labels, [3, 1]).item(), expected, rel_tol=1e-6)
    assert torch.isfinite(losses.inverse_frequency_weights([5, 0])).all()  # an empty class counts as 1


def test_ldam_margins_and_loss():
    counts = [100, 16, 1]
    m = losses.ldam_margins(counts, max_margin=0.5)
    n = torch.tensor(counts, dtype=torch.float32)
    torch.testing.assert_close(m * n.pow(0.25), torch.full((3,), 0.5))  # C n^-1/4 with C = 0.5 * n_min^1/4
    assert m.max().item() == pytest.approx(0.5) and m.argmax().item() == 2
    cos = torch.tensor([[0.9, 0.1, -0.2], [0.3, 0.2, 0.4]])
    labels = torch.tensor([0, 2])
    shifted = cos.clone()
    shifted[0, 0] -= m[0]
    shifted[1, 2] -= m[2]
    torch.testing.assert_close(losses.ldam_loss(cos, labels, counts, max_margin=0.5, scale=30.0), F.cross_entropy(30 * shifted, labels))


def test_class_balanced_weights_follow_the_effective_number():
    counts = [1, 2]
    w = losses.class_balanced_weights(counts, beta=0.9)
    raw = torch.tensor([0.1 / (1 - 0.9), 0.1 / (1 - 0.81)])  # (1 - beta) / (1 - beta^n)
    torch.testing.assert_close(w, raw * 2 / raw.sum())        # normalised to sum K
    torch.testing.assert_close(losses.class_balanced_weights([5, 50, 500], beta=0.0), torch.ones(3))
    near_one = losses.class_balanced_weights([10, 40], beta=1 - 1e-9)  # beta -> 1: inverse frequency
    torch.testing.assert_close(near_one, torch.tensor([1.6, 0.4]), rtol=1e-4, atol=1e-4)
    assert losses.drw_weights(counts, beta=0.9, epoch=7, start_epoch=8) is None
    torch.testing.assert_close(losses.drw_weights(counts, beta=0.9, epoch=8, start_epoch=8), w)


# ---------------------------------------------------------------- config, models, optimizer

def test_method_is_a_validated_top_level_key_saved_with_the_config(tmp_path):
    cfg = load_config(TINY, ["method=focal", "baseline.focal_gamma=1.5"])
    save_config(cfg, tmp_path / "config.yaml")
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["method"] == "focal" and saved["baseline"]["focal_gamma"] == 1.5
    assert from_dict(saved).method == "focal"
    with pytest.raises(ConfigError, match="method: 'lda' is not one of"):
        load_config(TINY, ["method=lda"])
    with pytest.raises(ConfigError, match="baseline.cb_beta"):
        load_config(TINY, ["baseline.cb_beta=1"])


@pytest.mark.parametrize("method", BASELINES)
def test_every_baseline_trains_a_step(method):
    cfg = load_config(TINY, [f"method={method}"])
    torch.manual_seed(0)
    model = build_model(cfg, COUNTS)
    assert isinstance(model, ClassifierModel) and model.num_classes == 10
    opt = build_optimizer(model, cfg.train)
    two_stage = ("crt", "lws", "gcl", "mislas")  # the stage-2 module trains in a group of its own
    assert [g["name"] for g in opt.param_groups] == (["prior"] if method == "prior" else ["classifier", "prior"]
                                                     if method in two_stage else ["classifier"])
    images = torch.randn(8, 3, 32, 32)
    labels = torch.arange(8) % 10
    before = [p.detach().clone() for p in model.parameters()]
    losses_ = method_for(cfg).losses(model, images, labels, epoch=0, generator=torch.Generator())
    assert set(losses_) == {"prior_ce" if method == "prior" else method, "loss"}
    assert torch.isfinite(losses_["loss"])
    losses_["loss"].backward()
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    model.eval()
    scores, probs = model.sample(images, sampler="truncated", steps=5, levels=None)
    assert scores.shape == probs.shape == (8, 10)
    torch.testing.assert_close(probs.sum(1), torch.ones(8))
    assert torch.equal(scores.argmax(1), probs.argmax(1))
    assert method_for(cfg).prediction_levels(model, [], "cpu", lambda n: n) is None  # no noise levels


def test_prior_baseline_is_adpms_prior_and_keeps_its_lr_unclipped():
    cfg = load_config(TINY, ["method=prior"])
    baseline, adpm = build_model(cfg, COUNTS), build_adpm(cfg, COUNTS)
    mine, theirs = baseline.prior.state_dict(), adpm.prior.state_dict()
    assert {k: v.shape for k, v in mine.items()} == {k: v.shape for k, v in theirs.items()}
    assert clipped_parameters(baseline) == [] and len(clipped_parameters(adpm)) > 0
    opt = build_optimizer(baseline, cfg.train)
    assert set_lr(opt, cfg.train, 0.5) == cfg.train.prior_lr  # constant, as inside ADPM
    ce = build_model(load_config(TINY, ["method=ce"]), COUNTS)
    opt = build_optimizer(ce, cfg.train)
    assert set_lr(opt, cfg.train, 0.5) == pytest.approx(cfg.train.lr * 0.5)  # linear warm-up over 1 epoch
    assert [g["name"] for g in build_optimizer(adpm, cfg.train).param_groups] == ["denoiser", "prior"]


def test_ldam_drw_switches_to_class_balanced_weights_at_its_epoch():
    cfg = load_config(TINY, ["method=ldam_drw", "train.epochs=10", "baseline.drw_start_fraction=0.8"])
    method = method_for(cfg)
    model = method.build(COUNTS)
    cos, labels = torch.rand(6, 10) * 2 - 1, torch.tensor([0, 9, 9, 3, 8, 1])
    s = cfg.baseline

    def loss_at(epoch: int) -> torch.Tensor:  # through the model, as the engine calls it (set_epoch first)
        method.start_epoch(model, epoch)
        return model.loss_fn(cos, labels, model.class_counts, model.epoch)

    torch.testing.assert_close(loss_at(7), losses.ldam_loss(cos, labels, COUNTS, max_margin=s.ldam_max_margin,
                                                            scale=s.ldam_scale))
    weight = losses.class_balanced_weights(COUNTS, beta=s.cb_beta)
    torch.testing.assert_close(loss_at(8), losses.ldam_loss(cos, labels, COUNTS, max_margin=s.ldam_max_margin,
                                                            scale=s.ldam_scale, weight=weight))


# ---------------------------------------------------------------- class-balanced stream

def test_class_balanced_copies_give_every_class_the_same_draws():
    labels = {f"k{i:03d}": c for i, c in enumerate([0] * 50 + [1] * 7 + [2] * 3)}  # m = 60 // 3 = 20
    copies = class_balanced_copies(labels, seed=0, epoch=0)
    per_class = Counter()
    for key, n in copies.items():
        per_class[labels[key]] += n
    assert per_class == {0: 20, 1: 20, 2: 20}
    assert {copies[k] for k in labels if labels[k] == 0} == {0, 1}  # head: 20 of 50, without replacement
    assert {copies[k] for k in labels if labels[k] == 1} == {2, 3}  # 20 = 7 x 2 + 6 extra
    assert {copies[k] for k in labels if labels[k] == 2} == {6, 7}
    assert copies == class_balanced_copies(labels, seed=0, epoch=0)  # every rank computes the same
    assert copies != class_balanced_copies(labels, seed=0, epoch=1)


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory) -> Path:
    """digits-LT (IR 50) in 32-sample shards: enough shards for 2 ranks to balance well."""
    out = tmp_path_factory.mktemp("digits_small_shards")
    prepare("digits_lt", out, samples_per_shard=32, progress=False)
    return out


def _labels(loader) -> tuple[Counter, int]:
    counts, batches = Counter(), 0
    for batch in loader:
        counts.update(batch["label"].tolist())
        batches += 1
    return counts, batches


def test_resampled_epoch_is_class_balanced_with_equal_batches_on_two_ranks(small_shards):
    manifest = load_manifest(small_shards)
    tf = build_transform(32, train=False)
    n = manifest.num_samples["train"]
    m = n // 10
    # one rank: every class exactly m times, minus the < batch_size copies the last partial batch drops
    counts, batches = _labels(train_batches(manifest, "train", 32, tf, epoch=0, seed=0, class_balanced=True))
    assert batches == (10 * m) // 32 and sum(counts.values()) == batches * 32
    assert all(m - 31 <= counts[c] <= m for c in range(10)), counts
    natural, _ = _labels(train_batches(manifest, "train", 32, tf, epoch=0, seed=0))
    assert max(natural.values()) > 10 * min(natural.values())  # the stream it replaces is long-tailed
    # two ranks, three epochs: the same, fixed number of batches on both; classes near uniform overall
    lengths = set()
    for epoch in range(3):
        total = Counter()
        for rank in range(2):
            loader = train_batches(manifest, "train", 16, tf, epoch=epoch, seed=0, rank=rank, world_size=2,
                                   class_balanced=True)
            counts, batches = _labels(loader)
            assert batches == len(loader)
            lengths.add(batches)
            total += counts
        assert max(total.values()) < 1.6 * min(total.values()), total
    assert len(lengths) == 1
    # set_epoch re-draws the copies: the same samples as a loader built for that epoch
    lo = train_batches(manifest, "train", 16, tf, epoch=0, seed=0, class_balanced=True)
    lo.set_epoch(2)
    fresh = train_batches(manifest, "train", 16, tf, epoch=2, seed=0, class_balanced=True)
    assert [b["key"] for b in lo] == [b["key"] for b in fresh]


# ---------------------------------------------------------------- engine.train, in process

@pytest.mark.parametrize("method", ["prior", "ldam_drw"])  # resample: the DDP test below
def test_engine_trains_selects_and_evaluates_a_baseline(method, digits_shards, tmp_path):
    from adpm_dist.runtime.engine import train

    out = tmp_path / method
    cfg = load_config(TINY, [f"data.shards={digits_shards}", f"run.output_dir={out}", f"method={method}"])
    metrics = train(cfg)
    history = metrics["history"]
    # tiny: prior_warmup_epochs 1, epochs 2. The prior trains 1 + 2 epochs, the classifiers 2; all validate.
    assert len(history) == (3 if method == "prior" else 2)
    assert all("val_macro_f1" in row and row["phase"] == method for row in history)
    key = "prior_ce" if method == "prior" else method
    assert all(math.isfinite(row[key]) for row in history)
    saved = json.loads((out / "metrics.json").read_text())
    for k in ("accuracy", "macro_f1", "balanced_accuracy", "per_class", "prior", "noise_levels", "train_counts"):
        assert k in saved
    assert saved["method"] == method and saved["noise_levels"] == {}
    assert saved["prior"]["macro_f1"] == saved["macro_f1"]  # one classifier: both blocks agree
    assert yaml.safe_load((out / "config.yaml").read_text())["method"] == method
    best = torch.load(out / "checkpoints" / "best.pt", weights_only=True)
    assert "class_counts" in best["model"] and "levels" not in best["model"]


# ---------------------------------------------------------------- quality benchmark

def test_frequency_groups_scores_and_mean_std():
    groups = frequency_groups([5, 50, 1, 20, 20, 3, 9, 40, 2, 7])
    assert groups == {"head": [1, 7, 3, 4], "medium": [6, 9, 0], "tail": [5, 8, 2]}  # ties by class index
    per_class = {str(j): {"f1": j / 10} for j in range(10)}
    scores = run_scores({"macro_f1": 0.45, "balanced_accuracy": 0.5, "per_class": per_class},
                        [str(j) for j in range(10)], groups)
    assert scores["head_f1"] == pytest.approx((0.1 + 0.7 + 0.3 + 0.4) / 4)
    assert scores["tail_f1"] == pytest.approx((0.5 + 0.8 + 0.2) / 3)
    mean, std = mean_std([0.5, 0.7, 0.9])
    assert mean == pytest.approx(0.7) and std == pytest.approx(0.2)  # sample std (n - 1)
    assert math.isnan(mean_std([0.5])[1])


def test_replace_section_keeps_the_rest_of_the_file():
    text = f"# Results\n\n## Other\nkeep me\n\n{BEGIN}\nold table\n{END}\n\n## After\nkeep me too\n"
    new = replace_section(text, "new table")
    assert "old table" not in new and "new table" in new and new.count(BEGIN) == 1
    assert "keep me\n" in new and "keep me too" in new
    appended = replace_section("# Results\n", "first")
    assert appended.startswith("# Results") and f"{BEGIN}\nfirst\n{END}" in appended


def test_quality_script_smoke(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text(f"# Benchmark results\n\nearlier section\n\n{BEGIN}\nstale\n{END}\n")
    cmd = [sys.executable, "-m", "benchmarks.quality", "--config", "configs/digits_lt_tiny.yaml", "--irs", "20", "--seeds", "0",
           "--methods", "ce", "ldam_drw", "--out", str(tmp_path / "q"), "--results", str(results),
           "--csv", str(tmp_path / "runs.csv"), "--plot", str(tmp_path / "quality.png"), "--baseline-epochs", "1",
           "--jobs", "2", "train.eval_batch_size=512"]
    proc = run_session(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "digits_lt_ir20_ce_seed0: macro f1" in proc.stdout and "2 of 2 runs finished" in proc.stdout
    # the runs were Ray Tune trials of the study engine (tune/batch.py), not subprocesses
    assert json.loads((tmp_path / "q" / "ray" / "search.json").read_text())["mode"] == "runs"
    for method in ("ce", "ldam_drw"):
        run = tmp_path / "q" / "runs" / "digits_lt_ir20" / method / "seed0"
        assert json.loads((run / "cost.json").read_text())["wall_s"] > 0 and (run / "attempts.jsonl").is_file()
    text = results.read_text()
    assert "earlier section" in text and "stale" not in text and text.count(BEGIN) == 1
    assert "### digits_lt_ir20" in text and "--irs 20 --seeds 0" in text
    assert "Config configs/digits_lt_tiny.yaml;" in text  # as given on the command line (run from ROOT)
    assert (tmp_path / "quality.png").stat().st_size > 10_000
    assert ("| method | what | runs | macro-F1 | balanced acc. | head F1 | medium F1 | tail F1 | = own prior | min/run |"
            in text)
    assert "| `ce` | cross-entropy | 1 |" in text and "| `ldam_drw` | LDAM-DRW | 1 |" in text
    rows = (tmp_path / "runs.csv").read_text().splitlines()
    assert rows[0].startswith("dataset,method,seed,macro_f1,balanced_accuracy,head_f1,medium_f1,tail_f1")
    assert len(rows) == 3
    manifest = load_manifest(tmp_path / "q" / "data" / "digits_lt_ir20")
    assert manifest.options["imbalance_ratio"] == 20
    run = yaml.safe_load((tmp_path / "q" / "runs" / "digits_lt_ir20" / "ce" / "seed0" / "config.yaml").read_text())
    assert run["method"] == "ce" and run["train"]["epochs"] == 1 and run["train"]["eval_batch_size"] == 512
    again = run_session(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)  # resumable: nothing to run
    assert again.returncode == 0 and "2 already done, 0 to go" in again.stdout


@pytest.mark.parametrize("table", ["METHODS", "LEVERS", "SAMPLING_LEVERS"])
def test_every_benchmark_entry_is_a_valid_config(table):
    """A typo in an entry's overrides would otherwise surface only as a failed run, hours in."""
    entries = {"METHODS": METHODS, "LEVERS": LEVERS, "SAMPLING_LEVERS": SAMPLING_LEVERS}[table]
    for name, (overrides, _) in entries.items():
        cfg = load_config(ROOT / "configs" / "digits_lt.yaml", overrides)
        named = [o.partition("=")[2] for o in overrides if o.startswith("method=")]
        assert named == ([cfg.method] if table != "SAMPLING_LEVERS" else []), name  # the method, once
        assert name not in BASELINES or cfg.method == name, name  # an entry named after a method is that method


def test_validation_scores_read_only_the_validations():
    history = [{"epoch": 1, "phase": "prior warm-up"},
               {"epoch": 5, "val_macro_f1": 0.6, "val_prior_macro_f1": 0.5},
               {"epoch": 10, "val_macro_f1": 0.8, "val_prior_macro_f1": 0.9}]
    scores = validation_scores({"macro_f1": 0.123, "val_macro_f1": 0.8, "history": history})
    assert scores == pytest.approx({"val_selected": 0.8, "val_mean": 0.7, "val_gain_over_prior": 0.0})
    assert 0.123 not in scores.values()  # the evaluation part's score never enters a lever's numbers
    with pytest.raises(ValueError, match="no validation rows"):
        validation_scores({"val_macro_f1": 0.8, "history": history[:1]})
    rows = [{"lever": "alpha_one", "max_lambda": 2.5, **scores}, {"lever": "alpha_one", "max_lambda": 2.5, **scores}]
    table = lever_table(rows, LEVERS)
    assert "| `alpha_one` | alpha = 1 (eq. 14; paper grid) | 2 | 0.800 ± 0.000 | 0.700 ± 0.000 | 0.000 ± 0.000 | 2.50 |" in table
    assert "`adpm`" not in table  # entries without runs are left out


def test_levers_script_smoke(tmp_path):
    """One tiny ADPM run, then its selected checkpoint sampled again on validation: the as-trained
    sampling must reproduce the run's own validation score exactly (same images, weights and seed)."""
    markers = ("<!-- levers:begin -->", "<!-- levers:end -->")
    results = tmp_path / "RESULTS.md"
    results.write_text(f"# Benchmark results\n\n{BEGIN}\nquality table\n{END}\n")
    cmd = [sys.executable, "-m", "benchmarks.levers", "--config", str(TINY), "--irs", "20", "--seeds", "0",
           "--levers", "adpm", "--sampling", "as_trained", "ddim_10", "--out", str(tmp_path / "q"),
           "--results", str(results), "train.eval_batch_size=512"]
    proc = run_session(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "digits_lt_ir20_adpm_seed0: val macro f1" in proc.stdout  # progress never shows the eval part
    assert "eval macro-F1" not in proc.stdout and "finished digits_lt_ir20_adpm_seed0 (best val macro-F1" in proc.stdout
    run = tmp_path / "q" / "runs" / "digits_lt_ir20" / "adpm" / "seed0"
    sampled = json.loads((run / "sampling_levers.json").read_text())
    assert sampled["as_trained"]["val_macro_f1"] == json.loads((run / "metrics.json").read_text())["val_macro_f1"]
    assert sampled["ddim_10"]["overrides"] == ["diffusion.sampler=ddim", "diffusion.test_timesteps=10"]
    text = results.read_text()
    assert "quality table" in text and text.count(markers[0]) == 1 and markers[1] in text
    assert "### digits_lt_ir20: training levers" in text and "| `adpm` | ADPM | 1 |" in text
    assert "| `as_trained` |" in text and "| `ddim_10` |" in text
    # --no-run: tables from what is finished, nothing trained (isotropic has no run here)
    table_only = [*cmd[:cmd.index("--levers") + 1], "adpm", "isotropic", *cmd[cmd.index("--levers") + 2:], "--no-run"]
    proc = run_session(table_only, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "to go" not in proc.stdout and not (run.parent.parent / "isotropic").exists()
    assert "| `adpm` | ADPM | 1 |" in results.read_text()


# ---------------------------------------------------------------- 2 processes, DDP over gloo

def test_ddp_two_processes_train_a_resampled_baseline(digits_shards, tmp_path):
    from test_distributed import ACCELERATE, free_port, run

    out = tmp_path / "out"
    cmd = [ACCELERATE, "launch", "--config_file", "configs/accelerate/cpu_ddp.yaml", "--main_process_port",
           str(free_port()), "launch/train.py", "--config", str(TINY), f"data.shards={digits_shards}",
           f"run.output_dir={out}", "method=resample"]
    rc = run(cmd, tmp_path / "log", tmp_path, timeout=300)
    log = (tmp_path / "log").read_text()
    assert rc == 0, log[-4000:]
    assert "MULTI_CPU | 2 process(es), backend gloo" in log
    assert log.count("parameters identical on all 2 ranks") == 2  # validated after each of the 2 epochs
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "resample" and len(metrics["history"]) == 2
    assert metrics["n_samples"] == load_manifest(digits_shards).num_samples["test"]  # every test image once
