"""Inference on image files with a trained run: class, probabilities and how sure the model is.

Library: ``load_model(run_or_checkpoint)`` then ``predict_images(loaded, paths)`` (rows as dicts) and
``write_predictions_csv``. CLI (thin, in __main__.py):

    python -m adpm_dist.predict --checkpoint RUN_DIR --images PATH... --out preds.csv
        [--samples N] [--sampler truncated|respaced|ddim] [--steps S] [--batch-size B]
        [--device cpu|cuda] [--seed 0] [--classes a,b,c]

Images get the evaluation transform of training (centre square crop, resize to the checkpoint's
data.image_size, ImageNet normalisation). With N samples per image the prediction is CARD's
majority vote (ADPM.sample(samples=N)); probabilities are then the vote shares. With N = 1 the
probabilities are softmax(y0) (DiffMIC's read-out, the same columns as the training run's
predictions.csv). No uncertainty column: the former `agreement` and `entropy` changed meaning with N
and, measured, never told right from wrong (y0 form: agreement 1.0 and entropy 0 for every image at
N = 5, wrong ones included; docs/report.md); the prior's probabilities are in the prior_p_ columns.
The noise levels are always the training lambda_j: a prediction must not depend on which other
images happen to be in the same folder (noise.test_levels=soft_counts is an evaluation-set option).
A baseline's checkpoint (method=, docs/baselines.md) predicts too: probabilities are the softmax of
its logits, there are no prior_ columns (a baseline has no prior network beside it), and --samples
must stay 1 (it is deterministic).
"""
from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ..files import atomic_writer
from ..runtime.checkpoint import load_checkpoint
from ..config import Config, ConfigError, from_dict, set_key, to_dict, validate
from ..data.transforms import transform_for
from ..methods import ClassifierModel, method_class
from ..models import ADPM

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


@dataclass
class LoadedModel:
    model: ADPM | ClassifierModel  # cfg.method says which
    cfg: Config
    class_names: list[str]
    checkpoint: Path
    device: torch.device


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory (its checkpoints/best.pt) or a checkpoint file."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "checkpoints" / "best.pt", path / "best.pt"):
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"{path}: no checkpoints/best.pt in this run directory (did training finish?)")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"--device {name!r}: expected cpu or cuda[:N]")
    return torch.device(name)


