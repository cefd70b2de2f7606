"""`recsys compare` on hand-made run folders: grouping, mean ± std, paired tests against scipy, outputs."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from recsys_cli.cli import app
from recsys_cli.errors import RecsysError
from recsys_cli.tasks import compare as task

runner = CliRunner()
USERS = [f"u{i:03d}" for i in range(40)]
PROTOCOL = "leave_one_out split, full ranking over all items, history not masked, max length 50, no filters"


def make_run(root: Path, name: str, model: str, seed: int, ndcg: np.ndarray, overrides=(), protocol=PROTOCOL,
             per_user: bool = True, shuffle: bool = False) -> Path:  # fmt: skip
    """A run folder as `recsys train` writes it: metrics.json, and per_user/{valid,test}.parquet."""
    run = root / name
    frame = pd.DataFrame(
        {"user_id": USERS, "user_idx": np.arange(1, len(USERS) + 1), "ndcg@10": ndcg, "hr@10": (ndcg > 0.3) * 1.0}
    )
    if shuffle:  # pairing must go by user_id, not by row order
        frame = frame.sample(frac=1.0, random_state=seed)
    paths = {}
    if per_user:
        (run / "per_user").mkdir(parents=True)
        for split in ("valid", "test"):
            frame.to_parquet(run / "per_user" / f"{split}.parquet", index=False)
            paths[split] = str(run / "per_user" / f"{split}.parquet")
    run.mkdir(parents=True, exist_ok=True)
    metrics = {
        "model": model,
        "data": "toy",
        "seed": seed,
        "protocol": {"description": protocol},
        "valid": {"val/ndcg@10": float(ndcg.mean())},
        "test": {"test/ndcg@10": float(ndcg.mean()), "test/hr@10": float(frame["hr@10"].mean())},
        "overrides": [f"model={model}", f"seed={seed}", f"paths.runs_dir={root}", *overrides],
        **({"per_user": paths} if per_user else {}),
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


@pytest.fixture
def planted(tmp_path):
    """pop (2 seeds) and sasrec (3 seeds) that beats it by about 0.1 NDCG@10 per user, plus noise."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.0, 0.5, len(USERS))
    pop = {seed: base + rng.normal(0, 0.02, len(USERS)) for seed in (1, 2)}
    sasrec = {seed: base + 0.1 + rng.normal(0, 0.05, len(USERS)) for seed in (1, 2, 3)}
    root = tmp_path / "runs"
    for seed, values in pop.items():
        make_run(root, f"pop_{seed}", "pop", seed, values)
    for seed, values in sasrec.items():
        make_run(root, f"sasrec_{seed}", "sasrec", seed, values, shuffle=seed == 2)
    return root, pop, sasrec


def test_seeds_are_grouped_with_mean_std_and_a_ttest_equal_to_scipys(planted):
    root, pop, sasrec = planted
    result = task.compare([root])
    assert [g.label for g in result.groups] == ["pop", "sasrec"]
    pop_group, sasrec_group = result.groups
    assert sorted(sasrec_group.seeds) == [1, 2, 3]
    run_means = [values.mean() for values in sasrec.values()]
    assert sasrec_group.stats["test/ndcg@10"]["mean"] == pytest.approx(np.mean(run_means))
    assert sasrec_group.stats["test/ndcg@10"]["std"] == pytest.approx(np.std(run_means, ddof=1))
    assert sasrec_group.stats["test/ndcg@10"]["n"] == 3
    # each user's value averaged over seeds first, then paired by user
    ours, theirs = np.mean(list(sasrec.values()), axis=0), np.mean(list(pop.values()), axis=0)
    sig = sasrec_group.significance
    assert sig["p_value"] == pytest.approx(stats.ttest_rel(ours, theirs).pvalue, rel=1e-9)
    assert sig["mean_diff"] == pytest.approx((ours - theirs).mean())
    assert sig["n_users"] == len(USERS) and sig["significant"] and sig["p_holm"] == sig["p_value"]
    assert pop_group.significance["baseline"]


def test_wilcoxon_matches_scipy_and_baseline_by_run_folder(planted):
    root, pop, sasrec = planted
    result = task.compare([root], test="wilcoxon", baseline=str(root / "sasrec_3"))
    assert result.baseline == "sasrec"
    ours, theirs = np.mean(list(pop.values()), axis=0), np.mean(list(sasrec.values()), axis=0)
    sig = result.groups[0].significance
    assert sig["p_value"] == pytest.approx(stats.wilcoxon(ours, theirs).pvalue, rel=1e-9)
    assert sig["mean_diff"] < 0


