"""What the CV measured is what the recipe trains (issue 32): for every registered method (and ADPM with a
post-hoc prior read-out), a CV trial on fold-only shards records every choice it made on validation data;
trained with the recipe's rules (study/recipe.py) on the same folds, the run makes exactly the same
choices, each one fixed rather than re-chosen, and none falls back to a default unsaid. The epoch count is
the one choice fixed from the CV's pooled out-of-fold predictions instead (the trial tracks its held-out
fold, as a study's trials do: recipe.py ``pooled_epoch``), so the recipe stops where that pooled curve
peaks, which the trial's own carve-out may not have chosen."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from adpm_dist.config import load_config, set_key
from adpm_dist.methods import REGISTRY
from adpm_dist.runtime.engine import train
from adpm_dist.tune.study.recipe import RECIPE_SETTINGS, fixed_choices, pooled_epoch

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "digits_lt_tiny.yaml"
CASES = [(m, ()) for m in REGISTRY] + [("adpm", ("model.prior_readout=posthoc_la",))]


def trial_config(shards: Path, out: Path, method: str, extra: tuple[str, ...]):
    """CV trial k = 0 as a study plans it: train on fold1 + fold2 (validation carved out of them), score fold0."""
    return load_config(TINY, [f"method={method}", f"data.shards={shards}", "data.eval_part=fold0",
                              "data.train_parts=[fold1, fold2]", "train.epochs=3", "baseline.stage2_epochs=1",
                              "train.batch_size=16", f"run.output_dir={out}", "train.track_eval=true", *extra])


@pytest.mark.parametrize("method,extra", CASES, ids=[m + ("+prior_readout" if e else "") for m, e in CASES])
def test_the_recipe_makes_the_trials_choices(method, extra, fold_only_shards, tmp_path, one_torch_thread):
    trial = train(trial_config(fold_only_shards, tmp_path / "trial", method, extra))
    made = trial["choices"]
    assert "epochs" in made and made["epochs"]["source"].startswith("chosen on validation")
    if method in ("posthoc_la", "tau_norm") or extra:  # the read-out methods choose tau as well
        assert "read-out tau" in made
    assert json.loads((tmp_path / "trial" / "metrics.json").read_text())["choices"] == json.loads(json.dumps(made))

    cfg = trial_config(fold_only_shards, tmp_path / "recipe", method, extra)
    tracked = json.loads((tmp_path / "trial" / "metrics.json").read_text())
    settings, notes = fixed_choices([tracked])
    pooled, _ = pooled_epoch([tracked])
    assert settings["train.stop_at_epoch"] == pooled and any("pooled out-of-fold" in n for n in notes)
    for key, value in (RECIPE_SETTINGS | settings).items():
        set_key(cfg, key, value)
    set_key(cfg, "data.train_parts", ["fold1", "fold2"])  # the recipe trains on every fold; trial k's are these
    assert cfg.data.val_part == "none" and cfg.train.select == "last"
    recipe = train(cfg)["choices"]

    assert set(recipe) == set(made)
    for name, choice in made.items():
        assert recipe[name]["value"] == (pooled if name == "epochs" else choice["value"]), name
        assert recipe[name]["source"].startswith("fixed"), (name, recipe[name]["source"])
        assert not recipe[name].get("flag"), (name, recipe[name]["flag"])
