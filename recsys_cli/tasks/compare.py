"""`recsys compare`: metrics of many runs side by side, grouped by configuration, with paired tests.

Runs that differ only in ``seed`` form one group (mean ± sample std over seeds). Each group is tested
against a baseline group on a per-user metric (``per_user/<split>.parquet`` in the run folders),
users paired by their dataset id after averaging each user's value over the group's seeds:

- ``ttest``: the paired Student t-test (Student 1908), as in Dror et al. 2018, "The Hitchhiker's
  Guide to Testing Statistical Significance in NLP", for metrics averaged over many users;
- ``wilcoxon``: the Wilcoxon signed-rank test (Wilcoxon 1945), free of the normality assumption.

p-values are Holm-corrected across the comparisons (Holm 1979, "A simple sequentially rejective
multiple test procedure"); a group is marked significant when its corrected p is below 0.05 (``*``; ``**``
below 0.01).

What makes a configuration can be narrowed: ``group_by`` keeps only the named override keys (beside the
model and the data), ``ignore`` drops some (``init_from``: runs that each start from their own seed's
checkpoint then pool into one group).
"""

from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys_cli.errors import RecsysError
from recsys_cli.io import atomic_path, atomic_write_json

TESTS = ("ttest", "wilcoxon")
ALPHA = 0.05
MARKS = ((0.01, "**"), (ALPHA, "*"))  # significance marks by corrected p-value, strictest first
# Override keys (and their subkeys) that do not change what is trained: runs differing only in these
# belong together. `model=`/`data=` themselves are left out too: the group names them already.
NOT_CONFIGURATION = ("seed", "run.name", "paths", "tune")
NAMED = ("model", "data")
SPLIT_FILES = {"val": "valid", "test": "test"}


@dataclass
class Run:
    path: Path
    metrics: dict[str, Any]

    @property
    def values(self) -> dict[str, float]:
        return {**self.metrics.get("valid", {}), **self.metrics.get("test", {})}

    @property
    def protocol(self) -> str | None:
        """The evaluation protocol, less the history length: that is a model input (a model tuned to read
        its last 20 items ranks the same targets among the same items as one reading 50)."""
        description = (self.metrics.get("protocol") or {}).get("description")
        return re.sub(r", max length \d+", "", description) if description else description

    def per_user_file(self, split: str) -> Path:
        """``per_user/<split>.parquet``: where ``metrics.json`` says, else in the run folder (which may have moved)."""
        listed = self.metrics.get("per_user")
        entry = listed.get(split) if isinstance(listed, dict) else None
        default = self.path / "per_user" / f"{split}.parquet"
        candidates = [Path(entry), self.path / entry] if entry else []
        return next((path for path in candidates if path.exists()), default)


@dataclass
class Group:
    label: str
    model: str
    data: str
    overrides: list[str]
    runs: list[Run]
    stats: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    significance: dict[str, Any] = field(default_factory=dict)

    @property
    def seeds(self) -> list[Any]:
        return [run.metrics.get("seed") for run in self.runs]


@dataclass
class CompareResult:
    groups: list[Group]
    metrics: list[str]
    paired_metric: str
    test: str
    baseline: str | None
    protocols: list[str]
    outputs: dict[str, Path] = field(default_factory=dict)


def find_runs(paths: list[str | os.PathLike]) -> list[Run]:
    """Run folders (holding ``metrics.json``) under each path or glob, each once, sorted by path.

    A path may be a run folder, a folder of runs (a ``--multirun`` sweep, ``runs/tune/<name>``) or a
    glob such as ``runs/*``; folders are searched downwards and a run's own subfolders are not.
    """
    roots: list[Path] = []
    for pattern in map(str, paths):
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches or not Path(matches[0]).exists():
            raise RecsysError(f"{pattern} does not exist; pass run folders, e.g. runs/<run> or runs/multirun/<time>.")
        roots.extend(Path(match) for match in matches)
    found: dict[Path, Run] = {}
    for root in roots:
        for folder, subfolders, files in os.walk(root):
            if "metrics.json" in files:
                subfolders.clear()  # a run's eval/ holds a metrics.json too
                path = Path(folder)
                found.setdefault(path.resolve(), Run(path, _read_metrics(path / "metrics.json")))
            subfolders.sort()
    if not found:
        listed = " ".join(map(str, paths))
        raise RecsysError(
            f"no run folders (with metrics.json) under {listed}; pass folders written by `recsys train`, "
            "e.g. runs/<run> or runs/multirun/<time>."
        )
    return sorted(found.values(), key=lambda run: str(run.path))


