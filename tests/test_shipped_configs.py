"""Every shipped paper config trains: each of configs/{pad_ufes,ham10000,scin,hyper_kvasir}.yaml, with
its own networks, noise law and parameterisation, runs one joint epoch (prior and denoiser) on
shards prepared from a fixture tree in that dataset's official layout, at a reduced image size
(docs/data.md, "Expected layouts"). What is reduced is listed in SMOKE; nothing else is changed."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from adpm_dist.config import load_config
from adpm_dist.data.prepare import prepare
from test_data_readers import make_ham, make_hyper_kvasir, make_pad_ufes, make_scin

ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = {  # config -> (fixture tree builder, prepare options)
    "pad_ufes": (make_pad_ufes, {}),
    "ham10000": (lambda root: make_ham(root, "ham10000"), {}),
    "scin": (make_scin, {"top_k": 3}),
    "hyper_kvasir": (make_hyper_kvasir, {}),
}
# Sizes only: 32 px images with 16 px crops (the paper: 32 px crops of 224), one joint epoch (no prior
# warm-up: at the paper's widths one Adam step over ~10^8 parameters is seconds on a CPU), 5 sampling
# steps, no loader workers, no checkpoints.
SMOKE = ["data.image_size=32", "model.crop_size=16", "data.num_workers=0", "train.prior_warmup_epochs=0", "train.epochs=1",
         "train.warmup_epochs=1", "train.val_every=1", "train.batch_size=16", "train.eval_batch_size=32",
         "diffusion.test_timesteps=5", "train.checkpoint_every_epochs=0"]


@pytest.mark.parametrize("dataset", list(LAYOUTS))
def test_each_shipped_dataset_config_trains_a_few_steps(dataset, tmp_path):
    import warnings

    from adpm_dist.runtime.engine import train

    build, options = LAYOUTS[dataset]
    build(tmp_path / "raw")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny fixture classes: prepare warns that folds are thin
        prepare(dataset, tmp_path / "shards", root=tmp_path / "raw", workers=1, progress=False, **options)
    shipped = load_config(ROOT / "configs" / f"{dataset}.yaml")
    cfg = load_config(ROOT / "configs" / f"{dataset}.yaml",
                      [f"data.shards={tmp_path / 'shards'}", f"run.output_dir={tmp_path / 'run'}", *SMOKE])
    assert (cfg.model.backbone, cfg.model.encoder, cfg.diffusion.prediction) == \
        (shipped.model.backbone, shipped.model.encoder, shipped.diffusion.prediction)  # the shipped networks
    metrics = train(cfg)
    history = metrics["history"]
    assert len(history) == 1
    assert all(math.isfinite(row["loss"]) for row in history)
    assert math.isfinite(history[-1]["diffusion"]) and math.isfinite(history[-1]["val_diffusion"])
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["eval_part"] == shipped.data.eval_part and 0.0 <= saved["macro_f1"] <= 1.0
    assert "prior_agreement" in saved
