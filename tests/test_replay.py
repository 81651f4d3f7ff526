"""Shared training (issue 33): a read-out candidate replayed over its training twin's validated weights
predicts exactly what the candidate trained on its own predicts (runtime/replay.py, Method.training_twin).

In-process with one torch thread: two runs of the same computations on the same CPU are bit-identical,
which is all this needs (the golden test's portable path is for pins compared across CPUs)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from adpm_dist.config import load_config
from adpm_dist.methods import method_for
from adpm_dist.runtime.checkpoint import validated_checkpoints
from adpm_dist.runtime.engine import train
from adpm_dist.runtime.replay import replay

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "digits_lt_tiny.yaml"


def trial_config(shards: Path, out: Path, *extra: str):
    """CV trial k = 0 as a study plans it: fold1 + fold2 (validation carved out of them), scored on fold0;
    a stop patience of 1 so that the stop rule is exercised too."""
    return load_config(TINY, [f"data.shards={shards}", "data.eval_part=fold0", "data.train_parts=[fold1, fold2]",
                              "train.epochs=4", "train.batch_size=16", "train.stop_patience=1",
                              "train.stop_min_delta=0.0", f"run.output_dir={out}", *extra])


def same_figures(a: Path, b: Path) -> None:
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert (a / "predictions.csv").read_text() == (b / "predictions.csv").read_text()
    for key in ("macro_f1", "choices", "best_epoch", "val_macro_f1", "prior", "per_class"):
        assert ma[key] == mb[key], key
    sa, sb = ma["selection"], mb["selection"]
    assert {k: v for k, v in sa.items() if k != "replayed"} == sb


CASES = [("posthoc_la", ("method=ce",), ("method=posthoc_la",)),
         ("posthoc_la+eval_ema", ("method=ce", "train.eval_ema=true", "train.ema_decay=0.5"),
          ("method=posthoc_la", "train.eval_ema=true", "train.ema_decay=0.5")),
         ("tau_norm", ("method=ce",), ("method=tau_norm",)),
         ("adpm+prior_readout", ("method=adpm",), ("method=adpm", "model.prior_readout=posthoc_la"))]


@pytest.mark.parametrize("name,twin,readout", CASES, ids=[c[0] for c in CASES])
def test_replay_predicts_as_the_separately_trained_run(name, twin, readout, fold_only_shards, tmp_path,
                                                        one_torch_thread):
    source = tmp_path / "source"
    train(trial_config(fold_only_shards, source, *twin, "train.keep_validated=true"))
    kept = validated_checkpoints(source / "checkpoints")
    history = json.loads((source / "metrics.json").read_text())["selection"]["history"]
    assert [int(p.stem.split("_")[1]) for p in kept] == [v["epoch"] for v in history]

    cfg = trial_config(fold_only_shards, tmp_path / "replayed", *readout)
    assert method_for(cfg).training_twin() is not None
    replayed = replay(cfg, source)
    train(trial_config(fold_only_shards, tmp_path / "trained", *readout))

    same_figures(tmp_path / "replayed", tmp_path / "trained")
    assert replayed["selection"]["replayed"] == str(source)
    if name.startswith("adpm") or name == "tau_norm":  # the read-out's own choice, over the source's weights
        assert "read-out tau" in replayed["choices"]
    assert (tmp_path / "replayed" / "checkpoints" / "best.pt").is_file()


def test_training_twins():
    base = load_config(TINY, [])
    cases = {("method=posthoc_la",): {"method": "ce"}, ("method=tau_norm",): {"method": "ce"},
             ("method=posthoc_la", "baseline.posthoc_base=focal"): {"method": "focal"},
             ("method=adpm", "model.prior_readout=posthoc_la"): {"model.prior_readout": "raw"},
             ("method=adpm",): None, ("method=ce",): None}
    for overrides, twin in cases.items():
        assert method_for(load_config(TINY, list(overrides))).training_twin() == twin, overrides
    assert base is not None


def test_replay_refuses_a_source_without_validated_weights(tmp_path):
    cfg = load_config(TINY, [f"run.output_dir={tmp_path / 'r'}", "method=posthoc_la"])
    with pytest.raises(FileNotFoundError, match="keep_validated"):
        replay(cfg, tmp_path / "nothing")
