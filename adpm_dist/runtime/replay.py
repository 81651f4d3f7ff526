"""A run that trains nothing: another method's read-out over an earlier run's validated weights.

A method whose training is exactly another configuration's (``Method.training_twin``: posthoc_la trains
as its ``baseline.posthoc_base``, ADPM with ``model.prior_readout=posthoc_la`` as plain ADPM) needs no
training of its own once that twin has run with ``train.keep_validated=true``. ``replay(cfg, source)``
walks the source's ``checkpoints/validated/epoch_NNNN.pt`` in epoch order and validates each exactly as
``engine.validate_and_select`` does inside training (the same predict seeds, the same selection rule,
the same stop rule on the same validation losses), keeps the best as its own best.pt, then evaluates it
as any run does: metrics.json (choices included), predictions.csv, best.pt in ``cfg.run.output_dir``.
Its predictions are those of a separately trained run of ``cfg`` (tests/test_replay.py checks this bit
for bit). Its selection record says ``replayed: <source>``; its history holds the source's training
rows with this method's validation figures.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..config import Config
from .checkpoint import load_checkpoint, validated_checkpoints
from .engine import final_evaluation, selection_summary, set_up, start_position, stopped, validate_and_select


def replay(cfg: Config, source: str | Path, accelerator=None, on_epoch=None) -> dict:
    """Read ``cfg``'s method out over ``source``'s validated weights; the evaluation metrics (as engine.train)."""
    source = Path(source)
    found = validated_checkpoints(source / "checkpoints")
    if not found:
        raise FileNotFoundError(f"replay: {source}/checkpoints/validated holds no weights (train its config with "
                                "train.keep_validated=true first)")
    if cfg.train.select == "refit":
        raise ValueError("replay: train.select=refit trains again after selection; replay runs best or last only")
    run = set_up(cfg, accelerator)
    try:
        return replay_run(run, source, found, on_epoch)
    finally:
        if run.lock is not None:  # the run directory's lock (runlock.py), as engine.train_once releases it
            run.lock.release()


def replay_run(run, source: Path, found: list[Path], on_epoch) -> dict:
    cfg = run.cfg
    start_position(run)
    if not run.plan.has_validation:
        raise ValueError(f"replay: {cfg.run.output_dir} has no validation data to choose on (data.val_part)")
    trained = source_history(source)
    replayed: dict[int, dict] = {}
    for path in found:
        ckpt = load_checkpoint(path)
        epoch = int(ckpt["epoch"]) - 1
        row = dict(trained.get(epoch + 1, {"epoch": epoch + 1}))
        row.update(validate_and_select(run, epoch, with_own_buffers(run, ckpt["model"], path)))
        replayed[epoch + 1] = row
        if on_epoch is not None:
            on_epoch(row)
        if stopped(run):
            break
    last = max(replayed)
    run.loop["history"] = [replayed.get(e, trained.get(e, {"epoch": e})) for e in range(1, last + 1)]
    run.log.close()
    return final_evaluation(run, selection_summary(run) | {"replayed": str(source)}, cfg)


def source_history(source: Path) -> dict[int, dict]:
    """The source run's epoch rows by epoch (its training losses), {} before it has finished."""
    try:
        history = json.loads((source / "metrics.json").read_text()).get("history") or []
    except (OSError, ValueError):
        return {}
    return {int(row["epoch"]): row for row in history if "epoch" in row}


def with_own_buffers(run, weights: dict, path: Path) -> dict:
    """``weights`` completed with the keys only this method's model has, as it built them from the same
    training data (ADPM's ``readout_counts``); a key this model lacks means another architecture: refused."""
    own = run.eval_model.state_dict()
    if extra := sorted(set(weights) - set(own)):
        raise ValueError(f"replay: {path} holds weights this method's model does not have ({', '.join(extra[:5])}): "
                         "not its training twin")
    return {k: weights.get(k, v) for k, v in own.items()}


__all__ = ["replay"]
