"""What a run checks before it creates or changes anything in run.output_dir (one ConfigError line, exit 2
from launch/train.py), and the clean start of ``run.overwrite=true``.

A fresh run (train.resume empty) into a directory that holds an earlier run is refused: it would delete
that run's checkpoints and overlay two runs' TensorBoard curves. ``train.resume=auto`` without a
checkpoint to continue starts fresh only over nothing or over the same config's unfinished run: never
over a finished run (metrics.json) or another config's. A resume is refused when the config or
the data differ from the checkpoint's, unless train.resume_changes names the keys (data.shards for
other data); the checkpoint must also come from as many processes.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import Config, ConfigError, changed_keys
from ..data.manifest import Manifest, load_manifest
from ..data.plan import DataPlan, plan_data
from .checkpoint import STATE_FILE, check_resume_changes, complete_checkpoints, resolve_resume
from .record import data_differences, data_identity

# What a run writes into run.output_dir (launch/train.py, engine.final_evaluation, report): what marks
# the directory as an earlier run's, and what run.overwrite=true deletes. Anything else there (a
# launcher's train.log, attempts.jsonl, refit's selection/ run) is left alone.
RUN_OUTPUTS = ("config.yaml", "refit_config.yaml", "metrics.json", "predictions.csv", "summary.csv", "report.md",
               "confusion_matrix.png", "per_class_f1.png", "reliability.png", "training_history.png", "tsne.png",
               "checkpoints", "tensorboard")


@dataclass
class Checked:
    manifest: Manifest
    plan: DataPlan
    resume_from: Path | None  # the checkpoint this run continues, None for a fresh start
    prefix: Path | None = None  # a fresh start from another run's kept prefix (train.prefix_from; prefix.py)


def earlier_outputs(out: Path) -> list[str]:
    """The run outputs found in ``out`` (an empty checkpoints/ or tensorboard/ counts as none)."""
    found = []
    for name in RUN_OUTPUTS:
        p = out / name
        if p.is_file() or (p.is_dir() and any(p.iterdir())):
            found.append(name + ("/" if p.is_dir() else ""))
    return found


def check_run(cfg: Config, num_processes: int) -> Checked:
    """Everything that can be refused before the run directory is touched; ConfigError names the key."""
    manifest = read_manifest(cfg)
    try:
        plan = plan_data(manifest, cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    out = Path(cfg.run.output_dir)
    try:
        path = resolve_resume(cfg.train.resume, out / "checkpoints")
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None
    prefix = None
    if path is None and cfg.train.prefix_from:
        from ..methods import method_for
        from .prefix import find_prefix

        prefix = find_prefix(cfg, method_for(cfg), data_identity(manifest.shards, manifest.dataset), num_processes)
    if path is not None:
        check_resume(cfg, path, manifest, num_processes)
    elif cfg.run.overwrite:
        pass  # start_clean deletes the earlier run's outputs
    elif cfg.train.resume in ("", "none", "never") and (found := earlier_outputs(out)):
        raise ConfigError(f"run.output_dir: {out} holds an earlier run ({', '.join(found)}); continue it with "
                          "train.resume=auto, start it over with run.overwrite=true (deletes those outputs), "
                          "or choose another run.output_dir")
    elif cfg.train.resume == "auto":
        check_fresh_start(cfg, out)
    return Checked(manifest, plan, path, prefix)


def check_fresh_start(cfg: Config, out: Path) -> None:
    """train.resume=auto found no checkpoint to continue: starting fresh is only safe over nothing, or over a
    run of the same config killed before its first checkpoint (a retried trial). A finished run (metrics.json)
    or another config's run is never replaced: a scheduler that always adds train.resume=auto must not
    destroy results."""
    found = earlier_outputs(out)
    ways_on = ("choose another run.output_dir, start it over with run.overwrite=true (deletes those outputs), or "
               "continue from a checkpoint directory with train.resume=PATH")
    if (out / "metrics.json").is_file():
        raise ConfigError(f"train.resume=auto: {out} holds a finished run ({', '.join(found)}) and no step "
                          f"checkpoint to continue from in {out / 'checkpoints'}; starting fresh would replace its "
                          f"results. To run again: {ways_on}")
    saved = read_saved_config(out / "config.yaml")
    if saved is not None and (changed := changed_keys(saved, cfg)):
        raise ConfigError(f"train.resume=auto: {out} holds an earlier run with another config "
                          f"(config.yaml differs in {', '.join(changed)}) and no step checkpoint; starting fresh "
                          f"would mix two runs in one directory. Restore those settings, or {ways_on}")


def read_saved_config(path: Path) -> dict | None:
    """config.yaml of an earlier run as a plain dict (None when absent or unreadable: nothing to compare)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def read_manifest(cfg: Config) -> Manifest:
    try:
        return load_manifest(cfg.data.shards)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"data.shards: {e}") from None


def check_resume(cfg: Config, path: Path, manifest: Manifest, num_processes: int) -> None:
    """The checkpoint's config, data and process count against this run's."""
    try:
        loop = json.loads((path / STATE_FILE).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"train.resume: cannot read {path / STATE_FILE}: {e}") from None
    if loop.get("world_size", num_processes) != num_processes:
        raise ConfigError(f"train.resume: {path} was written by {loop['world_size']} processes, this run has "
                          f"{num_processes}: the data position and ZeRO shards depend on it; resume with the same launch")
    check_resume_changes(cfg, loop["config"], path)
    saved = loop.get("data")
    if saved is None or "data.shards" in cfg.train.resume_changes:
        return  # a checkpoint from before data identities were recorded, or a deliberate change of data
    differences = data_differences(saved, data_identity(manifest.shards, manifest.dataset))
    if differences:
        raise ConfigError(f"train.resume: the data in data.shards={cfg.data.shards} differ from the data {path} "
                          f"was trained on ({'; '.join(differences)}); point data.shards at that data, start a "
                          "fresh run, or allow it deliberately with train.resume_changes=data.shards")


def start_clean(out: Path) -> list[str]:
    """run.overwrite=true: delete the earlier run's outputs (never anything else in ``out``)."""
    removed = earlier_outputs(out)
    for name in RUN_OUTPUTS:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    return removed


def forget_failed_start(out: Path) -> list[str]:
    """A fresh start that failed before training (unreadable weights, a cache that does not fit, ...): remove
    the config.yaml it wrote, so that the corrected rerun is not refused as "holds an earlier run"."""
    removed = []
    for name in ("config.yaml", "refit_config.yaml"):
        if (out / name).is_file():
            (out / name).unlink()
            removed.append(name)
    return removed


def verify_data(acc, manifest: Manifest) -> None:
    """data.verify=true: rank 0 re-reads every shard against its manifest (manifest.verify_shards); a problem
    is one ConfigError line on every rank (no rank left waiting in a collective, no traceback)."""
    from ..data.manifest import verify_shards
    from .distributed import main_rank_verdict

    problem = None
    if acc.is_main_process:
        try:
            verify_shards(manifest)
        except (ValueError, OSError, KeyError) as e:
            problem = f"data.verify: {e}"
    problem = main_rank_verdict(acc, problem)
    if problem is not None:
        raise ConfigError(problem)