def _read_metrics(path: Path) -> dict[str, Any]:
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RecsysError(f"{path} is not readable JSON ({exc}); rerun `recsys train` for that run.") from None
    if not isinstance(metrics, dict) or not ({"valid", "test"} & set(metrics)):
        raise RecsysError(f"{path} holds no valid/test metrics; pass run folders written by `recsys train`.")
    return metrics


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def key_matches(key: str, names: list[str] | tuple[str, ...]) -> bool:
    """``key`` is one of ``names``, lies below one (``model`` covers ``model.lr``) or ends with one
    (``init_from`` covers ``model.init_from``)."""
    return any(key == name or key.startswith(f"{name}.") or key.endswith(f".{name}") for name in names)


def configuration(
    run: Run, group_by: list[str] | None = None, ignore: list[str] | None = None
) -> tuple[str, str, tuple[str, ...]]:
    """What identifies a run's configuration: model, data and the overrides that are not seeds or paths;
    with ``group_by``, only the overrides of those keys; never those of the keys in ``ignore``."""
    kept = []
    for override in run.metrics.get("overrides") or []:
        key = override_key(override)
        ignored = key in NAMED or any(key == k or key.startswith(f"{k}.") for k in NOT_CONFIGURATION)
        if group_by is not None and not key_matches(key, [k for k in group_by if k not in NAMED]):
            ignored = True
        if not ignored and not (ignore and key_matches(key, ignore)):
            kept.append(override)
    return str(run.metrics.get("model")), str(run.metrics.get("data")), tuple(sorted(kept))


def check_keys(runs: list[Run], option: str, keys: list[str]) -> None:
    """Every key of ``option`` must name an override of some run: a typo in ``--group-by`` would pool silently."""
    seen = sorted({override_key(o) for run in runs for o in run.metrics.get("overrides") or []} - set(NAMED))
    for key in keys:
        if key not in NAMED and not any(key_matches(found, [key]) for found in seen):
            raise RecsysError(
                f"{option} {key} matches no override of these runs (they set: {', '.join(seen) or 'none'}); "
                f"check the key, e.g. {option} {seen[0] if seen else 'model'}."
            )


def group_runs(runs: list[Run], group_by: list[str] | None = None, ignore: list[str] | None = None) -> list[Group]:
    """Runs grouped by :func:`configuration`, in order of first appearance, with short distinct labels."""
    grouped: dict[tuple[str, str, tuple[str, ...]], list[Run]] = {}
    for run in runs:
        grouped.setdefault(configuration(run, group_by, ignore), []).append(run)
    keys = list(grouped)
    shared = set.intersection(*(set(key[2]) for key in keys))
    several_data = len({key[1] for key in keys}) > 1
    groups = []
    for model, data, overrides in keys:
        varied = [o for o in overrides if o not in shared]
        label = " ".join([model, *([data] if several_data else []), *varied])
        groups.append(Group(label, model, data, list(overrides), grouped[(model, data, overrides)]))
    return groups


def summarise(group: Group, metrics: list[str]) -> None:
    """Mean, sample standard deviation (n - 1) and count of each metric over the group's runs."""
    import numpy as np

    for name in metrics:
        values = np.array([run.values[name] for run in group.runs if run.values.get(name) is not None], float)
        std = float(values.std(ddof=1)) if len(values) > 1 else None
        group.stats[name] = {"mean": float(values.mean()) if len(values) else None, "std": std, "n": len(values)}


def per_user_values(group: Group, paired_metric: str) -> tuple[Any, str | None]:
    """The group's per-user ``paired_metric`` averaged over its seeds (a Series by user_id), or why not."""
    import pandas as pd

    split, column = _split_metric(paired_metric)
    frames = []
    for run in group.runs:
        path = run.per_user_file(SPLIT_FILES[split])
        if not path.exists():
            return None, f"no per-user metrics: {run.path.name}/per_user/{path.name} is missing"
        frame = pd.read_parquet(path)
        if column not in frame.columns or "user_id" not in frame.columns:
            return None, f"{run.path.name}/per_user/{path.name} has no user_id or {column} column"
        frames.append(frame[["user_id", column]])
    table = pd.concat(frames, ignore_index=True)
    return table.groupby(table["user_id"].astype(str), sort=True)[column].mean(), None


def _split_metric(name: str) -> tuple[str, str]:
    split, _, column = name.rpartition("/")
    split = split or "test"
    if split not in SPLIT_FILES or not column:
        raise RecsysError(f"--paired-metric {name} must look like test/ndcg@10 or val/ndcg@10.")
    return split, column