def test_holm_adjusts_step_down():
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04)
    assert task.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert task.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_overrides_other_than_seeds_and_paths_make_groups_and_holm_spans_them(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 0.5, len(USERS))
    make_run(tmp_path, "pop", "pop", 1, base)
    for lr in ("0.01", "0.001"):
        for seed in (1, 2):
            values = base + rng.normal(0.01, 0.05, len(USERS))
            make_run(tmp_path, f"s_{lr}_{seed}", "sasrec", seed, values, overrides=[f"model.lr={lr}", "run.name=x"])
    result = task.compare([str(tmp_path / "*")])
    assert [g.label for g in result.groups] == ["pop", "sasrec model.lr=0.001", "sasrec model.lr=0.01"]
    tested = [g.significance for g in result.groups[1:]]
    assert [s["p_holm"] for s in tested] == pytest.approx(task.holm([s["p_value"] for s in tested]))


def test_cli_table_plot_and_summaries(planted, tmp_path):
    root, _, _ = planted
    plot, summary = tmp_path / "out" / "compare.png", tmp_path / "summary.json"
    result = runner.invoke(app, ["compare", str(root), "--plot", str(plot), "--output", str(summary)])
    assert result.exit_code == 0, result.output
    assert "±" in result.output and " *" in result.output and "baseline" in result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(summary.read_text())
    assert saved["test"] == "ttest" and [g["runs"] for g in saved["groups"]] == [2, 3]
    assert len(saved["groups"][1]["run_dirs"]) == 3 and saved["groups"][1]["significant"] is True
    csv = tmp_path / "summary.csv"
    result = runner.invoke(app, ["compare", str(root), "--metrics", "test/hr@10", "-o", str(csv)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(csv)
    assert list(table["group"]) == ["pop", "sasrec"] and "test/hr@10 mean" in table.columns


def test_mixed_protocols_are_refused_unless_allowed(planted):
    root, pop, _ = planted
    make_run(root, "pop_masked", "pop", 3, pop[1], protocol=PROTOCOL.replace("not masked", "masked"))
    result = runner.invoke(app, ["compare", str(root)])
    assert result.exit_code == 2, result.output
    assert "different protocols" in result.output and "--allow-mixed-protocols" in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = runner.invoke(app, ["compare", str(root), "--allow-mixed-protocols"])
    assert result.exit_code == 0, result.output


def test_runs_that_read_different_history_lengths_share_a_protocol(planted):
    root, pop, _ = planted
    make_run(root, "sasrec_short", "sasrec", 3, pop[1], overrides=["data.max_len=20"],
             protocol=PROTOCOL.replace("max length 50", "max length 20"))  # fmt: skip
    result = runner.invoke(app, ["compare", str(root)])
    assert result.exit_code == 0, result.output
    assert "sasrec data.max_len=20" in result.output


def test_missing_per_user_files_leave_the_table_and_say_why(tmp_path):
    make_run(tmp_path, "pop", "pop", 1, np.full(len(USERS), 0.2))
    make_run(tmp_path, "sasrec", "sasrec", 1, np.full(len(USERS), 0.3), per_user=False)
    result = task.compare([tmp_path])
    assert result.groups[1].stats["test/ndcg@10"]["mean"] == pytest.approx(0.3)
    assert "no per-user metrics" in result.groups[1].significance["reason"]
    (tmp_path / "pop" / "per_user" / "test.parquet").unlink()
    assert "baseline: no per-user metrics" in task.compare([tmp_path]).groups[1].significance["reason"]


def test_run_discovery_and_user_errors(tmp_path):
    sweep = tmp_path / "multirun" / "20260101-000000"
    run = make_run(sweep, "000_pop_toy", "pop", 1, np.full(len(USERS), 0.2))
    (run / "eval").mkdir()
    (run / "eval" / "metrics.json").write_text("{}")  # `recsys eval` output inside a run: not a run
    (sweep / "summary.json").write_text("[]")
    assert [r.path for r in task.find_runs([tmp_path / "multirun"])] == [run]
    for args, message in [
        ([str(tmp_path / "nothing")], "does not exist"),
        ([str(tmp_path / "multirun"), "--baseline", "bpr"], "--baseline bpr is neither"),
        ([str(tmp_path / "multirun"), "--metrics", "test/ndcg@11"], "metric test/ndcg@11 is in none"),
        ([str(tmp_path / "multirun"), "--test", "anova"], "--test anova"),
    ]:
        result = runner.invoke(app, ["compare", *args])
        assert result.exit_code == 2 and message in result.output, result.output
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecsysError, match="no run folders"):
        task.find_runs([tmp_path / "empty"])


def test_a_multirun_sweep_feeds_compare(tiny, tmp_path):
    result = runner.invoke(app, ["train", "--multirun", *tiny, "model=pop,sasrec", "seed=1"])
    assert result.exit_code == 0, result.output
    sweep = next((tmp_path / "runs" / "multirun").iterdir())
    result = runner.invoke(app, ["compare", str(sweep), "--baseline", "pop"])
    assert result.exit_code == 0, result.output
    pop, sasrec = task.compare([sweep]).groups
    assert (pop.label, sasrec.label) == ("pop", "sasrec")
    per_user = pd.read_parquet(sasrec.runs[0].per_user_file("test"))
    assert sasrec.significance["n_users"] == len(per_user) > 0 and 0 <= sasrec.significance["p_value"] <= 1
    assert sasrec.significance["mean_diff"] == pytest.approx(
        per_user["ndcg@10"].mean() - pd.read_parquet(pop.runs[0].per_user_file("test"))["ndcg@10"].mean()
    )


def test_marks_follow_the_corrected_p_value():
    assert [task.mark(p) for p in (0.001, 0.0099, 0.01, 0.049, 0.05, 0.5, None)] == ["**", "**", "*", "*", "", "", ""]


def test_the_plot_has_a_title_and_marks_over_the_tested_bars(planted):
    root, _, _ = planted
    result = task.compare([root])
    figure = task.bar_chart(result)
    (axes,) = figure.axes
    assert figure._suptitle.get_text() == "test/ndcg@10, test/hr@10 on toy"
    assert "against pop" in axes.get_title() and "** p < 0.01" in axes.get_title()
    sasrec = result.groups[1]
    assert sasrec.significance["p_holm"] < 0.01 and sasrec.significance["mark"] == "**"
    (text,) = axes.texts  # one mark: sasrec over its test/ndcg@10 bar (the baseline has none)
    stats = sasrec.stats["test/ndcg@10"]
    assert text.get_text() == "**" and text.get_position()[1] == pytest.approx(stats["mean"] + stats["std"])
    assert text.get_position()[0] == pytest.approx(0.2)  # metric 0, second of two bars 0.4 wide
    labels = [t.get_text() for t in axes.get_legend().get_texts()]
    assert labels == ["pop (n=2) — baseline", "sasrec (n=3)"]


def test_group_by_and_ignore_pool_runs_that_differ_only_in_per_seed_paths(tmp_path):
    rng = np.random.default_rng(2)
    base = rng.uniform(0, 0.5, len(USERS))
    make_run(tmp_path, "pop", "pop", 1, base)
    for seed in (1, 2, 3):  # each seed starts from its own earlier checkpoint
        starts = [f"model.init_from=runs/pretrain_{seed}", "model.lr=0.01"]
        make_run(tmp_path, f"tuned_{seed}", "sasrec", seed, base + 0.1 + rng.normal(0, 0.02, len(USERS)), starts)
    assert [len(g.runs) for g in task.compare([tmp_path]).groups] == [1, 1, 1, 1]
    for options in ({"ignore": ["init_from"]}, {"group_by": ["model"]}, {"group_by": ["model.lr"]}):
        _, tuned = task.compare([tmp_path], **options).groups
        assert (tuned.model, len(tuned.runs), sorted(tuned.seeds)) == ("sasrec", 3, [1, 2, 3]), options
        assert tuned.significance["n_users"] == len(USERS) and tuned.significance["mark"] == "**"
    assert task.compare([tmp_path], group_by=["model.lr"]).groups[1].overrides == ["model.lr=0.01"]
    result = runner.invoke(app, ["compare", str(tmp_path), "--ignore", "init_from,intent_checkpoint"])
    assert result.exit_code == 0, result.output
    assert "compare: 2 configuration(s)" in result.output and " **" in result.output
    result = runner.invoke(app, ["compare", str(tmp_path), "--group-by", "model.lrr"])
    assert result.exit_code == 2 and "--group-by model.lrr matches no override" in result.output
    assert "model.init_from, model.lr" in result.output and len(result.output.strip().splitlines()) == 1
