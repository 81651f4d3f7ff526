"""--race on synthetic held-out and nested studies (no training, no Ray): the trials of a wave are 'run' by writing
their results; ce, clearly worse after two folds, runs no third-fold trial; the answer is complete."""
from __future__ import annotations

import json

from test_study import plan
from test_tune_consolidate import fake_metrics

from adpm_dist.tune.experiment import trial_dir, write_search
from adpm_dist.tune.study.race import RACED_FILE, batch_text, race
from adpm_dist.tune.study.report import consolidate_study

LABELS = ["head"] * 15 + ["mid"] * 10 + ["tail"] * 5


def write_trial(study, t) -> None:
    """logit_adjusted right everywhere, adpm_isotropic right but for one head image, ce misses every tail
    image and half the mid ones."""
    preds = list(LABELS)
    if t.candidate == "ce":
        preds = ["head" if y == "tail" or (y == "mid" and i % 2) else y for i, y in enumerate(LABELS)]
    elif t.candidate == "adpm_isotropic":
        preds[0] = "mid"
    d = trial_dir(study.out, t)
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(fake_metrics(0.8, t.fold)))
    rows = ["key,label,prediction"] + [f"f{t.fold}k{i},{y},{p}" for i, (y, p) in enumerate(zip(LABELS, preds))]
    (d / "predictions.csv").write_text("\n".join(rows) + "\n")
    (d / "cost.json").write_text(json.dumps({"wall_s": 50.0, "cpus": 1, "gpus": 0, "attempts": 1, "processes": 1}))


def held_out_race(study):
    """(raced.json, the trial ids of each wave, what the race said, the wave runner): a race whose waves
    'run' by writing write_trial's results."""
    write_search(study)
    ran, said = [], []

    def run_wave(trials):
        ran.append(sorted(t.id for t in trials))
        for t in trials:
            write_trial(study, t)

    return race(study, run_wave, say=said.append), ran, said, run_wave


def test_race_drops_the_clearly_worse_and_the_answer_is_complete(tmp_path):
    study = plan(tmp_path, {"logit_adjusted": {"baseline.la_tau": [1.0]}}, parts=("fold0", "fold1", "fold2", "test"))
    assert study.protocol == "held_out_test"
    raced, ran, said, run_wave = held_out_race(study)
    assert list(raced) == ["ce"] and raced["ce"]["wave"] == 2 and raced["ce"]["interval"][1] < -0.01
    # folds 0-1 run as one batch (no look between them), then the look, then fold 2 without ce
    assert len(ran) == 2 and not any(i.startswith("ce_") for i in ran[1]) and len(ran[1]) == 2
    assert sorted({int(i[-1]) for i in ran[0]}) == [0, 1]
    assert said and "ce dropped after fold 1" in said[0] and raced["ce"]["level"] == 0.95   # 3 folds: one look
    report = consolidate_study(study.out)
    assert report["partial"] == [] and report["recommendation"].name == "logit_adjusted"
    assert report["decisions"]["ce"].verdict == "raced out (wave 2)"
    md = (study.out / "study.md").read_text()
    assert "PARTIAL" not in md and "## Raced out" in md and "- ce: after 2 fold(s)" in md and "(95.0% interval)" in md
    assert json.loads((study.out / RACED_FILE).read_text()) == raced
    # a resumed race keeps the drop and runs nothing more
    ran.clear()
    study.todo = []
    assert race(study, run_wave) == raced and ran == []


def test_race_under_nested_cv_runs_each_outer_fold_whole(tmp_path):
    """Fold-only shards (nested CV): wave k holds outer fold k's CV trials and the inner trials choosing its
    point; ce, clearly worse after two outer folds, runs nothing of the third, neither CV nor inner trials;
    the look chose logit_adjusted's point per outer fold on all its inner folds, as the answer does."""
    from test_study import write_trial as write_nested

    study = plan(tmp_path, {"logit_adjusted": {"baseline.la_tau": [0.5, 1.0]}})
    assert study.protocol == "nested"
    write_search(study)
    ran = []

    def run_wave(trials):
        ran.append(trials)
        for t in trials:
            write_nested(study, t)

    raced = race(study, run_wave, say=lambda _: None)
    assert list(raced) == ["ce"] and raced["ce"]["wave"] == 2
    assert [{(t.outer if t.outer is not None else t.fold) for t in wave} for wave in ran] == [{0, 1}, {2}]
    assert {t.outer for t in ran[1] if t.outer is not None} == {2} and not any(t.candidate == "ce" for t in ran[1])
    report = consolidate_study(study.out)
    assert report["partial"] == [] and report["decisions"]["ce"].verdict == "raced out (wave 2)"
    la = next(e for e in report["estimates"] if e.name == "logit_adjusted")
    assert [la.selections[k].point for k in range(3)] == ["la_tau1", "la_tau1", "la_tau0.5"]

