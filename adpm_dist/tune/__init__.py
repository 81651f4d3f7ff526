"""Ray Tune orchestration: the noise search (five-fold CV x (alpha, beta), nested CV on fold-only shards,
or the law fitted per fold) and studies (candidates x folds x seeds). One path: plan -> trials -> evaluate.

    contract  contract.py: the Experiment protocol every kind plans, the TrialRecord every trial gives the
              runner, cv_settings / apply_settings / the reserved keys every CV kind shares
    plan      study/trials.py (the one CV planner: candidates x points x seeds x folds), study/spec.py +
              study/plan.py (studies), grid.py (the noise grid: the `adpm` preset with the space
              {noise.alpha, noise.beta}), fit_plan.py (--fit), batch.py (named runs); protocol.py
              (held-out test part or nested CV; protocol.json),
              experiment.py (the experiment directory, configs, search.json, the --resume checks, the
              trials still to run), shards.py
    price     price.py (the price before a run, --dry-run), calibrate.py (--calibrate), cost.py (cost.json
              as CPU and GPU time: trial_hours)
    run       search.py (cluster + Tuner), trainable.py (one trial = engine.train), scheduler.py
              (ASHA per fold), progress.py (the live table), interrupt.py (Ctrl-C / SIGTERM on the driver)
    evaluate  evaluator.py picks by search.json's mode: consolidate.py + grid_report.py (grid),
              fit_summary.py + fit_law.py (--fit), study/report.py (studies); cells.py holds what they share
              (metrics.json checked on read)

The command lines are in cli/ (tune/search_noise.py and tune/study.py wrap them); this package imports
Ray only where it runs trials.
"""
