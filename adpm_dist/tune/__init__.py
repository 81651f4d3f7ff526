"""Ray Tune orchestration: the noise search (five-fold CV x (alpha, beta), nested CV on fold-only shards,
or the law fitted per fold) and studies (candidates x folds x seeds). One path: plan -> trials -> evaluate.

    plan      grid.py (noise trials), fit_plan.py (--fit), study/spec.py + study/plan.py (studies);
              protocol.py (held-out test part or nested CV; protocol.json), experiment.py (the
              experiment directory, configs, search.json, and what every planner shares: the
              protocol the shards call for, the --resume checks, the trials still to run), shards.py
    run       search.py (cluster + Tuner), trainable.py (one trial = engine.train), scheduler.py
              (ASHA per fold), progress.py (the live table)
    evaluate  evaluator.py picks by search.json's mode: consolidate.py + grid_report.py (grid),
              fit_summary.py + fit_law.py (--fit), study/report.py (studies); cells.py holds what they share

The CLIs are tune/search_noise.py and tune/study.py; this package imports Ray only where it runs trials.
"""
