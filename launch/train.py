"""Train and evaluate ADPM.

    accelerate launch launch/train.py --config configs/digits_lt.yaml [key=value ...]
    accelerate launch --config_file configs/accelerate/cpu_ddp.yaml launch/train.py --config ... (2 CPU ranks)

Everything after the config file is a dotted override (``train.epochs=2 noise.alpha=1/6``);
``train.resume=auto`` continues a killed run from its last checkpoint. ``--print-config`` prints
the resolved config (defaults < YAML < overrides, validated) as YAML and exits without training
(no accelerate launch needed: ``python launch/train.py --config X k=v --print-config``). docs/distributed.md has
the command for every launch (DDP, DeepSpeed ZeRO-2/3, several nodes).
"""
from __future__ import annotations

import argparse
import errno
import sys

import yaml

from adpm_dist.config import ConfigError, load_config, to_dict
from adpm_dist.runtime.distributed import accelerator_for, launcher_precision_conflict
from adpm_dist.report import write_report_or_warn
from adpm_dist.runtime.engine import train
from adpm_dist.runtime.interrupt import Interrupted, StopRequest, resume_command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config (configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.epochs=2")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as YAML and exit (nothing is trained or written)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        if args.print_config:
            print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
            return 0
        if conflict := launcher_precision_conflict(cfg.train):
            raise ConfigError(conflict)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    stop = StopRequest().install()  # SIGTERM / Ctrl-C: checkpoint at the next step, then exit 143 / 130
    acc = accelerator_for(cfg)
    acc.print(f"config: {args.config}" + (f" with overrides {' '.join(args.overrides)}" if args.overrides else ""))
    try:
        train(cfg, acc, stop=stop)
        if acc.is_main_process:
            write_report_or_warn(cfg.run.output_dir, acc.print)
    except ConfigError as e:  # refused before run.output_dir was touched (runtime/rundir.py): one line
        if acc.is_main_process:
            print(f"config error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        message = e.strerror + (f": {e.filename}" if e.filename else "")  # one line naming the path
        code = errno.errorcode[e.errno]
        print(f"error: {message}" + ("" if code in message else f" ({code})"), file=sys.stderr)
        return 1
    except Interrupted as e:
        if acc.is_main_process:
            print(f"{e}; resume with: {resume_command(['launch/train.py', *sys.argv[1:]], acc.num_processes)}",
                  file=sys.stderr, flush=True)
        return e.exit_code
    finally:
        acc.end_training()  # without it ~50% of multi-process runs abort at exit (docs/distributed.md)
        stop.uninstall()
    return 0


if __name__ == "__main__":
    sys.exit(main())
