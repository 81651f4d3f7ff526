"""The study's answer, written from its trials: study.md, leaderboard.csv, leaderboard.png, recipe.yaml,
cv_results.csv and protocol.json (docs/tune.md, "Studies").

    consolidate_study(out)
      results.read_estimates -> every trial's status, metrics.json, cost.json; per candidate: selected
                               points, (fold, seed) scores, pooled OOF macro-F1
      compare.decide        -> per candidate the target-prior estimate, its interval, the paired difference
                               to the leader and the verdict (equal / undecided / clearly worse)
      compare.recommend     -> the rule; answer.Answer -> the warnings
      curve.curves          -> with --learning-curve's half runs: each recipe's expected score (curve.json)
      then the files below (recipe.py: recipe.yaml; plot.py: leaderboard.png), each written atomically
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ...files import atomic_write_json, atomic_write_text
from ..cells import partial_banner, write_csv
from ..experiment import load_search
from ..protocol import NESTED, checkpoint_selection_parts, entry, mean_entry, write_protocol
from . import compare, target
from .answer import Answer
from .curve import curve_markdown, curves, recipe_expectation
from .plot import write_plot
from .race import load_raced
from .recipe import write_recipe
from .results import Estimate, load_target, read_estimates, train_counts_of  # noqa: F401  (load_target: the CLI's)

FIGURE = {NESTED: "nested CV, pooled outer folds x seeds",
          "held_out_test": "pooled CV folds x seeds"}


def consolidate_study(out: str | Path, *, target_prior: str = "balanced",
                      equivalence: float = compare.EQUIVALENCE) -> dict:
    """Every file of the study's answer; ``target_prior``: balanced, train or a YAML file class -> weight;
    ``equivalence``: the margin within which a candidate counts as equal to the leader."""
    out = Path(out).resolve()
    search = load_search(out)
    results, names, estimates = read_estimates(out, search)
    prior = target.target_prior(load_target(target_prior), names, train_counts_of(results))
    lead, decisions = compare.decide(estimates, prior, eps=equivalence)
    ref = next((e for e in estimates if e.name == search.get("reference")), None)
    to_ref = {e.name: compare.difference(e, ref) for e in estimates} if ref else {}
    rec = compare.recommend(estimates, decisions)
    raced = load_raced(out)
    for name in raced:  # dropped by --race: not missing, decided
        decisions[name].verdict = f"raced out (wave {raced[name]['wave']})"
    answer = Answer(search, estimates, decisions, lead, rec, prior, target_prior, equivalence, names, raced,
                    curves(out, search, estimates, names, prior))
    partial = [f"{e.name}: {len(e.components)}/{e.expected} (fold, seed) evaluated" for e in estimates
               if not e.complete and e.name not in raced]
    partial += [f"{len(search.get('skipped', []))} trial(s) skipped by --max-trials"] if search.get("skipped") else []
    rows = leaderboard_rows(answer, to_ref)
    write_csv(out / "leaderboard.csv", rows)
    write_csv(out / "cv_results.csv", [trial_row(r) for r in results.values()])
    text = partial_banner(partial) + study_markdown(answer, rows, results)
    atomic_write_text(out / "study.md", text)
    write_plot(out / "leaderboard.png", answer, rows)
    write_protocol(out, protocol_entries(search, estimates))
    written = [out / n for n in ("study.md", "leaderboard.csv", "leaderboard.png", "cv_results.csv", "protocol.json")]
    if rec is not None and rec.selections[None].point is not None:
        write_recipe(out / "recipe.yaml", search, rec, out, FIGURE[search["protocol"]],
                     decisions[rec.name].interval_text(), prior)
        written.append(out / "recipe.yaml")
    else:
        (out / "recipe.yaml").unlink(missing_ok=True)  # never leave a stale recommendation
    if answer.curves:
        atomic_write_json(out / "curve.json", [dataclasses.asdict(c) for c in answer.curves])
        written.append(out / "curve.json")
    return {"estimates": estimates, "leader": lead, "recommendation": rec, "decisions": decisions, "rows": rows,
            "curves": answer.curves,
            "partial": partial, "warnings": answer.warnings(), "written": written,
            "missing": [r for r in results.values() if r.status != "done"]}


def leaderboard_rows(a: "Answer", to_ref: dict) -> list[dict]:
    rows = []
    for rank, e in enumerate(a.ranked(), 1):
        m, s = e.mean_std("macro_f1")
        d = a.decisions[e.name]
        g = e.groups_f1()
        chosen = {k: sel.point for k, sel in e.selections.items() if k is not None} or {"all": e.selections[None].point}
        rows.append({"rank": rank, "candidate": e.name, "evaluated": f"{len(e.components)}/{e.expected}",
                     "estimate": d.estimate, "estimate_low": d.low, "estimate_high": d.high,
                     "balanced_accuracy": d.balanced_accuracy, "vs_leader": d.diff_text(), "verdict": d.verdict,
                     "fold_macro_f1_mean": m, "fold_macro_f1_std": s,
                     "head_f1": g["head"], "medium_f1": g["medium"], "tail_f1": g["tail"],
                     "vs_reference": to_ref[e.name].text() if to_ref else "-",
                     "selected": "; ".join(f"{k}: {p}" for k, p in chosen.items()),
                     "optimistic": "yes" if a.chose_a_point(e) else "",
                     "cpu_hours": e.cost["cpu_hours"], "gpu_hours": e.cost["gpu_hours"], "trials": e.cost["trials"],
                     "cost_per_trial_h": compare.cost_per_trial(e), "recommended": "yes" if e is a.rec else ""})
    return rows


def trial_row(r) -> dict:
    t = r.trial
    row = {"trial": t.id, "candidate": t.candidate, "point": t.point, "seed": t.seed, "fold": t.fold,
           "outer": "" if t.outer is None else t.outer, "status": r.status, "wall_s": r.cost.get("wall_s", "")}
    if r.metrics:
        row |= {k: r.metrics[k] for k in ("macro_f1", "balanced_accuracy", "accuracy")}
        row |= {"best_epoch": r.metrics.get("best_epoch"), "val_macro_f1": r.metrics.get("val_macro_f1")}
    return row


def study_markdown(a: "Answer", rows: list[dict], results: dict) -> str:
    search = a.search
    k, seeds = search["folds"], search["seeds"]
    lines = [f"# Study on {search['dataset']}: {len(a.estimates)} candidates, {k} folds x {len(seeds)} seed(s)", "",
             compare.sentence(a.rec, a.lead, a.decisions, a.estimates, FIGURE[search["protocol"]], a.eps), ""]
    lines += recipe_expectation(a.rec, a.curves)
    lines += [f"> **Warning:** {w}" for w in a.warnings()] + ([""] if a.warnings() else [])
    lines += [f"- config: `{search['config']}`" + (f" with `{' '.join(search['overrides'])}`" if search["overrides"] else ""),
              f"- shards: `{search['shards']}` (parts: {', '.join(search['parts'])})",
              f"- trials: {len(search['trials'])} planned; reference: {search.get('reference')}",
              f"- target class prior: {a.target_text()}; chance level (a random guess, balanced): {a.chance:.3f}",
              f"- the rule: {compare.rule_text(a.eps)}", "", "## Protocol", "", PROTOCOL[search["protocol"]].format(k=k),
              "", "## Leaderboard", "",
              "| # | candidate | evaluated | macro-F1, target prior [95%] | balanced acc. | vs leader [95%] | verdict | "
              f"fold macro-F1 | head F1 | medium F1 | tail F1 | vs {search.get('reference')} (folds) | CPU-h | GPU-h |",
              "|" + "---|" * 14]
    for r in rows:
        name = f"**{r['candidate']}**" if r["recommended"] else r["candidate"]
        opt = " (optimistic)" if r["optimistic"] else ""
        est = "-" if r["estimate"] != r["estimate"] else \
            f"{r['estimate']:.3f} [{r['estimate_low']:.3f}, {r['estimate_high']:.3f}]{opt}"
        lines.append(f"| {r['rank']} | {name} | {r['evaluated']} | {est} | {r['balanced_accuracy']:.3f} | "
                     f"{r['vs_leader']} | {r['verdict']} | {r['fold_macro_f1_mean']:.3f} ± {r['fold_macro_f1_std']:.3f} | "
                     f"{r['head_f1']:.3f} | {r['medium_f1']:.3f} | {r['tail_f1']:.3f} | {r['vs_reference']} | "
                     f"{r['cpu_hours']:.3f} | {r['gpu_hours']:.3f} |")
    lines += ["", ESTIMATE_NOTE.format(eps=a.eps), ""] + curve_markdown(a.curves)
    if a.raced:
        lines += ["## Raced out (--race)", "", "Dropped once clearly worse than the leader on the folds done; their "
                  "remaining trials never ran, and the study is complete for the candidates it kept.", ""]
        lines += [f"- {name}: after {r['folds']} fold(s){seed_text(r)}, {r['difference']:+.3f} [{r['interval'][0]:+.3f}, "
                  f"{r['interval'][1]:+.3f}]{level_text(r)} to the then leader {r['leader']}, below -{r['equivalence']:g}"
                  for name, r in a.raced.items()] + [""]
    lines += ["## Selected hyper-parameters", ""]
    lines += [f"- {e.name}: " + "; ".join(
        f"{'every fold' if o is None else f'outer fold {o}'}: {s.point or 'none'}"
        + ("" if s.complete else " (incomplete selection)") for o, s in e.selections.items()) for e in a.estimates]
    lines += ["", "## Classes an estimate could not see", ""]
    lines += unseen_lines(a.estimates)
    missing = [r for r in results.values() if r.status != "done" and r.trial.candidate not in a.raced]
    if missing:
        lines += ["", "## Trials without an evaluation", "", "| trial | status |", "|---|---|"]
        lines += [f"| {r.trial.id} | {r.status} |" for r in missing]
    return "\n".join(lines) + "\n"


ESTIMATE_NOTE = (
    "macro-F1, target prior: the pooled out-of-fold predictions' confusion matrix with each true-class row "
    "rescaled to the target class mix (what a test set of that mix would measure), each class given half an "
    "image right and half wrong (Jeffreys' prior: 2 of 2 right is not a certain recall of 1); 95% interval of a "
    "paired bootstrap that draws one seed's run per fold and reweights the images within each class. It is of a "
    "model trained like each CV run; the recipe, trained on every image, may score above it. vs leader: the "
    "paired difference and its interval; verdict: equal (the interval lies above -{eps:g}), clearly worse (it "
    "lies below -{eps:g}) or undecided. (optimistic): a point of the candidate's space was chosen on these same "
    "folds. fold macro-F1: mean ± std of the per-(fold, seed) scores on the long-tailed folds, for reference. "
    "head / medium / tail: thirds of the classes by training count.")


def seed_text(raced: dict) -> str:
    """Which seed a look read, for a race of several seeds (single-seed races and older ones record none)."""
    seeds = raced.get("seeds")
    return f" of seed {seeds[0]} (the first seed's folds; the other seeds had not run)" if seeds else ""


def level_text(raced: dict) -> str:
    """The interim look's interval level (races before the repeated-looks correction recorded none)."""
    return f" ({raced['level']:.1%} interval)" if "level" in raced else ""