def paired_test(group_values: Any, baseline_values: Any, test: str) -> dict[str, Any]:
    """Pair users by id and test ``group - baseline`` (two-sided): mean difference, p-value, users."""
    import numpy as np
    from scipy import stats

    joined = group_values.to_frame("group").join(baseline_values.to_frame("baseline"), how="inner")
    diff = (joined["group"] - joined["baseline"]).to_numpy(float)
    result: dict[str, Any] = {"n_users": len(diff), "mean_diff": float(diff.mean()) if len(diff) else None}
    if len(diff) < 2:
        return {**result, "p_value": None, "reason": f"only {len(diff)} user(s) shared with the baseline"}
    if np.all(diff == diff[0]):  # no spread: both tests are undefined; the sign says it all
        return {**result, "p_value": 1.0 if diff[0] == 0 else 0.0}
    if test == "ttest":
        p_value = stats.ttest_rel(joined["group"], joined["baseline"]).pvalue
    else:
        p_value = stats.wilcoxon(joined["group"], joined["baseline"]).pvalue
    return {**result, "p_value": float(p_value)}


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def find_baseline(groups: list[Group], baseline: str | None) -> tuple[Group | None, str | None]:
    """The baseline group: by model name or by one of its run folders; ``None`` picks ``pop`` if present."""
    wanted = baseline or "pop"
    path = Path(wanted).resolve()
    matches = [g for g in groups if any(run.path.resolve() == path for run in g.runs)] or [
        g for g in groups if g.model == wanted or g.label == wanted
    ]
    if len(matches) == 1:
        return matches[0], None
    if len(matches) > 1:
        labels = "; ".join(g.label for g in matches)
        raise RecsysError(f"--baseline {wanted} matches several groups ({labels}); pass one of its run folders.")
    if baseline is not None:
        choices = ", ".join(sorted({g.model for g in groups}))
        raise RecsysError(f"--baseline {baseline} is neither a model among the runs ({choices}) nor one of the runs.")
    return None, "no baseline: no pop runs among these; pass --baseline <model or run folder>"


def compare(
    paths: list[str | os.PathLike],
    metrics: list[str] | None = None,
    paired_metric: str = "test/ndcg@10",
    test: str = "ttest",
    baseline: str | None = None,
    allow_mixed_protocols: bool = False,
    plot: Path | None = None,
    output: Path | None = None,
    group_by: list[str] | None = None,
    ignore: list[str] | None = None,
) -> CompareResult:
    """Group the runs under ``paths``, summarise ``metrics`` and test each group against the baseline.

    ``group_by``: the override keys that make a configuration besides model and data (default: every one but
    seeds and paths); ``ignore``: keys that never do (e.g. ``init_from``).
    """
    metrics = list(metrics or ["test/ndcg@10", "test/hr@10"])
    if test not in TESTS:
        raise RecsysError(f"--test {test} is not a test we run; choose one of: {', '.join(TESTS)}.")
    _split_metric(paired_metric)
    if output is not None and Path(output).suffix not in (".json", ".csv"):
        raise RecsysError(f"--output {output} must end in .json or .csv, e.g. --output summary.csv.")
    runs = find_runs(paths)
    protocols = sorted({str(run.protocol) for run in runs})
    if len(protocols) > 1 and not allow_mixed_protocols:
        first_run = {str(run.protocol): run.path for run in reversed(runs)}
        examples = "; ".join(f"'{p}' ({first_run[p]})" for p in protocols)
        raise RecsysError(
            f"the runs were evaluated under {len(protocols)} different protocols: {examples}; their numbers are "
            "not comparable: compare runs of one protocol, or pass --allow-mixed-protocols."
        )
    available = set().union(*(run.values for run in runs))
    unknown = [name for name in metrics if name not in available]
    if unknown:
        raise RecsysError(
            f"metric {unknown[0]} is in none of the runs; choose from: {', '.join(sorted(available))} "
            "(e.g. --metrics test/ndcg@10,test/hr@10)."
        )
    check_keys(runs, "--group-by", list(group_by or []))  # (an --ignore that matches nothing changes nothing)
    groups = group_runs(runs, group_by, ignore)
    for group in groups:
        summarise(group, metrics)
    base, missing = find_baseline(groups, baseline)
    _test_against(groups, base, missing, paired_metric, test)
    result = CompareResult(groups, metrics, paired_metric, test, base.label if base else None, protocols)
    if plot is not None:
        result.outputs["plot"] = save_bar_chart(result, Path(plot))
    if output is not None:
        result.outputs["summary"] = write_summary(result, Path(output))
    return result


