"""t-SNE of the denoised label vectors along the reverse chain (the paper's Figures 4 and 5).

The chain is re-run here with the scheduler's public step functions so that intermediate states
can be recorded; everything else (prior mean mu, test-time lambda_hat of eq. 18, image features
computed once per image) is what ADPM.sample does, so the recorded output equals ADPM.sample's
y0 for the same generator (tested).
"""
from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from ..data.manifest import load_manifest
from ..data.stream import eval_batches
from ..data.transforms import transform_for
from ..methods import method_class
from ..models import ADPM
from ..diffusion.noise import estimated_noise_level, noise_std
from . import plots


def chain_positions(sampler: str, steps: int, model: ADPM) -> tuple[object, list[int]]:
    """The scheduler the sampler walks and its positions, first to last (docs/algorithm.md, "Sampling")."""
    if sampler == "truncated":
        return model.scheduler, list(range(steps - 1, -1, -1))
    if sampler in ("respaced", "ddim"):
        sched = model.scheduler.respaced(steps)
        return sched, list(range(len(sched) - 1, -1, -1))
    raise ValueError(f"diffusion.sampler: {sampler!r} is not one of truncated, respaced, ddim")


def default_snapshots(steps: int, panels: int = 5) -> list[int]:
    """Evenly spread positions from the start of the chain (steps-1) to its last step (0)."""
    return sorted({int(round(v)) for v in np.linspace(steps - 1, 0, panels)}, reverse=True)


@torch.no_grad()
def trace_reverse_chain(model: ADPM, images: torch.Tensor, *, sampler: str = "truncated", steps: int = 250,
                        test_rule: str = "expected", snapshots: list[int] | None = None,
                        generator: torch.Generator | None = None) -> tuple[list[tuple[int, torch.Tensor]], torch.Tensor]:
    """Run one reverse chain per image and record y at the chosen positions.

    Returns ([(position, y entering the step at that position), ...], y0 output). Position p is the
    state at network time index timestep_ids[p]; the first position is the start mu + lambda z.
    """
    prior_out = model.prior(images)
    # the chain's mean (the adjusted prior for method=adpm_adjusted_chain); eq. 18 reads the raw posterior
    mu = model.chain_mean(prior_out.fused)
    lam = noise_std(estimated_noise_level(torch.softmax(prior_out.fused.float(), dim=1), model.levels, test_rule),
                    model.noise.apply)  # eq. 18
    # once per image, reused at every step (docs/algorithm.md, "Sampling"); model.encode, not the
    # denoiser's own encoder: with model.encoder=prior the features are the prior's map
    feats = model.encode(images, prior_out)
    sched, positions = chain_positions(sampler, steps, model)
    wanted = set(positions[:1] if snapshots is None else snapshots)
    # the start y = mu + lambda z (docs/algorithm.md, "Sampling"), drawn exactly as the scheduler draws it
    y = mu + lam * torch.randn(mu.shape, generator=generator, device="cpu").to(mu.device, mu.dtype)
    recorded = []
    for i in positions:
        if i in wanted:
            recorded.append((i, y.detach().float().cpu()))
        t = sched.timestep_ids[i].expand(mu.shape[0]).to(mu.device)
        eps_hat = model.predicted_noise(feats, y, mu, t, lam)  # y0-form denoisers too
        if sampler == "ddim":  # eta = 0: y0_hat, then the forward marginal at the previous position
            y0_hat = sched.predict_start(y, mu, eps_hat, i, lam)
            y = y0_hat if i == 0 else sched.add_noise(y0_hat, mu, eps_hat, i - 1, lam)
        else:
            y = sched.step(eps_hat, i, y, mu, lam, generator)
    return recorded, y.detach().float().cpu()


def stratified_keys(manifest, part: str, per_class: int, seed: int) -> list[str]:
    """Up to per_class keys of every class of ``part`` (seeded), so tail classes are visible too."""
    by_class: dict[int, list[str]] = defaultdict(list)
    for row in manifest.rows(part):
        by_class[row.label].append(row.key)
    rng = random.Random(seed)
    chosen = []
    for label in sorted(by_class):
        keys = sorted(by_class[label])
        chosen += rng.sample(keys, min(per_class, len(keys)))
    return chosen


