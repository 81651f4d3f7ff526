"""Which long-tail method, with which settings, for my data? Candidates x folds x seeds as Ray Tune trials.

    python tune/study.py --dataset pad_ufes --root /data/PAD-UFES-20 --folds 5        # every registered method
    python tune/study.py --dataset imagefolder --shards data/mine --methods ce,logit_adjusted,adpm --seeds 0 1
    ray job submit --address http://HEAD:8265 --working-dir . -- python tune/study.py --shards ... (RAY_ADDRESS)
    accelerate launch launch/train.py --config runs/study_mine/recipe.yaml              # train the recommendation

Each candidate is a registered method (with the search space its class declares) or a preset such as
adpm_isotropic; --space FILE.yaml replaces spaces. With a `test` part the CV selects and the recipe's
run on `test` is the figure to publish; fold-only shards get nested CV. Writes study.md, leaderboard.csv,
leaderboard.png, recipe.yaml, cv_results.csv and protocol.json into --output (docs/tune.md, "Studies").
Exit status: 0 complete, 1 a partial estimate (trials failed, skipped or stopped), 2 bad input.
"""
import sys

from adpm_dist.tune.cli.study import build_parser, main, parse_args, show  # noqa: F401  (the CLI, in the package)

if __name__ == "__main__":
    sys.exit(main())