def test_with_two_seeds_the_waves_run_seed_by_seed_and_the_looks_read_the_first_seed(tmp_path):
    """Two seeds: the waves are (seed 0, folds 0-2), then (seed 1, folds 0-2); the looks follow seed 0's second
    and third fold (2 looks at 97.5%) and read seed 0 alone, so the batches are seed 0's folds 0-1, its fold 2,
    and seed 1 whole. ce, clearly worse after seed 0's two first folds, runs nothing of seed 0's third fold nor
    of seed 1; study.md says which seed the look read."""
    study = plan(tmp_path, {"logit_adjusted": {"baseline.la_tau": [1.0]}}, parts=("fold0", "fold1", "fold2", "test"),
                 seeds=(0, 1))
    raced, ran, said, _ = held_out_race(study)
    assert [sorted({(int(i.split("_seed")[1][0]), int(i[-1])) for i in wave}) for wave in ran] == \
        [[(0, 0), (0, 1)], [(0, 2)], [(1, 0), (1, 1), (1, 2)]]
    assert list(raced) == ["ce"] and raced["ce"]["wave"] == 2 and raced["ce"]["seeds"] == [0]
    assert raced["ce"]["level"] == 0.975 and "ce dropped after fold 1 of seed 0 (wave 2 of 6)" in said[0]
    assert sum(i.startswith("ce_") for wave in ran for i in wave) == 2
    report = consolidate_study(study.out)
    assert report["partial"] == [] and report["recommendation"].name == "logit_adjusted"
    assert "- ce: after 2 fold(s) of seed 0 (the first seed's folds" in (study.out / "study.md").read_text()


def test_each_look_reads_a_wider_interval_bonferroni_over_the_looks():
    """A race looks after waves 2 .. folds - 1 (with more seeds: after the first seed's folds 2 .. folds, the
    waves running seed by seed); its drop rule (upper end below -eps) is a one-sided test at
    2.5%, split over those looks: the chance of dropping, at any look, a candidate truly within eps of the
    leader stays at most the final verdict's."""
    from adpm_dist.tune.study.race import look_level, looks

    assert [looks(f) for f in (2, 3, 4, 5, 10)] == [0, 1, 2, 3, 8]
    assert look_level(3) == 0.95 and look_level(2) == 0.95
    assert [looks(f, seeds=2) for f in (2, 3, 5)] == [1, 2, 4] and looks(5, seeds=3) == 4
    assert look_level(5, seeds=2) == 1 - 0.05 / 4
    # a first look after one wave (what benchmarks/race_replay.py compares with): one look more, each wider
    assert looks(3, first_look=1) == 2 and look_level(3, first_look=1) == 0.975 and looks(5, seeds=2, first_look=1) == 5
    for folds in (4, 5, 10):
        level = look_level(folds)
        assert abs((1 - level) / 2 * looks(folds) - 0.025) < 1e-12   # the one-sided errors add up to 2.5%


def test_a_look_level_widens_only_the_difference_intervals(tmp_path):
    """decide(level=...) widens only the difference intervals the verdicts read (a stricter look needs more
    evidence to drop); the estimates' own intervals do not move."""
    from adpm_dist.tune.study import compare
    from adpm_dist.tune.study.race import interim

    study = plan(tmp_path, {"logit_adjusted": {"baseline.la_tau": [1.0]}}, parts=("fold0", "fold1", "fold2", "test"))
    write_search(study)
    for t in study.trials:
        if t.fold < 2:
            write_trial(study, t)
    search = json.loads((study.out / "search.json").read_text())
    _, usual = interim(study.out, search, 2)
    _, strict = interim(study.out, search, 2, level=1.0)
    assert usual["ce"].verdict == "clearly worse"
    assert strict["ce"].diff_low <= usual["ce"].diff_low and strict["ce"].diff_high >= usual["ce"].diff_high
    assert (strict["ce"].low, strict["ce"].high) == (usual["ce"].low, usual["ce"].high)
    assert compare.LEVEL == 0.95


