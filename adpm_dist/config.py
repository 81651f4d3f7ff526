"""Typed configuration tree: dataclasses, YAML loading, dotted ``key=value`` overrides.

A config is plain data: it is saved next to every run and inside every checkpoint, so a run can
always be reproduced from its own directory. Unknown keys and invalid values fail at start with a
message that names the key (``ConfigError``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A config file or override names an unknown key or holds an invalid value."""


@dataclass
class DataConfig:
    shards: str = "data/digits_lt"          # directory written by `python -m adpm_dist.data.prepare`
    eval_part: str = "test"                 # the part we report on; never trained on, never selected on
    train_parts: list[str] = field(default_factory=list)  # empty: every part but eval_part, "val" and "test"
    val_part: str = "auto"                  # model selection data: "auto" = the shards' `val` part if they
                                            # have one (digits-LT), else the carve-out below; "carve"; a part name;
                                            # "none" = no validation (train.select=refit's second pass)
    val_fraction: float = 0.15              # stratified validation carve-out of the training parts
    val_max_share: float = 0.2              # a class gives at most this share of its samples to the carve-out
    val_min_train: int = 2                  # ... and always keeps this many for training (rare classes: no validation)
    train_share: float = 1.0                # share of the training images (after the carve-out) a run trains on:
                                            # per class, whole groups, seeded; every class keeps one (a study's
                                            # learning curve, docs/tune.md)
    image_size: int = 224
    hflip: bool = True                      # docs/algorithm.md, "Inputs and augmentation"
    vflip: bool = False
    rotation: float = 30.0
    crop: Literal["centre", "random_resized"] = "centre"  # training crop: DiffMIC's centre square, or a random
                                            # box of the whole image (crop_scale of its area, crop_ratio aspect)
    crop_scale: list[float] = field(default_factory=lambda: [0.35, 1.0])
    crop_ratio: list[float] = field(default_factory=lambda: [0.75, 1.3333])
    color_jitter: float = 0.0               # brightness / contrast / saturation factors in [1 - J, 1 + J]
    auto_augment: Literal["none", "trivial"] = "none"  # TrivialAugment, per image (data.augment_on=cpu only)
    mean: list[float] = field(default_factory=list)  # per-channel normalisation (RGB, 0-1 scale); empty: the
    std: list[float] = field(default_factory=list)   # pretrained weights' (model.pretrained from timm's hub), else ImageNet's
    num_workers: int = 0
    verify: bool = False                    # check every shard's sha256 against the manifest at start (reads
                                            # all shard bytes once: seconds locally, a full download if remote)
    augment_on: Literal["auto", "device", "cpu"] = "auto"  # where the augmentation runs: per image in the
                                            # loader (cpu) or per batch on the training device (device); auto =
                                            # device with an accelerator, cpu without (docs/data.md, section 2)
    cache: Literal["none", "host", "device"] = "none"  # decoded images kept for the run: in shared host
                                            # memory (one copy per node) or on the device (docs/data.md)


