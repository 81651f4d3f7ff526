"""Train and evaluate ADPM.

    accelerate launch launch/train.py --config configs/digits_lt.yaml [key=value ...]

Everything after the config file is a dotted override (``train.epochs=2 noise.alpha=1/6``).
"""
from __future__ import annotations

import argparse
import sys

from adpm_dist.config import ConfigError, load_config
from adpm_dist.distributed import build_accelerator
from adpm_dist.engine import train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config (configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.epochs=2")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    acc = build_accelerator(cfg.train.mixed_precision, find_unused_parameters=cfg.train.prior_warmup_epochs > 0)
    try:
        train(cfg, acc)
    finally:
        acc.end_training()  # without it ~50% of multi-process runs abort at exit (STACK_FACTS 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
