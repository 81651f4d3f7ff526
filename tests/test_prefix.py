"""Shared prefixes (issue 33; runtime/prefix.py, Method.shared_prefix): a run started from another run's kept
stage 1 or prior warm-up (train.prefix_from) predicts exactly what it predicts trained from epoch 0, a
wrong or missing prefix is refused before anything is written, and a killed derived run resumes exactly.

In-process with one torch thread, as tests/test_replay.py: two runs of the same computations on the same
CPU are bit-identical, which is all this needs (the golden test's portable path is for pins compared
across CPUs)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_replay import same_figures, trial_config

from adpm_dist.config import ConfigError, load_config
from adpm_dist.methods import method_for
from adpm_dist.runtime.checkpoint import complete_checkpoints
from adpm_dist.runtime.engine import train
from adpm_dist.runtime.prefix import prefix_root

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "digits_lt_tiny.yaml"
STAGED = ("train.epochs=2", "baseline.stage2_epochs=2")
# (name, the source's settings, the derived run's: they differ only in keys its prefix does not read)
CASES = [("mislas smoothing", ("method=mislas", *STAGED, "baseline.mislas_smooth_tail=0.0"),
          ("method=mislas", *STAGED, "baseline.mislas_smooth_tail=0.1", "baseline.mislas_smooth_head=0.4")),
         ("crt stage-2 epochs", ("method=crt", *STAGED), ("method=crt", "train.epochs=2", "baseline.stage2_epochs=3")),
         ("adpm isotropic", ("method=adpm", "train.epochs=2"), ("method=adpm", "train.epochs=2", "noise.alpha=0")),
         ("adjusted chain tau", ("method=adpm_adjusted_chain", "train.epochs=2", "model.chain_tau=0.5"),
          ("method=adpm_adjusted_chain", "train.epochs=2", "model.chain_tau=1.5", "noise.alpha=0.5")),
         ("adjusted chain from adpm", ("method=adpm", "train.epochs=2"),  # a buffer more than the prefix's model
          ("method=adpm_adjusted_chain", "train.epochs=2")),
         ("adpm from adjusted chain", ("method=adpm_adjusted_chain", "train.epochs=2"),  # a buffer less
          ("method=adpm", "train.epochs=2", "noise.alpha=0")),
         # CE's whole training is cRT's and LWS's stage 1: their stage-2 module and its Adam state are their own
         ("crt from ce", ("method=ce", "train.epochs=2"), ("method=crt", *STAGED)),
         ("lws from ce", ("method=ce", "train.epochs=2", "train.ema_decay=0.9"), ("method=lws", *STAGED, "train.ema_decay=0.9")),
         ("lws from crt", ("method=crt", *STAGED), ("method=lws", "train.epochs=2", "baseline.stage2_epochs=3"))]


def config(shards: Path, out: Path, *extra: str):
    return trial_config(shards, out, "train.stop_patience=0", *extra)


@pytest.fixture
def source(fold_only_shards, tmp_path, one_torch_thread):
    """A run that keeps its prefix: train(source(settings)) -> its directory."""
    def run(*settings: str) -> Path:
        out = tmp_path / "source"
        train(config(fold_only_shards, out, *settings, "train.keep_prefix=true"))
        return out
    return run


@pytest.mark.parametrize("name,first,derived", CASES, ids=[c[0] for c in CASES])
def test_a_run_from_the_shared_prefix_predicts_as_the_separately_trained_run(name, first, derived, source,
                                                                             fold_only_shards, tmp_path):
    src = source(*first)
    prefix = method_for(config(fold_only_shards, src, *first)).shared_prefix()
    kept = complete_checkpoints(prefix_root(src / "checkpoints"))
    assert len(kept) == 1 and json.loads((kept[0] / "trainer_state.json").read_text())["epoch"] == prefix.epochs

    trained_here = []  # on_epoch sees the epochs this run trains: none of the prefix's
    started = train(config(fold_only_shards, tmp_path / "started", *derived, f"train.prefix_from={src}"),
                    on_epoch=lambda row: trained_here.append(row["epoch"]))
    train(config(fold_only_shards, tmp_path / "trained", *derived))
    assert trained_here and trained_here[0] == prefix.epochs + 1
    same_figures(tmp_path / "started", tmp_path / "trained")
    assert started["prefix_from"] == str(kept[0])
    trained = json.loads((tmp_path / "trained" / "metrics.json").read_text())
    assert "prefix_from" not in trained
    assert [r["loss"] for r in started["history"]] == [r["loss"] for r in trained["history"]]


def test_a_killed_derived_run_resumes_exactly(source, fold_only_shards, tmp_path):
    first, derived = CASES[0][1], CASES[0][2]
    src = source(*first)

    def killed(row):
        if row["epoch"] == 3:  # the first stage-2 epoch, after its checkpoint
            raise RuntimeError("killed")

    cfg = config(fold_only_shards, tmp_path / "started", *derived, f"train.prefix_from={src}", "train.resume=auto")
    with pytest.raises(RuntimeError, match="killed"):
        train(cfg, on_epoch=killed)
    assert json.loads((complete_checkpoints(tmp_path / "started" / "checkpoints")[-1]
                       / "trainer_state.json").read_text())["epoch"] == 3
    resumed = train(cfg)  # continues its own checkpoint, not the prefix
    train(config(fold_only_shards, tmp_path / "trained", *derived))
    same_figures(tmp_path / "started", tmp_path / "trained")
    assert resumed["prefix_from"].startswith(str(src))


def test_a_wrong_or_missing_prefix_is_refused_before_anything_is_written(source, fold_only_shards, tmp_path):
    src = source("method=mislas", *STAGED)
    refused = [(("method=mislas", *STAGED, "baseline.mislas_mixup_alpha=0.5"), "baseline.mislas_mixup_alpha"),
               (("method=mislas", "train.epochs=3", "baseline.stage2_epochs=1"), "ends at epoch 2"),
               (("method=crt", *STAGED), "method"),
               (("method=ce",), "its whole training"),
               (("method=posthoc_la",), "no shared prefix"),
               (("method=adpm", "train.prior_warmup_epochs=2"), "other settings in method")]  # ADPM never starts from MiSLAS
    for i, (settings, says) in enumerate(refused):
        out = tmp_path / f"refused{i}"
        with pytest.raises(ConfigError, match=says):
            train(config(fold_only_shards, out, *settings, f"train.prefix_from={src}"))
        assert not (out / "config.yaml").exists()
    with pytest.raises(ConfigError, match="no kept prefix"):
        train(config(fold_only_shards, tmp_path / "missing", "method=mislas", *STAGED,
                     f"train.prefix_from={tmp_path / 'refused0'}"))


def test_shared_prefixes_name_only_keys_that_act_after_them():
    def prefix(*overrides):
        return method_for(load_config(TINY, list(overrides))).shared_prefix()

    assert prefix("method=posthoc_la") is None and prefix("method=mislas").source_only is False
    ce, crt = prefix("method=ce", "train.epochs=4"), prefix("method=crt", "train.epochs=4")
    assert ce.source_only and ce.epochs == crt.epochs == 4 and ce.settings == crt.settings  # cRT's stage 1 is CE
    assert crt.settings["method"] == "ce" and crt.own_state == ("prior", "in_stage2")
    assert prefix("method=adpm", "train.prior_warmup_epochs=0") is None
    assert prefix("method=mislas", "train.epochs=4").epochs == 4
    assert "baseline.mislas_mixup_alpha" not in prefix("method=mislas").settings  # mixup is stage 1's
    assert set(prefix("method=lws").settings) == {"baseline.stage2_epochs", "method"}
    assert set(prefix("method=gcl").settings) == {"baseline.stage2_epochs"}  # its stage 1 is no other method's
    adpm = prefix("method=adpm", "train.prior_warmup_epochs=3")
    assert adpm.epochs == 3 and "noise.alpha" in adpm.settings and "levels" in adpm.own_state
    assert adpm.settings == prefix("method=adpm_adjusted_chain", "train.prior_warmup_epochs=3").settings
    assert not any(k.startswith(("model.", "diffusion.", "train.")) for k in adpm.settings if k != "model.chain_tau")


def test_an_idle_groups_adam_state_is_its_closed_form():
    """runtime/optim.py: what Adam leaves in a group that stepped with zero gradients (a stage-2 module through
    stage 1) is idle_state's closed form, bit for bit, and with_own_groups gives it to a prefix that lacks it."""
    import torch

    from adpm_dist.runtime.optim import with_own_groups

    torch.manual_seed(0)
    trained, idle = torch.nn.Linear(3, 2), torch.nn.Linear(3, 4)
    built = {k: v.clone() for k, v in idle.state_dict().items()}
    full = torch.optim.Adam([{"params": list(trained.parameters()), "name": "classifier"},
                             {"params": list(idle.parameters()), "name": "prior", "amsgrad": True, "lr": 2e-4}])
    for _ in range(5):
        loss = trained(torch.randn(8, 3)).square().mean() + 0.0 * sum(p.sum() for p in idle.parameters())
        loss.backward()
        full.step()
        full.zero_grad(set_to_none=True)
    assert all(torch.equal(v, built[k]) for k, v in idle.state_dict().items())  # zero gradients moved nothing

    alone = torch.optim.Adam([{"params": list(trained.parameters()), "name": "classifier"}])  # CE's optimizer
    alone.load_state_dict({"state": {i: full.state_dict()["state"][i] for i in (0, 1)},
                           "param_groups": [full.state_dict()["param_groups"][0]]})
    params = [p for g in full.param_groups for p in g["params"]]
    converted = with_own_groups(alone.state_dict(), full.state_dict(), params, ("prior",))
    expected = full.state_dict()
    assert converted["param_groups"] == expected["param_groups"]
    for i, state in expected["state"].items():
        assert set(converted["state"][i]) == set(state)
        assert all(torch.equal(converted["state"][i][k], v) for k, v in state.items())


def test_another_models_prefix_is_refused_under_deepspeed(source, fold_only_shards, tmp_path):
    """CE's prefix for cRT needs the optimizer-state conversion of runtime/optim.py, which DeepSpeed's sharded
    state does not pass through: refused there in one line; without DeepSpeed it loads non-strictly."""
    from adpm_dist.runtime.prefix import load_strictly

    src = source("method=ce", "train.epochs=2")
    kept = complete_checkpoints(prefix_root(src / "checkpoints"))[-1]
    crt = method_for(config(fold_only_shards, tmp_path / "crt", "method=crt", *STAGED))
    model, own = crt.build([24, 15, 9]), crt.shared_prefix().own_state
    assert load_strictly(kept, model, own) is False
    with pytest.raises(ConfigError, match="DeepSpeed"):
        load_strictly(kept, model, own, deepspeed=True)
    ce = method_for(config(fold_only_shards, tmp_path / "ce", "method=ce", "train.epochs=2"))
    assert load_strictly(kept, ce.build([24, 15, 9]), (), deepspeed=True) is True  # its own model: strict