def unseen_lines(estimates: list[Estimate]) -> list[str]:
    lines = []
    for e in estimates:
        folds = {k: v for k, v in e.unseen_by_fold().items() if v}
        sel = {o: s.unseen for o, s in e.selections.items() if s.unseen}
        if folds or sel:
            lines.append(f"- {e.name}: " + "; ".join([f"evaluation fold {k} holds no image of {v}" for k, v in folds.items()]
                                                   + [f"selection ({'all folds' if o is None else f'outer {o}'}) pooled "
                                                      f"over its folds saw no image of {v}" for o, s in sel.items()]))
    return lines or ["Every estimate's evaluation folds, and every pooled selection, held every class."]


PROTOCOL = {
    NESTED: ("The shards have no `test` part: **nested CV**. Per outer fold k, each candidate's point is chosen on "
             "inner trials that never read fold k (pooled out-of-fold macro-F1 over the other {k}-1 folds), then "
             "its CV trial trained without fold k is scored once on fold k. A candidate with one point has nothing "
             "to choose and no inner trials. Checkpoints are selected on validation data inside every trial "
             "(`train.select`), never on the evaluation fold. The leaderboard's macro-F1 is the estimate to publish."),
    "held_out_test": ("The shards have a `test` part, which no trial reads. Each candidate's point is chosen by "
                      "pooled out-of-fold macro-F1 over the {k} CV folds, so its CV figure is optimistic when the "
                      "candidate has more than one point; `recipe.yaml` trains the recommendation on every "
                      "labelled part and scores it once on `test`: that run is the figure to publish."),
}