@dataclass
class ModelConfig:
    backbone: str = "resnet18"              # timm name of the prior network's backbone
    encoder: str = "resnet18"               # timm name of the denoiser's image encoder (DiffMIC: ResNet-18),
                                            # or "prior": reuse the prior's global feature map (no 2nd backbone)
    backbone_level: int = -1                # feature stage used (index into timm feature_info; -1 deepest)
    encoder_level: int = -1
    pretrained: str = ""                    # local checkpoint for the prior backbone ("" = random init)
    encoder_pretrained: str = ""            # local checkpoint for the denoiser's encoder
    hidden_dim: int = 6144                  # DiffMIC/ADPM width of the denoiser (docs/algorithm.md, "Denoiser")
    token_dim: int = 512                    # width of the cross-attention tokens (docs/algorithm.md, "Denoiser")
    heads: int = 8
    feature_product: bool = True            # keep DiffMIC's element-wise product with pooled features
    reverse_prior: bool = True              # cross-attention over image tokens (paper "reverse prior")
    forward_prior: bool = True              # global and local prior chains in the loss (eq. 16)
    local_backbone: str = ""                # timm name of the DCG local branch ("" = same as backbone)
    local_level: int = -1
    local_pretrained: str = ""              # local checkpoint for the local backbone ("" = random init)
    crop_size: int = 32                     # DCG local crops in pixels (paper: 32 of 224; digits-LT: 8 of 32)
    num_crops: int = 6                      # DCG top-k saliency windows (docs/algorithm.md, "Prior network (DCG)")
    crop_channels: Literal["channel0", "rgb"] = "channel0"  # channel0 (DiffMIC quirk) or rgb
    prior_loss: Literal["ce", "balanced_softmax"] = "ce"                  # the prior's training loss: ce (DCG, the paper) or balanced_softmax
    prior_mean: Literal["eval", "train_batch"] = "eval"                # where a joint step's chain means mu come from: eval (a 2nd prior pass,
                                            # eval mode, no_grad: the paper) or train_batch (the CE's train-mode
                                            # pass, detached: one prior pass per step, ~1/3 of a prior step less)
    prior_readout: Literal["raw", "posthoc_la"] = "raw"  # ADPM's prior block: softmax(fused) (raw), or post-hoc
                                            # logit adjustment softmax(fused - tau log pi), tau chosen on validation
                                            # from baseline.readout_tau_grid (docs/baselines.md); y0 is unchanged
    chain_tau: float = 1.0                  # method=adpm_adjusted_chain: the chains diffuse toward softmax(z - tau log pi)


@dataclass
class NoiseConfig:
    alpha: float = 1.0 / 6.0                # eq. 14; alpha = 0 is the isotropic DiffMIC model
    beta: float = 5.0
    formula: Literal["A", "B", "power"] = "A"  # eq. 14 variants (docs/algorithm.md): A (default), B, power
    n_floor: int = 0                        # counts below are raised to this before eq. 14 (Hyper-Kvasir: 10)
    test_rule: Literal["expected", "argmax"] = "expected"  # eq. 18: expected (sum p_j lambda_j) or argmax
    apply: Literal["std", "variance"] = "std"  # lambda scales the noise std, or the variance (docs/algorithm.md)
    test_levels: Literal["train", "soft_counts"] = "train"  # lambda_j from train counts, or soft counts of the evaluated set


@dataclass
class DiffusionConfig:
    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    test_timesteps: int = 250
    sampler: Literal["truncated", "respaced", "ddim"] = "truncated"  # docs/algorithm.md, "Sampling"
    mmd_weight: float = 0.5                 # eq. 17
    samples: int = 1                        # samples per image; > 1: CARD majority vote (docs/algorithm.md, "Read-out")
    respace_start: int = 0                  # respaced/ddim span positions 0..N-1, N = this or T (0); 250 = DiffMIC start
    prediction: Literal["eps", "y0"] = "eps"                 # what the denoiser outputs: eps (CARD/DiffMIC/paper) or y0 (mu + residual)
    train_t_max: int = 0                    # train on t < this only (0 = all T); 250 = the truncated sampler's range


