"""Ray Tune orchestration of the noise search: five-fold CV x (alpha, beta) as parallel trials (nested CV
on fold-only shards).

    grid.py         trials (alpha, beta, fold[, outer fold]), their ids and parts, the alpha = 0 shortcut
    protocol.py     held-out test part or nested CV; protocol.json (what each figure was selected/evaluated on)
    experiment.py   the experiment directory, base and per-trial configs, search.json, --resume checks
    shards.py       fold shards: prepared once (digits-LT) or checked (--shards)
    trainable.py    one trial = engine.train (plain call, or a Ray Train TorchTrainer for several workers)
    scheduler.py    optional ASHA early stopping, one instance per fold
    progress.py     the live trial table
    search.py       cluster connection and the Tuner
    consolidate.py  the evaluator: cv_results.csv, summary.md, heatmap.png, best.yaml, protocol.json

The CLI is tune/search_noise.py; this package imports Ray only where it runs trials.
"""
