"""Studies: which long-tail method, with which settings, for this data (tune/study.py, docs/tune.md).

Read in this order; each module imports only the ones above it:

    spec.py     candidates (a method + fixed settings + its own search space; presets), --space files
    shared.py   shared training: a trial whose method trains as another trial's config is derived from it,
                replayed by the driver over the source's validated weights (../../runtime/replay.py)
    trials.py   the one planner: candidates x points x seeds x folds -> trials (nested CV's inner trials
                only where a candidate has something to choose); the noise grid (../grid.py) expands
                through it too
    plan.py     a study: its trials from trials.py, --resume / --max-trials decisions, search.json
    (run)       ../search.py runs the trials on Ray Tune, as for the noise grid (../trainable.py: one
                trial = one engine.train; ../scheduler.py: early stopping per fold and seed)
    stats.py    pure math: pooled out-of-fold scores, class groups, paired differences, bootstrap
    results.py  trials read back: per candidate the selected points and its (fold, seed) estimate
    compare.py  differences to the reference and the leader, the recommendation rule
    report.py   study.md, leaderboard.csv/png, recipe.yaml, cv_results.csv, protocol.json
"""
