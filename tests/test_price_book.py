"""The price book (adpm_dist/tune/price_book.py): a study's finished trials price a later study of the
same config on the same data and resources, and nothing else does."""
from __future__ import annotations

import json

from test_tune_consolidate import TINY

from adpm_dist.tune.contract import trial_dir
from adpm_dist.tune.experiment import SearchSpec
from adpm_dist.tune.price import plan_rows
from adpm_dist.tune.price_book import book_path, lookup, price_key, read_book, record
from adpm_dist.tune.search import Resources
from adpm_dist.tune.study.plan import plan_study
from adpm_dist.tune.study.spec import build_candidates


def study(tmp_path, name: str, overrides=("train.epochs=2",)):
    shards = tmp_path / "shards"
    shards.mkdir(exist_ok=True)
    (shards / "manifest.json").write_text(json.dumps({"parts": {p: {} for p in ("fold0", "fold1", "fold2", "test")}}))
    spec = SearchSpec(dataset="imagefolder", config=TINY, output=str(tmp_path / name), overrides=list(overrides))
    return plan_study(spec, build_candidates(["ce", "posthoc_la"]), shards, 3, [0, 1], resume=False)


def finish(s, trial, wall_s: float, cpu_s: float, epochs: int = 2) -> None:
    run = trial_dir(s.out, trial)
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.json").write_text(json.dumps({"history": [{}] * epochs}))
    (run / "cost.json").write_text(json.dumps({"wall_s": wall_s, "cpu_s": cpu_s, "cpus": 1}))


def test_a_finished_study_prices_the_next_one_of_the_same_config(tmp_path):
    first = study(tmp_path, "first")
    ce = [t for t in first.trials if t.candidate == "ce"]
    for t, wall in zip(ce, (10.0, 14.0)):
        finish(first, t, wall, cpu_s=wall / 2)
    for t in first.trials:
        if t.derived_from:  # a replay is no epoch of training
            finish(first, t, 1.0, 1.0)
    assert record(first, first.trials, Resources()) == 2 and record(first, first.trials, Resources()) == 0
    book = read_book()
    assert {e["trial"] for e in book} == {str(trial_dir(first.out, t)) for t in ce[:2]}
    assert len({price_key(first.config_of(t), Resources()) for t in first.trials if t.candidate == "ce"}) == 1

    second = study(tmp_path, "second")
    rows = {r.name: r for r in plan_rows(second, Resources())}
    assert rows["ce"].cost.origin == "price book" and rows["ce"].cost.runs == 2
    assert rows["ce"].cost.wall_s == (5.0 + 7.0) / 2 and rows["ce"].cost.cpu_s == (2.5 + 3.5) / 2
    assert {r.name: r for r in plan_rows(second)}["ce"].cost is None  # without resources the book is not read
    assert lookup(price_key(first.config_of(ce[0]), Resources()), first.out) is None  # its own records: read directly
    with open(book_path(), "a") as f:
        f.write('{"key": "cut sho')  # a write cut short is skipped, never fatal
    assert len(read_book()) == 2


def test_another_config_or_other_resources_is_another_price(tmp_path):
    first = study(tmp_path, "first")
    t = next(t for t in first.trials if t.candidate == "ce")
    key = price_key(first.config_of(t), Resources())
    assert price_key(first.config_of(t), Resources(cpus_per_trial=2.0)) != key
    assert price_key(study(tmp_path, "longer", ("train.epochs=3",)).config_of(t), Resources()) != key
