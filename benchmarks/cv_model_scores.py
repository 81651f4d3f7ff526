"""The CV's own models on a draw's `test` part: what the study's interval estimates, before the recipe
changes it (benchmarks/study_calibration.py).

The interval is of the score of a model trained as each CV run was: on K - 1 of the K folds. The recipe
trains on all K, so on a set still learning its test score sits above that (a learning curve), and on a
test part from another distribution it sits below (a shift no CV can see). Scoring every CV trial's own
best.pt on the test part separates the two from the interval's own error: if the interval holds the CV
models' test score, it estimates what it says it does.

Per candidate, each of its trials (every fold and seed) predicts the whole test part with the trial's
selected weights and read-out (adpm_dist.predict, as a user would); the confusion counts are averaged
over trials and scored under the balanced prior, as the study pools its out-of-fold predictions. Cached
per draw in cv_models.json (inference only, but 3 models per candidate).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np


def trial_dirs(study: Path, candidate: str) -> list[Path]:
    """The candidate's CV trials (outer None) as search.json lists them, each with its best.pt; one point only (the
    calibration's space has one per candidate; a space of several would need the chosen point)."""
    trials = [t for t in json.loads((study / "search.json").read_text())["trials"]
              if t["candidate"] == candidate and t["outer"] is None]
    if len({t["point"] for t in trials}) > 1:
        raise ValueError(f"{study}: {candidate} has trials at several points; expected one")
    runs = [study / "trials" / t["id"] for t in trials]
    missing = [run.name for run in runs if not (run / "checkpoints" / "best.pt").is_file()]
    if missing:  # a score of fewer models than the interval pooled would not be the same quantity
        raise FileNotFoundError(f"{study}: no checkpoints/best.pt in trial(s) {', '.join(missing)}")
    return runs


def write_test_images(shards: Path, to: Path) -> list[Path]:
    """The test part's images as files under ``to/<label>/``, the label in the folder name."""
    from adpm_dist.data.stream import read_shard
    from adpm_dist.data.shards import IMAGE_EXTS

    files = []
    for shard in sorted(shards.glob("test-*.tar")):
        for sample in read_shard(shard):
            ext = next(e for e in IMAGE_EXTS if e in sample)
            label = int(json.loads(sample["json"])["label"])
            path = to / f"{label:04d}" / f"{sample['__key__'].replace('/', '_')}.{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(sample[ext])
            files.append(path)
    if not files:
        raise FileNotFoundError(f"{shards}: no test-*.tar shard")
    return files


def cv_models_score(runs: list[Path], images: Path) -> float:
    """Balanced macro-F1 of the runs' test predictions, confusions averaged over runs (no pseudo-images:
    this is the observed score)."""
    from adpm_dist.predict import load_model, predict_images
    from adpm_dist.tune.study import target

    total, k = None, None
    for run in runs:
        loaded = load_model(run, "cpu")
        k = len(loaded.class_names)
        rows = predict_images(loaded, [images], batch_size=128)
        bad = [r["path"] for r in rows if r["error"]]
        if bad:
            raise ValueError(f"{run}: {len(bad)} test images unreadable, first {bad[0]}")
        labels = np.array([int(Path(r["path"]).parent.name) for r in rows])
        preds = np.array([loaded.class_names.index(r["prediction"]) for r in rows])
        c = target.confusions(labels, preds, k)
        total = c if total is None else total + c
    return float(target.prior_scores(total / len(runs), np.full(k, 1.0 / k))["macro_f1"])


def cv_models_scores(where: Path, candidates: list[str]) -> dict[str, float]:
    """candidate -> its CV models' balanced test macro-F1, for a draw folder (``study/``, ``shards/``);
    computed once and cached in ``where/cv_models.json``."""
    cache = where / "cv_models.json"
    scores = json.loads(cache.read_text()) if cache.is_file() else {}
    todo = [c for c in candidates if c not in scores]
    if todo:
        with tempfile.TemporaryDirectory() as tmp:
            write_test_images(where / "shards", Path(tmp))
            for c in todo:
                scores[c] = cv_models_score(trial_dirs(where / "study", c), Path(tmp))
        partial = cache.with_suffix(".json.partial")
        partial.write_text(json.dumps(scores, indent=1))
        partial.replace(cache)
    return {c: scores[c] for c in candidates if c in scores}