@dataclass
class BaselineConfig:
    """Hyper-parameters of the long-tail baselines (``method=``, docs/baselines.md); ADPM ignores them.

    weighted_ce needs none: its class weights are 1/n_j normalised to mean 1.
    """
    focal_gamma: float = 2.0                # focal loss (Lin et al. 2017): -(1 - p_y)^gamma log p_y; 0 = CE
    la_tau: float = 1.0                     # logit-adjusted loss (Menon et al. 2021): CE(f + tau log pi); 0 = CE
    ldam_max_margin: float = 0.5            # LDAM (Cao et al. 2019): margin_j = C n_j^(-1/4), the largest = this
    ldam_scale: float = 30.0                # LDAM: logits = scale * cos(feature, class weight) (normalised head)
    drw_start_fraction: float = 0.8         # LDAM-DRW: class-balanced weights from this fraction of train.epochs on
    cb_beta: float = 0.9999                 # DRW weights (1 - beta) / (1 - beta^n_j) (Cui et al. 2019), sum = K
    # Issue 19 methods (adpm_dist/methods/{decoupled,posthoc,margins,mislas}.py, docs/baselines.md).
    stage2_epochs: int = 10                 # two-stage methods (crt, lws, gcl, mislas): epochs after train.epochs
                                            # that re-train only the head (stage 2), class-balanced
    readout_tau_grid: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0])
                                            # tau_norm, posthoc_la, model.prior_readout: tau is the grid value with the
                                            # best validation macro-F1 (first on ties); 1 without validation data
    posthoc_base: Literal["ce", "weighted_ce", "focal", "logit_adjusted", "balanced_softmax", "ldam_drw",
                          "resample", "vs"] = "ce"  # posthoc_la: the classifier method whose trained scores it adjusts
    vs_gamma: float = 0.2                   # VS loss (Kini et al. 2021): multiplicative Delta_j = (n_j / n_max)^gamma
    vs_tau: float = 1.0                     # VS loss: additive iota_j = tau log pi_j
    gcl_noise_mul: float = 0.5              # GCL (Li et al. 2022): cloud size; cos_j - mul |eps| log(n_max/n_j) / log(n_max/n_min)
    gcl_scale: float = 30.0                 # GCL: logits = scale * cosine
    gcl_margin: float = 0.0                 # GCL: extra margin subtracted from the target cosine (their code's m)
    mislas_mixup_alpha: float = 1.0         # MiSLAS stage 1: mixup lambda ~ Beta(alpha, alpha)
    mislas_smooth_head: float = 0.3         # MiSLAS stage 2: label-aware smoothing epsilon of the largest class
    mislas_smooth_tail: float = 0.0         # ... of the smallest class
    mislas_shape: Literal["concave", "linear", "convex"] = "concave"  # ... epsilon_j between them as a function of n_j


@dataclass
class TrainConfig:
    epochs: int = 1000
    prior_warmup_epochs: int = 15
    freeze_prior: bool = False              # stop training the prior after its warm-up (CARD's frozen f_phi);
                                            # DiffMIC and the paper train it jointly (docs/algorithm.md)
    batch_size: int = 32
    eval_batch_size: int = 256              # sampling batch: only the MLP runs per step, so go wide
    lr: float = 1e-3                        # denoiser (docs/algorithm.md, "Training loop")
    warmup_epochs: int = 40                 # linear LR warm-up, then half-cycle cosine
    prior_lr: float = 2e-4                  # DCG Adam (amsgrad) lr (docs/algorithm.md, "Prior network (DCG)")
    grad_clip: float = 1.0
    val_every: int = 10                     # epochs between validations (data.val_part)
    select: Literal["best", "last", "refit"] = "best"  # which epoch is kept (runtime/selection.py): best val
                                            # macro-F1, ties to the lower val NLL; last; or refit on train+val
    keep_last: bool = False                 # also save the last epoch's weights as checkpoints/last.pt (to compare rules)
    keep_validated: bool = False            # also keep every validated epoch's weights (checkpoints/validated/): what
                                            # a study's read-out candidates are replayed from (runtime/replay.py)
    track_eval: bool = False                # also score the eval part wherever the run validates (every val_every
                                            # epochs, with or without validation data), its confusion counts kept in
                                            # metrics.json `eval_track`: what a study's recipe chooses its epoch count
                                            # from (pooled out-of-fold, docs/tune.md); never read by the run itself
    stop_patience: int = 0                  # stop after this many validations without the validation loss (ADPM: its
                                            # diffusion loss) improving by > stop_min_delta; 0 = all train.epochs
    stop_min_delta: float = 0.01            # relative improvement that counts (runtime/selection.py, "Stopping")
    stop_at_epoch: int = 0                  # end after this epoch (1-based, warm-up included), the LR schedule still
                                            # spanning train.epochs: a study's recipe stops where the CV trials kept
                                            # their weights (docs/tune.md, "What the recipe trains"); 0 = off
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    log_every: int = 10
    log_with: list[str] = field(default_factory=list)  # Accelerate trackers beside TensorBoard/CSV: wandb, mlflow,
                                            # comet_ml, aim, clearml, dvclive, ... (runtime/tracking.py)
    # Distributed training, EMA, checkpoints, resume (docs/distributed.md).
    grad_accum: int = 1                     # micro-batches per optimizer step (global batch = batch_size*ranks*grad_accum)
    ema_decay: float = 0.9999               # EMA of the weights (DiffMIC); 0 = off
    eval_ema: bool = False                  # validate, select and test the EMA weights instead of the live ones
    checkpoint_every_steps: int = 0         # resumable checkpoint every N optimizer steps (0 = only at epoch ends)
    checkpoint_every_epochs: int = 1        # ... and every N epochs (0 = never)
    keep_checkpoints: int = 2               # keep the last K (plus the one with the best validation macro-F1)
    resume: str = ""                        # "" = fresh run, "auto" = latest in run.output_dir, or a checkpoint dir
    sam_rho: float = 0.0                    # SAM (Foret et al. 2021) radius, any method (runtime/sam.py): two forward-
                                            # backward passes per step; 0 = off; needs grad_accum 1, not DeepSpeed
    resume_changes: list[str] = field(default_factory=list)  # keys allowed to differ from the checkpoint's
                                            # config on resume (a deliberate change, recorded in metrics.json)
    keep_prefix: bool = False               # also keep a resumable checkpoint at the end of the method's shared
                                            # prefix (checkpoints/prefix/: stage 1, ADPM's warm-up; Method.shared_prefix)
    prefix_from: str = ""                   # a run directory whose kept prefix this run starts from instead of
                                            # training those epochs again (same prefix settings; docs/tune.md)