def protocol_entries(search: dict, estimates: list[Estimate]) -> list[dict]:
    parts, val_part, folds = search["parts"], search["base_config"]["data"]["val_part"], search["folds"]
    entries = []
    for e in estimates:
        comps = []
        for (k, s) in sorted(e.components):
            train = [f"fold{j}" for j in range(folds) if j != k]
            outer = k if search["protocol"] == NESTED else None
            chose = [f"fold{j}" for j in e.selections[outer].folds] if len(e.selections[outer].scores) > 1 else []
            selected = chose + checkpoint_selection_parts(train, parts, val_part, f"fold{k}")
            comps.append(entry(f"study.md {e.name}: fold{k} seed {s}", selected, [f"fold{k}"], train,
                               e.components[(k, s)]["macro_f1"]))
        entries += comps
        if comps:
            entries.append(mean_entry(f"study.md leaderboard: {e.name} macro-F1 mean over {len(comps)} (fold, seed)",
                                      comps, e.mean_std("macro_f1")[0]))
    return entries


def reported_runs(out: Path, search: dict) -> tuple[list[Path], str]:
    """A study reports its recommendation: the (fold, seed) runs of its estimate."""
    from ..experiment import trial_dir
    from .plan import StudyTrial

    _, names, estimates = read_estimates(out, search)
    _, decisions = compare.decide(estimates, target.target_prior("balanced", names), n_boot=200)
    rec = compare.recommend(estimates, decisions)
    if rec is None:
        return [], "no candidate evaluated"
    point = {k: s.point for k, s in rec.selections.items()}
    runs = [trial_dir(out, StudyTrial(rec.name, point.get(k, point[None]), s, k)) for k, s in sorted(rec.components)]
    return runs, f"the study's recommendation {rec.name}, its estimate's (fold, seed) runs"
