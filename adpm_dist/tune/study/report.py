"""The study's answer, written from its trials: study.md, leaderboard.csv, leaderboard.png, recipe.yaml,
cv_results.csv and protocol.json (docs/tune.md, "Studies").

    consolidate_study(out)
      results.read_results  -> every trial's status, metrics.json, cost.json
      results.estimate      -> per candidate: selected points, (fold, seed) scores, pooled OOF macro-F1
      compare.*             -> differences to the reference (CE) and the leader, the recommendation
      then the files below, each written atomically
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from ...config import from_dict, set_key, to_dict
from ...files import atomic_write_text
from ..cells import partial_banner, write_csv
from ..experiment import load_search
from ..protocol import NESTED, checkpoint_selection_parts, entry, mean_entry, write_protocol
from . import compare
from .results import Estimate, class_names_of, estimate, read_results

FIGURE = {NESTED: "nested CV over outer folds x seeds", "held_out_test": "CV over folds x seeds; selection optimistic"}


def consolidate_study(out: str | Path) -> dict:
    out = Path(out).resolve()
    search = load_search(out)
    results = read_results(out, search)
    names = class_names_of(results)
    estimates = [estimate(out, results, search, c, names) for c in search["candidates"]]
    by_name = {e.name: e for e in estimates}
    lead = compare.leader(estimates)
    ref = by_name.get(search.get("reference"))
    to_ref = {e.name: compare.difference(e, ref) for e in estimates} if ref else {}
    to_lead = {e.name: compare.difference(e, lead) for e in estimates} if lead else {}
    rec = compare.recommend(estimates, lead, to_lead)
    partial = [f"{e.name}: {len(e.components)}/{e.expected} (fold, seed) evaluated" for e in estimates if not e.complete]
    partial += [f"{len(search.get('skipped', []))} trial(s) skipped by --max-trials"] if search.get("skipped") else []
    rows = leaderboard_rows(estimates, to_ref, to_lead, rec, search)
    write_csv(out / "leaderboard.csv", rows)
    write_csv(out / "cv_results.csv", [trial_row(r) for r in results.values()])
    text = partial_banner(partial) + study_markdown(search, estimates, rows, rec, lead, results, names)
    atomic_write_text(out / "study.md", text)
    write_plot(out / "leaderboard.png", estimates, rec, search)
    write_protocol(out, protocol_entries(search, estimates))
    written = [out / n for n in ("study.md", "leaderboard.csv", "leaderboard.png", "cv_results.csv", "protocol.json")]
    if rec is not None and rec.selections[None].point is not None:
        write_recipe(out / "recipe.yaml", search, rec, out)
        written.append(out / "recipe.yaml")
    else:
        (out / "recipe.yaml").unlink(missing_ok=True)  # never leave a stale recommendation
    return {"estimates": estimates, "leader": lead, "recommendation": rec, "rows": rows, "partial": partial,
            "written": written, "missing": [r for r in results.values() if r.status != "done"]}


def leaderboard_rows(estimates: list[Estimate], to_ref: dict, to_lead: dict, rec, search: dict) -> list[dict]:
    rows = []
    order = sorted(estimates, key=lambda e: -(e.mean_std("macro_f1")[0] if e.components else -1))
    for rank, e in enumerate(order, 1):
        m, s = e.mean_std("macro_f1")
        g = e.groups_f1()
        chosen = {k: sel.point for k, sel in e.selections.items() if k is not None} or {"all": e.selections[None].point}
        rows.append({"rank": rank, "candidate": e.name, "evaluated": f"{len(e.components)}/{e.expected}",
                     "macro_f1_mean": m, "macro_f1_std": s, "pooled_oof_macro_f1": e.pooled_macro_f1,
                     "balanced_accuracy_mean": e.mean_std("balanced_accuracy")[0],
                     "head_f1": g["head"], "medium_f1": g["medium"], "tail_f1": g["tail"],
                     "vs_reference": to_ref[e.name].text() if to_ref else "-",
                     "vs_leader": to_lead[e.name].text() if to_lead else "-",
                     "selected": "; ".join(f"{k}: {p}" for k, p in chosen.items()),
                     "cpu_hours": e.cost["cpu_hours"], "gpu_hours": e.cost["gpu_hours"], "trials": e.cost["trials"],
                     "recommended": "yes" if e is rec else ""})
    return rows


def trial_row(r) -> dict:
    t = r.trial
    row = {"trial": t.id, "candidate": t.candidate, "point": t.point, "seed": t.seed, "fold": t.fold,
           "outer": "" if t.outer is None else t.outer, "status": r.status, "wall_s": r.cost.get("wall_s", "")}
    if r.metrics:
        row |= {k: r.metrics[k] for k in ("macro_f1", "balanced_accuracy", "accuracy")}
        row |= {"best_epoch": r.metrics.get("best_epoch"), "val_macro_f1": r.metrics.get("val_macro_f1")}
    return row


def study_markdown(search, estimates, rows, rec, lead, results, names) -> str:
    nested = search["protocol"] == NESTED
    k, seeds = search["folds"], search["seeds"]
    lines = [f"# Study on {search['dataset']}: {len(estimates)} candidates, {k} folds x {len(seeds)} seed(s)", "",
             compare.sentence(rec, lead, FIGURE[search["protocol"]]), "",
             f"- config: `{search['config']}`" + (f" with `{' '.join(search['overrides'])}`" if search["overrides"] else ""),
             f"- shards: `{search['shards']}` (parts: {', '.join(search['parts'])})",
             f"- trials: {len(search['trials'])} planned; reference: {search.get('reference')}", "", "## Protocol", "",
             PROTOCOL[search["protocol"]].format(k=k), "", "## Leaderboard", "",
             "| # | candidate | evaluated | macro-F1 | pooled OOF macro-F1 | balanced acc. | head F1 | medium F1 | "
             f"tail F1 | vs {search.get('reference')} | vs leader | CPU-h | GPU-h |", "|" + "---|" * 13]
    for r in rows:
        lines.append(f"| {r['rank']} | {'**' + r['candidate'] + '**' if r['recommended'] else r['candidate']} | "
                     f"{r['evaluated']} | {r['macro_f1_mean']:.3f} ± {r['macro_f1_std']:.3f} | "
                     f"{r['pooled_oof_macro_f1']:.3f} | {r['balanced_accuracy_mean']:.3f} | {r['head_f1']:.3f} | "
                     f"{r['medium_f1']:.3f} | {r['tail_f1']:.3f} | {r['vs_reference']} | {r['vs_leader']} | "
                     f"{r['cpu_hours']:.3f} | {r['gpu_hours']:.3f} |")
    lines += ["", "macro-F1: mean ± sample std over (fold, seed); differences: mean paired per-(fold, seed) difference "
              "[95% bootstrap interval over the pairs]; head / medium / tail: thirds of the classes by training count.",
              "", "## Selected hyper-parameters", ""]
    lines += [f"- {e.name}: " + "; ".join(
        f"{'every fold' if o is None else f'outer fold {o}'}: {s.point or 'none'}"
        + ("" if s.complete else " (incomplete selection)") for o, s in e.selections.items()) for e in estimates]
    lines += ["", "## Classes an estimate could not see", ""]
    lines += unseen_lines(estimates)
    missing = [r for r in results.values() if r.status != "done"]
    if missing:
        lines += ["", "## Trials without an evaluation", "", "| trial | status |", "|---|---|"]
        lines += [f"| {r.trial.id} | {r.status} |" for r in missing]
    return "\n".join(lines) + "\n"


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


def write_recipe(path: Path, search: dict, rec: Estimate, out: Path) -> dict:
    """The recommendation, ready for launch/train.py: refit on every labelled part, scored on `test`."""
    cand = next(c for c in search["candidates"] if c["name"] == rec.name)
    point = next(p for p in cand["points"] if p["label"] == rec.selections[None].point)
    c = from_dict(json.loads(json.dumps(search["base_config"])))
    for key, value in ({"method": cand["method"]} | cand["fixed"] | point["settings"]).items():
        set_key(c, key, value)
    has_test = "test" in search["parts"]
    set_key(c, "data.train_parts", [])
    set_key(c, "data.eval_part", "test" if has_test else "fold0")
    set_key(c, "train.select", "refit")  # the kept epoch count, then one pass over training + validation data
    set_key(c, "run.output_dir", str(out / "recipe_run"))
    m, s = rec.mean_std("macro_f1")
    header = [f"# Recommended by the study in {out}: {rec.name} ({point['label']}), macro-F1 {m:.3f} ± {s:.3f} "
              f"({FIGURE[search['protocol']]})", f"#   accelerate launch launch/train.py --config {path}"]
    if not has_test:
        header.append("# The shards have no `test` part: fold0 helped choose this, so this run's score on it is NOT "
                      "an estimate; publish the study's nested estimate (study.md).")
    data = to_dict(c)
    atomic_write_text(path, "\n".join(header) + "\n" + yaml.safe_dump(data, sort_keys=False))
    return data


def write_plot(path: Path, estimates: list[Estimate], rec, search: dict) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global backend

    shown = [e for e in estimates if e.components]
    fig = Figure(figsize=(6, 1 + 0.4 * max(1, len(shown))), dpi=120)
    ax = fig.add_subplot()
    for i, e in enumerate(shown):
        m, s = e.mean_std("macro_f1")
        ax.barh(i, m, xerr=0 if s != s else s, color="tab:red" if e is rec else "tab:blue")
    ax.set_yticks(range(len(shown)), [e.name for e in shown])
    ax.set_xlabel(f"macro-F1, mean ± std ({FIGURE[search['protocol']]})")
    ax.set_title(f"study on {search['dataset']}; red: recommended", fontsize=8)
    fig.tight_layout()
    atomic_write_bytes_fig(fig, path)


def atomic_write_bytes_fig(fig, path: Path) -> None:
    import io

    from ...files import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def reported_runs(out: Path, search: dict) -> tuple[list[Path], str]:
    """A study reports its recommendation: the (fold, seed) runs of its estimate."""
    from ..experiment import trial_dir
    from .plan import StudyTrial

    results = read_results(out, search)
    names = class_names_of(results)
    estimates = [estimate(out, results, search, c, names) for c in search["candidates"]]
    lead = compare.leader(estimates)
    rec = compare.recommend(estimates, lead, {e.name: compare.difference(e, lead) for e in estimates}) if lead else None
    if rec is None:
        return [], "no candidate evaluated"
    point = {k: s.point for k, s in rec.selections.items()}
    runs = [trial_dir(out, StudyTrial(rec.name, point.get(k, point[None]), s, k)) for k, s in sorted(rec.components)]
    return runs, f"the study's recommendation {rec.name}, its estimate's (fold, seed) runs"
