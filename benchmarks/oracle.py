"""What anisotropy does to a decision when the denoiser is perfect (issue 8, docs/model.md).

    python -m benchmarks.oracle [--ir 50] [--alphas 0 1/6 1/4 1/2 1] [--beta 5] [--formula A]
        [--samplers truncated-250 respaced-250 ddim-10] [--chains 1000] [--seed 0] [--results FILE]
        [--plot docs/img/oracle_tail_share.png]

One image whose label is the head class with probability 1 - a and the tail class with
probability a (digits-LT's training counts at --ir: head 150, tail 150 / IR), the prior mean mu
equal to that posterior (a calibrated prior). ADPM's sampler runs on the Bayes-optimal y0
denoiser of eq. 5 (adpm_dist/diffusion/oracle.py) for --chains chains at every a of a grid, and the table
gives how often the sampled label is the tail class, and a*: the smallest a at which the tail
wins the majority (what a vote over many samples predicts). With isotropic noise and an exact
sampler a* = 0.5 (the sampler draws from the posterior); the balanced (logit-adjusted) Bayes
decision is a* = n_tail / (n_tail + n_head). No training, no data: the mechanism alone.

A second table does the same for every class j against the head class (first sampler, --pair-chains
chains), and gives the logit-adjustment strength tau that each a*_j implies: logit adjustment with
tau prefers class j over the head class from logit(a) = tau log(n_head / n_j) on, so
tau_j = logit(a*_j) / log(n_j / n_head); tau = 0 is the plain posterior, tau = 1 the balanced decision.
"""
from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

from benchmarks.tables import replace_section  # noqa: E402
from adpm_dist.data.digits_lt import long_tail_counts  # noqa: E402
from adpm_dist.diffusion.scheduler import SAMPLERS, ADPMScheduler  # noqa: E402
from adpm_dist.diffusion.noise import FORMULAS, class_noise_levels  # noqa: E402
from adpm_dist.diffusion.oracle import oracle_sample  # noqa: E402

MARKERS = ("<!-- oracle:begin -->", "<!-- oracle:end -->")
HEADING = "## What anisotropy does with a perfect denoiser (benchmarks/oracle.py)"
SHOWN = (0.1, 0.2, 0.3, 0.5)  # the a columns of the table


def sampler_spec(text: str) -> tuple[str, int]:
    name, _, steps = text.partition("-")
    if name not in SAMPLERS or not steps.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected SAMPLER-STEPS with SAMPLER in {', '.join(SAMPLERS)}")
    return name, int(steps)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ir", type=float, default=50.0, help="digits-LT imbalance ratio of the class counts")
    p.add_argument("--alphas", nargs="+", default=["0", "1/6", "1/4", "1/2", "1"], help="eq. 14 alpha values")
    p.add_argument("--beta", type=float, default=5.0)
    p.add_argument("--formula", default="A", choices=FORMULAS)
    p.add_argument("--samplers", nargs="+", type=sampler_spec, default=["truncated-250", "respaced-250", "ddim-10"],
                   help="SAMPLER-STEPS (the config's diffusion.sampler and diffusion.test_timesteps)")
    p.add_argument("--chains", type=int, default=1000, help="chains per value of a")
    p.add_argument("--grid", type=int, default=49, help="values of a in (0, 1)")
    p.add_argument("--pair-chains", type=int, default=500, help="chains per a for the every-class table (0: skip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", default="benchmarks/RESULTS.md", help="markdown file that gets the table ('' = none)")
    p.add_argument("--plot", default="docs/img/oracle_tail_share.png", help="share(a) curves, one panel per sampler "
                   "('' = none)")
    args = p.parse_args(argv)
    args.samplers = [s if isinstance(s, tuple) else sampler_spec(s) for s in args.samplers]
    try:
        args.alpha_values = [float(Fraction(a)) for a in args.alphas]
    except ValueError as e:
        p.error(f"--alphas: {e}")
    if args.chains < 1 or args.grid < 2:
        p.error("--chains must be >= 1 and --grid >= 2")
    return args