def load_model(path: str | Path, device: str | None = None, expected_classes: list[str] | None = None) -> LoadedModel:
    """Rebuild the model a checkpoint describes and load its weights; clear errors on any mismatch.

    The config stored in the checkpoint rebuilds the architecture; the class count comes from the
    weights (the ``levels`` buffer, loaded from the state dict, so build_model gets dummy counts).
    """
    ckpt_path = resolve_checkpoint(path)
    ckpt = load_checkpoint(ckpt_path)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        keys = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{ckpt_path}: not an adpm-dist checkpoint (expected keys 'model' and 'config', got {keys})")
    try:
        cfg = from_dict(ckpt["config"])
    except ConfigError as e:
        raise ValueError(f"{ckpt_path}: its config is incompatible with this version of adpm-dist: {e}") from None
    state = {k.removeprefix("module."): v for k, v in ckpt["model"].items()}
    # The class count: ADPM saves its lambda_j ("levels"), a baseline (method=) its n_j ("class_counts").
    method = method_class(cfg.method)(cfg)
    count_key = method.counts_buffer
    if count_key not in state:
        raise ValueError(f"{ckpt_path}: weights have no '{count_key}' buffer (not an adpm-dist checkpoint of "
                         f"method={cfg.method})")
    k = state[count_key].numel()
    names = list(ckpt.get("class_names") or [])
    if not names:
        names = [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{ckpt_path}: weights are for {k} classes but the checkpoint names {len(names)}: {names}")
    if expected_classes is not None and list(expected_classes) != names:
        raise ValueError(f"{ckpt_path}: checkpoint classes {names} (K={k}) differ from the expected "
                         f"{list(expected_classes)} (K={len(expected_classes)})")
    # The weights come from the checkpoint: never try to read the pretrained files it started from.
    for key in ("pretrained", "encoder_pretrained", "local_pretrained"):
        if hasattr(cfg.model, key):
            setattr(cfg.model, key, "")
    try:
        model = method.build([1] * k)
    except (ValueError, RuntimeError) as e:
        raise ValueError(f"{ckpt_path}: cannot rebuild the model its config describes: {e}") from None
    mismatch = state_mismatch(model.state_dict(), state)
    if mismatch:
        m = cfg.model
        raise ValueError(f"{ckpt_path}: weights do not fit the model its config describes (K={k}, "
                         f"model.backbone={m.backbone}, model.encoder={m.encoder}, model.hidden_dim={m.hidden_dim}, "
                         f"data.image_size={cfg.data.image_size}; saved by another adpm-dist version?): {mismatch}")
    model.load_state_dict(state)
    dev = _device(device)
    return LoadedModel(model.to(dev).eval(), cfg, names, ckpt_path, dev)


def state_mismatch(expected: dict, saved: dict) -> str:
    """'' if ``saved`` fits ``expected`` key for key and shape for shape, else a short summary."""
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    shapes = [f"{k}: saved {tuple(saved[k].shape)} vs model {tuple(v.shape)}" for k, v in expected.items()
              if k in saved and tuple(saved[k].shape) != tuple(v.shape)]
    parts = []
    for what, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if items:
            parts.append(f"{len(items)} {what} (e.g. {', '.join(items[:2])})")
    return "; ".join(parts)


def find_images(paths: list[str | Path]) -> list[Path]:
    """Files as given (any extension), folders searched recursively for image files, in sorted order.

    A path that does not exist is kept, so that it gets an error row instead of vanishing silently; so
    is a symlink to an image that is gone (a dangling link in a folder).
    """
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if (f.is_file() or dangling(f))
                            and f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            found.append(p)
    return found


def dangling(path: Path) -> bool:
    return path.is_symlink() and not path.exists()


def missing_paths(paths: list[str | Path]) -> list[str]:
    """Command-line paths that name nothing at all (a dangling symlink names something: an error row)."""
    return [str(p) for p in paths if not os.path.lexists(p)]


def _read(path: Path, transform) -> tuple[torch.Tensor | None, str]:
    try:
        with Image.open(path) as im:
            image = im.convert("RGB")  # forces a full decode: truncated files fail here, not later
        return transform(image), ""
    except FileNotFoundError:
        return None, f"dangling symlink to {os.readlink(path)}" if dangling(path) else "file not found"
    except Exception as e:  # noqa: BLE001 - any unreadable image becomes an error row, the rest continue
        return None, f"cannot read image: {type(e).__name__}: {e}"


def check_sampling(cfg: Config, sampler: str | None, steps: int | None, samples: int) -> tuple[str, int]:
    """Sampler and step count for prediction (defaults: the run's), validated like a config."""
    sampler = cfg.diffusion.sampler if sampler is None else sampler
    steps = cfg.diffusion.test_timesteps if steps is None else steps
    if samples < 1:
        raise ValueError(f"--samples must be >= 1, got {samples}")
    if samples > 1 and not method_class(cfg.method).has_diffusion:
        raise ValueError(f"--samples {samples}: a method={cfg.method} classifier is deterministic, "
                         "several samples (a majority vote) only apply to ADPM")
    trial = from_dict(to_dict(cfg))
    try:
        set_key(trial, "diffusion.sampler", sampler)
        set_key(trial, "diffusion.test_timesteps", steps)
        validate(trial)
    except ConfigError as e:
        raise ValueError(f"sampling options: {e}") from None
    return sampler, steps


@torch.no_grad()
def predict_images(loaded: LoadedModel, paths: list[str | Path], *, samples: int = 1, sampler: str | None = None,
                   steps: int | None = None, batch_size: int = 32, seed: int = 0, progress: bool = False) -> list[dict]:
    """One row per image, in input order: {path, prediction, p_<class>..., error}
    and, for a diffusion method (``Method.has_diffusion``), prior_prediction and prior_p_<class>....
    An unreadable image gets a row with ``error`` set."""
    sampler, steps = check_sampling(loaded.cfg, sampler, steps, samples)
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    transform = transform_for(loaded.cfg, train=False)
    names, model = loaded.class_names, loaded.model
    prior = method_class(loaded.cfg.method).has_diffusion  # a baseline's "prior" is itself: not repeated
    files = find_images(paths)
    rows: list[dict] = []
    chunks = range(0, len(files), batch_size)
    if progress and sys.stderr.isatty():  # a bar in a log file is noise
        from tqdm.auto import tqdm
        chunks = tqdm(chunks, desc="predicting", unit="batch", file=sys.stderr)
    for b, start in enumerate(chunks):
        chunk = files[start:start + batch_size]
        read = [_read(f, transform) for f in chunk]
        good = [i for i, (x, _) in enumerate(read) if x is not None]
        out: dict[int, dict] = {}
        if good:
            images = torch.stack([read[i][0] for i in good]).to(loaded.device)
            gen = torch.Generator().manual_seed(seed * 1_000_003 + b)
            y0, mu = model.sample(images, sampler=sampler, steps=steps, test_rule=loaded.cfg.noise.test_rule,
                                  generator=gen, samples=samples)
            probs = torch.softmax(y0.float(), dim=1).cpu()  # vote shares if samples > 1 (vote_readout)
            mu = mu.float().cpu()
            pred = probs.argmax(1)
            for j, i in enumerate(good):
                row = {"prediction": names[pred[j]]}
                row |= {f"p_{c}": float(probs[j, m]) for m, c in enumerate(names)}
                if prior:
                    row |= {"prior_prediction": names[int(mu[j].argmax())]}
                    row |= {f"prior_p_{c}": float(mu[j, m]) for m, c in enumerate(names)}
                out[i] = row
        for i, f in enumerate(chunk):
            rows.append({"path": str(f), "error": read[i][1]} | out.get(i, {}))
    return rows


def csv_columns(class_names: list[str], prior: bool = True) -> list[str]:
    """The CSV's columns; the prior's only for a diffusion method's predictions."""
    return (["path", "prediction"] + (["prior_prediction"] if prior else [])
            + [f"p_{c}" for c in class_names] + ([f"prior_p_{c}" for c in class_names] if prior else []) + ["error"])


def write_predictions_csv(rows: list[dict], class_names: list[str], out: str | Path, prior: bool | None = None) -> Path:
    """``prior``: whether to write the prior's columns (default: whether the rows carry them)."""
    out = Path(out)
    prior = any("prior_prediction" in r for r in rows) if prior is None else prior
    with atomic_writer(out, newline="") as f:  # an interrupted run keeps the previous CSV, never half of one
        writer = csv.DictWriter(f, fieldnames=csv_columns(class_names, prior), restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    return out
