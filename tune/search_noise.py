"""Five-fold CV x the alpha/beta noise grid as parallel Ray Tune trials, then the paper's tables.

    python tune/search_noise.py --dataset digits_lt [--alphas 0,1/6,1/4,1/2,1] [--betas 1,...,10] [--folds 5]
        [--config configs/<dataset>.yaml] [--shards DIR] [--output runs/tune_<dataset>] [key=value ...]
    python tune/search_noise.py --dataset digits_lt --fit [--fit-boot 200] [--folds 5] ...

One trial = (alpha, beta, fold k): engine.train on the other folds, evaluated on fold k. Shards without
a `test` part (fold-only datasets) get nested CV: per outer fold, the same grid on the other folds
only. key=value overrides go to every trial's training config. Writes cv_results.csv, summary.md,
heatmap.png, best.yaml and protocol.json into --output (docs/tune.md).

--fit: no grid. Per fold k, the prior network alone trained on the other folds; eq. 7 fitted to its
per-class validation losses; ADPM trained at that fitted law (eq. 14) and evaluated on fold k. Writes
noise_fit.json, noise_fit.png, cv_results.csv, summary.md and protocol.json (docs/tune.md, "Fitting
the noise law instead of searching it").
"""
import sys

from adpm_dist.tune.cli.common import resolve_config  # noqa: F401  (the config lookup every tune CLI shares)
from adpm_dist.tune.cli.search_noise import build_parser, main, parse_args, show, warn_partial  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