def tail_share(scheduler: ADPMScheduler, stds: torch.Tensor, head: int, tail: int, a: np.ndarray, chains: int,
               sampler: str, steps: int, seed: int) -> np.ndarray:
    """For each a: the share of ``chains`` samples whose argmax y0 is the tail class."""
    k = len(stds)
    post = torch.zeros(len(a), k, dtype=torch.float64)
    post[:, head], post[:, tail] = torch.as_tensor(1 - a), torch.as_tensor(a)
    post = post.repeat_interleave(chains, dim=0)
    gen = torch.Generator().manual_seed(seed)
    y0 = oracle_sample(scheduler, post, post.clone(), stds.double(), sampler=sampler, steps=steps, generator=gen)
    return (y0.argmax(1) == tail).double().view(len(a), chains).mean(1).numpy()


def crossing(a: np.ndarray, share: np.ndarray) -> float:
    """The smallest a where ``share`` reaches 0.5 (linear interpolation; 0 or 1 at the ends)."""
    above = np.flatnonzero(share >= 0.5)
    if not len(above):
        return 1.0
    i = above[0]
    if i == 0:
        return 0.0
    a0, a1, s0, s1 = a[i - 1], a[i], share[i - 1], share[i]
    return float(a0 + (0.5 - s0) * (a1 - a0) / (s1 - s0))


def class_thresholds(args, counts: list[int], scheduler: ADPMScheduler) -> list[dict]:
    """a*_j of every class j against the head class (class 0) with the first sampler, and its implied tau."""
    sampler, steps = args.samplers[0]
    a = 1 / (1 + np.exp(-np.linspace(-6, 6, args.grid)))  # logit-spaced: the balanced a* can be ~0.01
    rows = []
    for label, alpha in zip(args.alphas, args.alpha_values):
        stds = class_noise_levels(counts, alpha=alpha, beta=args.beta, formula=args.formula)
        stars = [min(max(crossing(a, tail_share(scheduler, stds, 0, j, a, args.pair_chains, sampler, steps,
                                                args.seed)), a[0]), a[-1]) for j in range(1, len(counts))]
        taus = [np.log(s / (1 - s)) / np.log(counts[j] / counts[0]) for j, s in enumerate(stars, start=1)]
        rows.append({"alpha": label, "sampler": f"{sampler}-{steps}", "a_star": stars, "tau": taus})
        print(f"every class vs head, alpha {label}: tau " + " ".join(f"{t:.2f}" for t in taus), flush=True)
    return rows


def measure(args, scheduler: ADPMScheduler) -> tuple[list[dict], list[int]]:
    counts = long_tail_counts(10, 150, args.ir)
    head, tail = 0, len(counts) - 1
    grid = np.linspace(0, 1, args.grid + 2)[1:-1]
    a = np.unique(np.concatenate([grid, SHOWN]))
    rows = []
    for label, alpha in zip(args.alphas, args.alpha_values):
        stds = class_noise_levels(counts, alpha=alpha, beta=args.beta, formula=args.formula)
        for sampler, steps in args.samplers:
            start = time.perf_counter()
            share = tail_share(scheduler, stds, head, tail, a, args.chains, sampler, steps, args.seed)
            rows.append({"alpha": label, "lambda_tail": float(stds[tail]), "sampler": f"{sampler}-{steps}",
                         "shown": [float(share[np.isclose(a, x)][0]) for x in SHOWN], "a_star": crossing(a, share),
                         "a": a, "share": share, "seconds": time.perf_counter() - start})
            print(f"alpha {label} ({sampler}-{steps}): a* = {rows[-1]['a_star']:.3f} "
                  f"[{rows[-1]['seconds']:.1f} s]", flush=True)
    return rows, counts