def chain_snapshots(loaded, *, part: str | None = None, shards: str | None = None, per_class: int = 50,
                    snapshots: list[int] | None = None, batch_size: int = 128, seed: int = 0) -> dict:
    """Snapshots of the reverse chain on a class-stratified subset of the evaluation part.

    ``loaded`` is an adpm_dist.predict.LoadedModel. Returns {"titles", "vectors" (list of (n, K)),
    "labels" (n,), "keys"}: one vectors array per snapshot plus the final y0.
    """
    cfg = loaded.cfg
    manifest = load_manifest(shards or cfg.data.shards)
    part = part or cfg.data.eval_part
    keys = stratified_keys(manifest, part, per_class, seed)
    sampler, steps = cfg.diffusion.sampler, cfg.diffusion.test_timesteps
    _, positions = chain_positions(sampler, steps, loaded.model)
    snapshots = default_snapshots(len(positions)) if snapshots is None else snapshots
    bad = [p for p in snapshots if p not in positions]
    if bad:
        raise ValueError(f"snapshot positions {bad} are not on the {sampler} chain (positions {len(positions) - 1}..0)")
    transform = transform_for(cfg, train=False)
    batches = eval_batches(manifest, [part], batch_size, transform, include_keys=keys)
    states: dict[int, list] = defaultdict(list)
    outputs, labels, seen = [], [], []
    for b, batch in enumerate(batches):
        gen = torch.Generator().manual_seed(seed * 100_003 + b)
        recorded, y0 = trace_reverse_chain(loaded.model, batch["image"].to(loaded.device), sampler=sampler,
                                           steps=steps, test_rule=cfg.noise.test_rule, snapshots=snapshots,
                                           generator=gen)
        for i, y in recorded:
            states[i].append(y)
        outputs.append(y0)
        labels.append(batch["label"])
        seen += batch["key"]
    sched, _ = chain_positions(sampler, steps, loaded.model)
    titles = [f"t = {int(sched.timestep_ids[i]) + 1}" + (" (start)" if i == positions[0] else "") for i in snapshots]
    vectors = [torch.cat(states[i]).numpy() for i in snapshots]
    return {"titles": titles + ["y0 (output)"], "vectors": vectors + [torch.cat(outputs).numpy()],
            "labels": torch.cat(labels).numpy(), "keys": seen, "part": part}


def embed_2d(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """scikit-learn t-SNE to 2-D (perplexity capped for small subsets)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = len(vectors)
    if n < 5:
        raise ValueError(f"t-SNE needs at least 5 points, got {n}")
    perplexity = float(min(30.0, (n - 1) / 3))
    # One OpenMP thread: a few hundred points take seconds, while sklearn's default (all cores)
    # measured 10-25x slower in wall time on a 2-core machine busy with training.
    with threadpool_limits(1):
        return TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                    random_state=seed).fit_transform(np.asarray(vectors, dtype=np.float64))


def write_tsne(runs: list[str | Path], out: str | Path | None = None, *, per_class: int = 50,
               snapshots: list[int] | None = None, part: str | None = None, shards: str | None = None,
               device: str | None = None, seed: int = 0) -> Path:
    """One row of panels per run (e.g. runs with different alpha, Figure 4), one column per time step
    (Figure 5); points are coloured by their true class. Default output: RUN/tsne.png for one run."""
    from ..predict import load_model  # the same checkpoint loading (and error messages) as prediction

    if not runs:
        raise ValueError("give at least one --run")
    out = Path(out) if out is not None else (Path(runs[0]) / "tsne.png" if len(runs) == 1 else Path("tsne.png"))
    panels, labels, row_titles, class_names = [], [], [], None
    for run in runs:
        loaded = load_model(run, device)
        if not method_class(loaded.cfg.method).has_diffusion:
            raise ValueError(f"{run}: a method={loaded.cfg.method} run has no reverse chain to trace (t-SNE is for ADPM runs)")
        if class_names is not None and loaded.class_names != class_names:
            raise ValueError(f"{run}: classes {loaded.class_names} differ from the first run's {class_names}")
        class_names = loaded.class_names
        snap = chain_snapshots(loaded, part=part, shards=shards, per_class=per_class, snapshots=snapshots, seed=seed)
        row = []
        for title, vecs in zip(snap["titles"], snap["vectors"]):
            acc = float((vecs.argmax(1) == snap["labels"]).mean())
            row.append((f"{title}\nargmax acc {acc:.2f}", embed_2d(vecs, seed)))
        panels.append(row)
        labels.append(snap["labels"])
        n = loaded.cfg.noise
        row_titles.append(f"{Path(run).name}\nalpha {n.alpha:.3g}, beta {n.beta:g}\n{snap['part']}, n={len(snap['keys'])}")
    plots.save(plots.tsne_figure(panels, labels, class_names, row_titles), out)
    return out