@dataclass
class RunConfig:
    output_dir: str = "runs/default"
    seed: int = 0
    overwrite: bool = False                 # a fresh run (train.resume empty) into an output_dir that holds an
                                            # earlier run deletes that run's outputs first; false: refuse


@dataclass
class Config:
    method: str = "adpm"                    # adpm, or a baseline on the same pipeline (docs/baselines.md)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Coerce a YAML/CLI value to the annotated type, or raise ConfigError naming the key."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, allowed))}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v] if value else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_convert(v, item_tp, key) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
        if not as_float.is_integer():
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(as_float)
    if tp is float:
        if isinstance(value, str) and "/" in value:  # "1/6" reads as the paper writes alpha
            num, _, den = value.partition("/")
            try:
                return float(num) / float(den)
            except (ValueError, ZeroDivisionError):
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return "" if value is None else str(value)
    raise ConfigError(f"{key}: unsupported type {tp}")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _apply(section: Any, values: dict, prefix: str) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or '<root>'}: expected a mapping, got {values!r}")
    types_ = _field_types(type(section))
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in types_:
            known = ", ".join(sorted(types_))
            raise ConfigError(f"unknown config key '{key}' (known here: {known})")
        current = getattr(section, name)
        if dataclasses.is_dataclass(current):
            _apply(current, value, key + ".")
        else:
            setattr(section, name, _convert(value, types_[name], key))


def set_key(cfg: Config, dotted: str, value: Any) -> None:
    """Set one dotted key (``train.lr``) with type conversion; ConfigError names a bad key."""
    *path, leaf = dotted.split(".")
    nested: dict = {leaf: value}
    for part in reversed(path):
        nested = {part: nested}
    _apply(cfg, nested, "")


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        pairs.append((key.strip(), override_value(key.strip(), value)))
    return pairs


def override_value(key: str, text: str) -> Any:
    """An override's value read as YAML (numbers, .inf, null, [a, b], quoted strings), except that what
    YAML would drop as a comment is never dropped: ``runs/victim #2`` is kept verbatim (a string key
    gets it whole, a number key refuses it) instead of silently becoming ``runs/victim``."""
    if not text.strip():
        return ""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{key}: cannot read {text!r} as a value ({problem}); quote it") from None
    end = node.end_mark.index if node is not None else 0
    if text[end:].strip():  # only a comment can follow a complete YAML node on one line
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:  # a tag safe_load does not construct (!!python/object ...)
        raise ConfigError(f"{key}: cannot read {text!r} as a value ({yaml_problem(e)}); quote it") from None


def yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error in one line: its problem and where ('line 2, column 8'), without PyYAML's excerpt."""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    mark = getattr(e, "problem_mark", None)
    return f"{problem}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults < YAML file < ``key=value`` overrides, then validated."""
    cfg = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        with open(path) as f:
            try:
                data = yaml.safe_load(f) or {}
            except yaml.YAMLError as e:  # a tag (!!python/...) or broken YAML: never constructed, never a traceback
                raise ConfigError(f"{path}: not a plain YAML config ({yaml_problem(e)})") from None
        try:
            _apply(cfg, data, "")
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    for key, value in parse_overrides(overrides or []):
        set_key(cfg, key, value)
    validate(cfg)
    return cfg


def from_dict(data: dict) -> Config:
    """Rebuild a Config from ``to_dict`` output (e.g. the copy stored in a checkpoint)."""
    cfg = Config()
    _apply(cfg, data, "")
    validate(cfg)
    return cfg


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"train": {"lr": 1}} -> {"train.lr": 1}: dotted keys, as overrides name them."""
    out = {}
    for k, v in tree.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


# Keys that cannot change a run's numbers: where it writes, how it logs, checkpoints and resumes, and
# where the shards are read from (their content enters the fingerprint as the manifest's checksums).
# data.num_workers is NOT one: each training worker reads whole shards, so the worker count changes
# which samples share a batch (evaluation is exact for any count, training is not).
NON_RESULT_KEYS = ("run.output_dir", "run.overwrite", "train.resume", "train.resume_changes", "train.log_every",
                   "train.log_with",
                   "train.checkpoint_every_steps", "train.checkpoint_every_epochs", "train.keep_checkpoints",
                   "train.keep_last", "train.keep_validated", "train.track_eval", "data.verify", "data.shards",
                   # a run started from another run's identical prefix trains the same numbers (Method.shared_prefix,
                   # checked against the prefix's config before it starts; tests/test_prefix.py shows it)
                   "train.keep_prefix", "train.prefix_from")


def result_settings(config: Config | dict) -> dict:
    """The flattened settings that can change results (everything but NON_RESULT_KEYS)."""
    flat = flatten(to_dict(config) if isinstance(config, Config) else config)
    return {k: v for k, v in flat.items() if k not in NON_RESULT_KEYS}


def config_fingerprint(config: Config | dict, data_id: str = "") -> str:
    """A short hash of ``result_settings`` (and of the data, ``data_id``): equal fingerprints, same run."""
    text = json.dumps(result_settings(config), sort_keys=True, default=str) + "|" + data_id
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def changed_keys(old: Config | dict, new: Config | dict) -> list[str]:
    """The result-changing keys whose values differ between two configs, sorted."""
    defaults = result_settings(Config())  # a key one side predates counts as its default
    a, b = defaults | result_settings(old), defaults | result_settings(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def save_config(cfg: Config, path: str | Path) -> None:
    from .files import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


# Range checks per section, as (key -> predicate) evaluated one at a time, so that a bad value names
# its key even where a later check would divide by it (model.heads=0).
CHECKS: dict[str, dict[str, Callable[[Any], bool]]] = {
    "data": {
        "val_fraction": lambda d: 0.0 <= d.val_fraction < 1.0,
        "val_max_share": lambda d: 0.0 < d.val_max_share < 1.0,
        "val_min_train": lambda d: d.val_min_train >= 1,
        "train_share": lambda d: 0.0 < d.train_share <= 1.0,
        "image_size": lambda d: d.image_size >= 8,
        "rotation": lambda d: 0.0 <= d.rotation <= 180.0,
        "crop_scale": lambda d: len(d.crop_scale) == 2 and 0.0 < d.crop_scale[0] <= d.crop_scale[1] <= 1.0,
        "crop_ratio": lambda d: len(d.crop_ratio) == 2 and 0.0 < d.crop_ratio[0] <= d.crop_ratio[1],
        "color_jitter": lambda d: 0.0 <= d.color_jitter <= 1.0,
        "num_workers": lambda d: d.num_workers >= 0,
        "mean": lambda d: len(d.mean) in (0, 3),
        "std": lambda d: len(d.std) in (0, 3) and all(s > 0 for s in d.std),
    },
    "model": {
        "heads": lambda m: m.heads >= 1,
        "token_dim": lambda m: m.token_dim >= 1 and m.token_dim % m.heads == 0,
        "hidden_dim": lambda m: m.hidden_dim >= 1 and m.hidden_dim % m.token_dim == 0,
        "crop_size": lambda m: m.crop_size >= 1,
        "num_crops": lambda m: m.num_crops >= 1,
        "chain_tau": lambda m: m.chain_tau >= 0,
    },
    "noise": {
        "alpha": lambda n: n.alpha >= 0,
        "beta": lambda n: n.beta >= 0,
        "n_floor": lambda n: n.n_floor >= 0,
    },
    "diffusion": {
        "timesteps": lambda d: d.timesteps >= 2,
        "test_timesteps": lambda d: 1 <= d.test_timesteps <= d.timesteps,
        "respace_start": lambda d: d.respace_start == 0 or d.test_timesteps <= d.respace_start <= d.timesteps,
        "train_t_max": lambda d: 0 <= d.train_t_max <= d.timesteps,
        "beta_end": lambda d: 0 < d.beta_start < d.beta_end < 1,
        "samples": lambda d: d.samples >= 1,
        "mmd_weight": lambda d: d.mmd_weight >= 0,
    },
    "baseline": {
        "focal_gamma": lambda b: b.focal_gamma >= 0,
        "la_tau": lambda b: b.la_tau >= 0,
        "ldam_max_margin": lambda b: b.ldam_max_margin > 0,
        "ldam_scale": lambda b: b.ldam_scale > 0,
        "drw_start_fraction": lambda b: 0.0 <= b.drw_start_fraction <= 1.0,
        "cb_beta": lambda b: 0.0 <= b.cb_beta < 1.0,
        "stage2_epochs": lambda b: b.stage2_epochs >= 1,
        "readout_tau_grid": lambda b: len(b.readout_tau_grid) >= 1 and min(b.readout_tau_grid) >= 0,
        "vs_gamma": lambda b: b.vs_gamma >= 0,
        "gcl_noise_mul": lambda b: b.gcl_noise_mul >= 0,
        "gcl_scale": lambda b: b.gcl_scale > 0,
        "gcl_margin": lambda b: b.gcl_margin >= 0,
        "mislas_mixup_alpha": lambda b: b.mislas_mixup_alpha >= 0,
        "mislas_smooth_head": lambda b: 0.0 <= b.mislas_smooth_head < 1.0,
        "mislas_smooth_tail": lambda b: 0.0 <= b.mislas_smooth_tail < 1.0,
    },
    "train": {
        "epochs": lambda t: t.epochs >= 1,
        "batch_size": lambda t: t.batch_size >= 1,
        "eval_batch_size": lambda t: t.eval_batch_size >= 1,
        "lr": lambda t: t.lr > 0,
        "prior_lr": lambda t: t.prior_lr > 0,
        "warmup_epochs": lambda t: t.warmup_epochs >= 0,
        "log_every": lambda t: t.log_every >= 1,
        "prior_warmup_epochs": lambda t: t.prior_warmup_epochs >= 0,
        "val_every": lambda t: t.val_every >= 1,
        "stop_patience": lambda t: t.stop_patience >= 0,
        "stop_at_epoch": lambda t: t.stop_at_epoch >= 0,
        "stop_min_delta": lambda t: 0 <= t.stop_min_delta < 1,
        "grad_clip": lambda t: t.grad_clip >= 0,
        "grad_accum": lambda t: t.grad_accum >= 1,
        "ema_decay": lambda t: 0.0 <= t.ema_decay < 1.0,
        "eval_ema": lambda t: t.ema_decay > 0 or not t.eval_ema,
        "checkpoint_every_steps": lambda t: t.checkpoint_every_steps >= 0,
        "checkpoint_every_epochs": lambda t: t.checkpoint_every_epochs >= 0,
        "keep_checkpoints": lambda t: t.keep_checkpoints >= 1,
        "sam_rho": lambda t: t.sam_rho >= 0 and (t.sam_rho == 0 or t.grad_accum == 1),
    },
    "run": {
        # numpy's seed (accelerate's set_seed) takes 32 bits; evaluation uses seed + 1, tune trials seed + fold
        "seed": lambda r: 0 <= r.seed < 2**31,
        "output_dir": lambda r: bool(r.output_dir.strip()),  # "" would write (and overwrite) the current directory
    },
}


def non_finite(section: Any, name: str) -> str | None:
    """The first float setting of a section that is NaN or infinite, as 'key: value' (no range check
    of the form ``x >= 0`` rejects inf, and none rejects nan: every comparison with it is false)."""
    for field_name, tp in _field_types(type(section)).items():
        values = getattr(section, field_name)
        if tp is float or (typing.get_origin(tp) is list and typing.get_args(tp) == (float,)):
            for v in values if isinstance(values, list) else [values]:
                if not math.isfinite(v):
                    return f"{name}.{field_name}: invalid value {values!r} (not a finite number)"
    return None


def check_resume_changes_keys(keys: list[str]) -> None:
    """train.resume_changes names config keys (dotted, as overrides do): a typo would silently allow nothing."""
    known = flatten(to_dict(Config()))
    for key in keys:
        if key not in known:
            raise ConfigError(f"train.resume_changes: {key!r} is not a config key (dotted, e.g. train.epochs; "
                              "data.shards allows resuming on other data)")


def check_section(section: Any, name: str) -> None:
    """Option values (Literal types) and the range checks of one section; ConfigError names the key."""
    for field_name, tp in _field_types(type(section)).items():
        if typing.get_origin(tp) is Literal:
            _convert(getattr(section, field_name), tp, f"{name}.{field_name}")
    if problem := non_finite(section, name):
        raise ConfigError(problem)
    for key, ok in CHECKS.get(name, {}).items():
        value = getattr(section, key)
        try:
            passed = ok(section)
        except (ZeroDivisionError, TypeError, ValueError):
            passed = False
        if not passed:
            raise ConfigError(f"{name}.{key}: invalid value {value!r}")


def validate(cfg: Config) -> None:
    """Every section on its own, then what spans sections (and what the chosen method requires)."""
    from .methods import REGISTRY  # the methods import this module: the registry is looked up late

    if cfg.method not in REGISTRY:
        raise ConfigError(f"method: {cfg.method!r} is not one of {', '.join(REGISTRY)}")
    for f in dataclasses.fields(cfg):
        section = getattr(cfg, f.name)
        if dataclasses.is_dataclass(section):
            check_section(section, f.name)
    check_resume_changes_keys(cfg.train.resume_changes)
    if "://" in cfg.data.shards and "@" in cfg.data.shards.split("://", 1)[1].split("/", 1)[0]:
        raise ConfigError("data.shards: a URL with credentials (user:password@) would be saved in config.yaml and "
                          "every checkpoint; give them through the standard AWS variables/config or ~/.netrc")
    if cfg.data.cache == "device" and cfg.data.augment_on == "cpu":
        raise ConfigError("data.cache: 'device' keeps the images on the device, where data.augment_on=cpu cannot "
                          "reach them; use data.augment_on=device (or auto), or data.cache=host")
    if cfg.data.auto_augment != "none" and (cfg.data.augment_on == "device" or cfg.data.cache == "device"):
        raise ConfigError(f"data.auto_augment: {cfg.data.auto_augment!r} runs per image on the CPU; set "
                          "data.augment_on=cpu (and data.cache=none or host): the device path does crops and jitter only")
    if not cfg.model.crop_size <= cfg.data.image_size:
        raise ConfigError(f"model.crop_size: invalid value {cfg.model.crop_size!r} (larger than data.image_size "
                          f"{cfg.data.image_size})")
    from .runtime.tracking import check_trackers  # accelerate's tracker names, looked up late

    if problem := check_trackers(cfg.train.log_with):
        raise ConfigError(f"train.log_with: {problem}")
    from .models.backbone import check_backbone  # timm's registry, looked up late

    for key in ("model.backbone", "model.encoder", "model.local_backbone"):
        section, name = key.split(".")
        if problem := check_backbone(getattr(getattr(cfg, section), name)):
            raise ConfigError(f"{key}: {problem}")
    for key, reason in REGISTRY[cfg.method].check(cfg):
        raise ConfigError(f"{key}: {reason}")