def class_markdown(rows: list[dict], counts: list[int]) -> list[str]:
    if not rows:
        return []
    k = len(counts)
    lines = ["", f"Every class against the head class ({rows[0]['sampler']}): a*_j, and in brackets the "
             "logit-adjustment tau it implies (0: the posterior itself; 1: the balanced decision).", "",
             "| alpha | " + " | ".join(f"n = {n}" for n in counts[1:]) + " |", "|---|" + "---|" * (k - 1),
             "| logit adjustment, tau = 1 | " + " | ".join(f"{n / (n + counts[0]):.3f} (1.00)" for n in counts[1:]) + " |"]
    for r in rows:
        lines.append(f"| {r['alpha']} | " + " | ".join(f"{s:.3f} ({t:.2f})" for s, t in zip(r["a_star"], r["tau"])) + " |")
    return lines


def markdown(args, argv: list[str], rows: list[dict], counts: list[int], pair_rows: list[dict]) -> str:
    head, tail = counts[0], counts[-1]
    lines = [f"{dt.datetime.now():%Y-%m-%d %H:%M}. Command:", "", "    python -m benchmarks.oracle " + shlex.join(argv), "",
             f"Head class n = {head}, tail class n = {tail} (digits-LT profile, IR {args.ir:g}), beta = {args.beta:g}, "
             f"formula {args.formula}; {args.chains} chains per value of a, seed {args.seed}. *share(a)*: how often the "
             "sampled label is the tail class when its posterior probability is a; *a\\**: where the tail starts to win "
             f"the majority. Balanced (logit-adjusted) Bayes decision: a* = {tail / (head + tail):.3f}.", "",
             "| alpha | tail lambda | sampler | " + " | ".join(f"share({x:g})" for x in SHOWN) + " | a* |",
             "|---|---|---|" + "---|" * (len(SHOWN) + 1)]
    for r in rows:
        lines.append(f"| {r['alpha']} | {r['lambda_tail']:.2f} | {r['sampler']} | "
                     + " | ".join(f"{v:.3f}" for v in r["shown"]) + f" | {r['a_star']:.3f} |")
    return "\n".join(lines + class_markdown(pair_rows, counts))


def plot(rows: list[dict], counts: list[int], path: Path) -> None:
    """share(a) against a: one panel per sampler, one curve per alpha, the balanced decision marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samplers = list(dict.fromkeys(r["sampler"] for r in rows))
    fig, axes = plt.subplots(1, len(samplers), figsize=(4.2 * len(samplers), 3.8), sharey=True, squeeze=False)
    balanced = counts[-1] / (counts[0] + counts[-1])
    for ax, sampler in zip(axes[0], samplers):
        for r in (r for r in rows if r["sampler"] == sampler):
            ax.plot(r["a"], r["share"], label=f"alpha {r['alpha']} (tail lambda {r['lambda_tail']:.2f})")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="share = a (samples the posterior)")
        ax.axvline(balanced, color="black", lw=0.8, ls="--", label=f"balanced decision a* = {balanced:.3f}")
        ax.axhline(0.5, color="grey", lw=0.5)
        ax.set(title=sampler, xlabel="posterior probability a of the tail class", xlim=(0, 1), ylim=(0, 1))
    axes[0][0].set_ylabel("share of samples labelled tail")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"ADPM's sampler on the Bayes-optimal denoiser: head n = {counts[0]} vs tail n = {counts[-1]}",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    scheduler = ADPMScheduler.linear(1000)
    rows, counts = measure(args, scheduler)
    pair_rows = class_thresholds(args, counts, scheduler) if args.pair_chains else []
    block = markdown(args, argv, rows, counts, pair_rows)
    print(block)
    if args.results:
        path = Path(args.results)
        text = path.read_text() if path.is_file() else "# Benchmark results\n"
        path.write_text(replace_section(text, block, HEADING, MARKERS))
        print(f"wrote {path}")
    if args.plot:
        plot(rows, counts, Path(args.plot))
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