def test_race_reads_the_target_prior_file_the_answer_reads(tmp_path):
    """--race --target-prior FILE: each look weighs the classes as the file says, like the final answer. ce
    misses every tail image, so a target that weighs the tail 8x puts it further below the leader than the
    balanced one does."""
    (tmp_path / "a").mkdir()
    study = plan(tmp_path / "a", {"logit_adjusted": {"baseline.la_tau": [1.0]}}, parts=("fold0", "fold1", "fold2", "test"))
    write_search(study)
    weights = tmp_path / "deployment.yaml"
    weights.write_text("head: 1\nmid: 1\ntail: 8\n")

    def run_wave(trials):
        for t in trials:
            write_trial(study, t)

    tail_heavy = race(study, run_wave, prior=str(weights), say=lambda _: None)
    balanced = json.loads(json.dumps(tail_heavy))
    from adpm_dist.tune.study.race import interim

    _, usual = interim(study.out, json.loads((study.out / "search.json").read_text()), 2)
    assert list(tail_heavy) == ["ce"] and tail_heavy["ce"]["difference"] < usual["ce"].diff < -0.01
    assert balanced == json.loads((study.out / RACED_FILE).read_text())
    report = consolidate_study(study.out, target_prior=str(weights))
    assert report["decisions"]["ce"].verdict == "raced out (wave 2)"


def test_a_resumed_race_neither_runs_nor_prices_what_it_dropped(tmp_path):
    """still_racing: study.todo less the candidates raced.json names (the CLI prices and prints that)."""
    from adpm_dist.tune.study.race import still_racing

    study = plan(tmp_path, {"logit_adjusted": {"baseline.la_tau": [1.0]}}, parts=("fold0", "fold1", "fold2", "test"))
    assert still_racing(study) == study.todo
    study.out.mkdir(parents=True, exist_ok=True)
    (study.out / RACED_FILE).write_text(json.dumps({"ce": {"wave": 2}}))
    left = still_racing(study)
    assert left and all(t.candidate != "ce" for t in left) and len(left) == len([t for t in study.todo
                                                                                if t.candidate != "ce"])


def test_keep_sources_keeps_what_a_racing_candidate_replays_until_it_drops_too():
    from adpm_dist.tune.study.race import keep_sources

    needs = {"posthoc_la": {"ce"}, "b": {"a"}, "c": {"b"}}
    assert keep_sources({"ce"}, {"ce", "posthoc_la", "la"}, needs) == {"ce": ["posthoc_la"]}
    assert keep_sources({"ce", "posthoc_la"}, {"ce", "posthoc_la", "la"}, needs) == {}
    # a chain: c stays, so b (which c replays) stays, so a (which b replays) stays
    assert keep_sources({"a", "b"}, {"a", "b", "c"}, needs) == {"b": ["c"], "a": ["b"]}


def test_a_source_a_racing_candidate_replays_is_not_raced_out(tmp_path):
    """posthoc_la replays ce's training (shared training): ce, clearly worse after two folds, keeps running
    while posthoc_la races, since dropping it would save nothing (posthoc_la would train it itself)."""
    study = plan(tmp_path, {}, parts=("fold0", "fold1", "fold2", "test"), methods=("ce", "posthoc_la", "logit_adjusted"))
    assert any(t.derived_from for t in study.trials if t.candidate == "posthoc_la")
    raced, ran, said, _ = held_out_race(study)
    assert raced == {} and any(i.startswith("ce_") for i in ran[-1])  # the last batch: fold 2
    assert any("ce is clearly worse after fold 1" in s and "posthoc_la reuse(s) its training" in s for s in said)
    assert consolidate_study(study.out)["decisions"]["ce"].verdict == "clearly worse"


def test_what_a_race_keeps_for_others_is_whole_training_reused(tmp_path):
    """posthoc_la replays CE and cRT starts its stage 2 from CE's whole run: both keep CE racing. The adjusted
    chain starts from ADPM's warm-up only, so a clearly worse ADPM may drop (the chain trains its warm-up)."""
    from adpm_dist.tune.study.race import reused_sources

    study = plan(tmp_path, {}, methods=("ce", "posthoc_la", "crt", "adpm", "adpm_adjusted_chain"),
                 overrides=("train.epochs=1", "train.prior_warmup_epochs=1"))
    assert any(t.prefix_from for t in study.trials if t.candidate == "adpm_adjusted_chain")
    assert reused_sources(study) == {"posthoc_la": {"ce"}, "crt": {"ce"}}


def test_a_batch_says_which_waves_it_holds(tmp_path):
    study = plan(tmp_path, {"logit_adjusted": {"baseline.la_tau": [1.0]}}, parts=("fold0", "fold1", "fold2", "test"),
                 seeds=(0, 1))
    in_waves = [t for t in study.trials if (t.seed, t.fold) in {(0, 0), (0, 1), (1, 2)}]
    assert batch_text(in_waves) == "seed 0, folds 0-1; seed 1, fold 2"