def _test_against(groups: list[Group], base: Group | None, missing: str | None, metric: str, test: str) -> None:
    if base is None:
        for group in groups:
            group.significance = {"reason": missing}
        return
    base_values, base_reason = per_user_values(base, metric)
    base.significance = {"baseline": True, "reason": base_reason}
    tested = []
    for group in groups:
        if group is base:
            continue
        if base_reason:
            group.significance = {"reason": f"baseline: {base_reason}"}
            continue
        values, reason = per_user_values(group, metric)
        group.significance = {"reason": reason} if reason else paired_test(values, base_values, test)
        if group.significance.get("p_value") is not None:
            tested.append(group)
    for group, adjusted in zip(tested, holm([g.significance["p_value"] for g in tested])):
        group.significance["p_holm"] = adjusted
        group.significance["significant"] = adjusted < ALPHA
        group.significance["mark"] = mark(adjusted)


def mark(p_value: float | None) -> str:
    """``**`` for p < 0.01, ``*`` for p < 0.05, else nothing."""
    return next((text for limit, text in MARKS if p_value is not None and p_value < limit), "")


def summary_rows(result: CompareResult) -> list[dict[str, Any]]:
    """One flat row per group: label, runs, seeds, mean/std/n per metric, and the paired test."""
    rows = []
    for group in result.groups:
        row: dict[str, Any] = {
            "group": group.label,
            "model": group.model,
            "data": group.data,
            "overrides": " ".join(group.overrides),
            "runs": len(group.runs),
            "seeds": " ".join(str(seed) for seed in group.seeds),
        }
        for name, stats in group.stats.items():
            row.update({f"{name} mean": stats["mean"], f"{name} std": stats["std"], f"{name} n": stats["n"]})
        sig = group.significance
        row.update(
            {
                "baseline": bool(sig.get("baseline")),
                f"{result.paired_metric} diff": sig.get("mean_diff"),
                "p_value": sig.get("p_value"),
                "p_holm": sig.get("p_holm"),
                "significant": sig.get("significant"),
                "mark": sig.get("mark"),
                "paired_users": sig.get("n_users"),
                "note": sig.get("reason"),
            }
        )
        rows.append(row)
    return rows


def write_summary(result: CompareResult, path: Path) -> Path:
    """``summary.json`` (the settings and one entry per group with its run folders) or ``summary.csv``."""
    import pandas as pd

    rows = summary_rows(result)
    if path.suffix == ".json":
        for row, group in zip(rows, result.groups):
            row["run_dirs"] = [str(run.path) for run in group.runs]
        settings = {k: getattr(result, k) for k in ("metrics", "paired_metric", "test", "baseline", "protocols")}
        atomic_write_json(path, {**settings, "alpha": ALPHA, "correction": "holm", "groups": rows})
    else:
        with atomic_path(path) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
    return path


def save_bar_chart(result: CompareResult, path: Path) -> Path:
    """:func:`bar_chart` as a PNG, written atomically."""
    figure = bar_chart(result)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return path


def bar_chart(result: CompareResult) -> Any:
    """Bars of each metric's mean per group with ±std error bars, titled by metrics and data, with the paired
    test's marks (``*``, ``**``) over the paired metric's bars (a matplotlib Figure on the Agg canvas)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_groups, n_metrics = len(result.groups), len(result.metrics)
    width = 0.8 / n_groups
    figure = Figure(figsize=(max(5.0, 1.2 + n_metrics * (0.5 + 0.35 * n_groups)), 3.6))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions = np.arange(n_metrics)
    paired = result.metrics.index(result.paired_metric) if result.paired_metric in result.metrics else None
    top = 0.0
    for index, group in enumerate(result.groups):
        means = np.array([group.stats[m]["mean"] or 0.0 for m in result.metrics])
        stds = np.array([group.stats[m]["std"] or 0.0 for m in result.metrics])
        significance = mark(group.significance.get("p_holm"))
        label = f"{group.label} (n={len(group.runs)})" + (" — baseline" if group.significance.get("baseline") else "")
        if significance and paired is None:  # no bar of the tested metric to mark: the legend carries it
            label += f" {significance}"
        x = positions + (index - (n_groups - 1) / 2) * width
        axes.bar(x, means, width, yerr=stds, capsize=3, label=label)
        top = max(top, float((means + stds).max()))
        if significance and paired is not None:
            axes.text(x[paired], means[paired] + stds[paired], significance, ha="center", va="bottom")
    axes.set_ylim(top=top * 1.15 or 1.0)
    axes.set_xticks(positions, result.metrics)
    axes.set_ylabel("mean ± std over seeds")
    datasets = ", ".join(dict.fromkeys(group.data for group in result.groups))
    figure.suptitle(f"{', '.join(result.metrics)} on {datasets}", fontsize=10)
    if result.baseline:
        axes.set_title(
            f"* p < 0.05, ** p < 0.01: paired {result.test} of per-user {result.paired_metric} "
            f"against {result.baseline}, Holm-corrected",
            fontsize=7,
        )
    # Labels can be long (the overrides that differ): the legend goes under the axes, one line each.
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    return figure
