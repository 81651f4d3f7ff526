"""What a study or a noise grid deletes once nothing needs it (docs/tune.md, "Disk"). At 224 px a resumable
checkpoint (weights, optimizer, RNG) is hundreds of MB, and a study has hundreds of trials.

- ``release_shared``: what a source trial kept only for others (checkpoints/validated: replays;
  checkpoints/prefix: trials starting from it), once every trial using it has finished.
- ``release_finished``: a finished trial's resume checkpoints (checkpoints/step_*); its best.pt, metrics,
  predictions and logs stay. A finished trial is never trained again (--resume skips it), so they only
  cost disk. A study keeps them with --keep-checkpoints.
A dependent that has to run again later finds nothing kept and trains itself (shared.split, prefix_passes).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from .contract import trial_dir, trial_dir_of


def release(study, trials: list, *, keep_checkpoints: bool = True, say=print) -> list[Path]:
    """release_shared over the study, and release_finished over ``trials`` unless ``keep_checkpoints``."""
    return release_shared(study, say) + ([] if keep_checkpoints else release_finished(study, trials, say))


def release_shared(study, say=print) -> list[Path]:
    """Delete what a source kept only for others (checkpoints/validated: replays; checkpoints/prefix: trials
    starting from it) once every trial depending on it has finished (metrics.json): at 224 px that is hundreds
    of MB per source. A dependent that must run again later finds nothing kept and trains itself (split,
    prefix_passes). Returns the folders removed."""
    from ..runtime.checkpoint import VALIDATED
    from ..runtime.prefix import prefix_root

    removed = []
    for attr, folder in (("derived_from", lambda c: c / VALIDATED), ("prefix_from", prefix_root)):
        users: dict[str, list] = {}
        for t in study.trials:
            if getattr(t, attr, None):
                users.setdefault(getattr(t, attr), []).append(t)
        for source, waiting in users.items():
            kept = folder(trial_dir_of(study.out, source) / "checkpoints")
            if kept.is_dir() and all(finished(study, t) for t in waiting):
                removed += delete([kept])
    if removed:
        say(f"shared training: released {len(removed)} folder(s) of weights that source trials kept for others "
            "(every trial using them has finished)")
    return removed


def release_finished(study, trials: list, say=print) -> list[Path]:
    """Delete the resume checkpoints of every trial of ``trials`` that has finished (release_runs)."""
    return release_runs([trial_dir(study.out, t) for t in trials], say)


def release_runs(run_dirs: list[Path], say=print) -> list[Path]:
    """Delete the resume checkpoints (checkpoints/step_*, and any half-written .tmp-/.old- ones) of every run
    directory that has finished (metrics.json). Returns the folders removed."""
    from ..runtime.checkpoint import complete_checkpoints

    removed = []
    for run in run_dirs:
        if (run / "metrics.json").is_file():  # an unfinished one's are what a retry resumes from
            ckpt = run / "checkpoints"
            removed += delete([*complete_checkpoints(ckpt), *ckpt.glob(".tmp-step_*"), *ckpt.glob(".old-step_*")])
    if removed:
        say(f"disk: removed {len(removed)} resume checkpoint(s) of finished trials (best.pt, metrics and "
            "predictions stay; --keep-checkpoints keeps them)")
    return removed


def finished(study, trial) -> bool:
    return (trial_dir(study.out, trial) / "metrics.json").is_file()


def delete(folders: list[Path]) -> list[Path]:
    for p in folders:
        shutil.rmtree(p, ignore_errors=True)
    return folders
