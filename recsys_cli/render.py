"""Rendering of task results with rich: tables of metrics, sweeps, comparisons and studies.

The CLI parses and calls a task; this module shows what the task returned. Nothing here computes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Output that goes to a file or a pipe (CI logs, nohup, tee) is not cut at rich's 80-column default: wide
# tables (sweeps, studies, comparisons) keep their numbers. A terminal, or COLUMNS, sets the width as usual.
FILE_WIDTH = 200


def _width(stream: Any) -> int | None:
    if os.environ.get("COLUMNS"):
        return None  # rich reads it
    try:
        return None if stream.isatty() else FILE_WIDTH
    except (AttributeError, ValueError):
        return FILE_WIDTH


console = Console(width=_width(sys.stdout))
err_console = Console(stderr=True, width=_width(sys.stderr))


def render_preprocess(result: Any) -> None:
    """The processed data of `recsys preprocess`: what was read, dropped and split, and its folder."""
    table = Table(title=result.title, show_header=False)
    for name, value in result.summary:
        table.add_row(name, value)
    console.print(table)
    if result.path is not None:
        state = "reused" if result.reused else "written"
        console.print(f"[bold]processed data ({state}):[/] {result.path}")


def render_train(result: Any, title: str) -> None:
    render_metrics(result.metrics, title=title)
    console.print(f"[bold]run folder:[/] {result.run_dir}")
    console.print(f"[bold]best checkpoint:[/] {result.best_checkpoint}")


def render_eval(result: Any) -> None:
    render_metrics(result.metrics, title=f"{result.metrics['model']} on {result.metrics['data']}")
    render_per_class(result.metrics)
    render_baselines(result.metrics)
    console.print(f"[bold]metrics:[/] {result.output}")


def render_predict(result: Any) -> None:
    table = Table(title="predict", show_header=False)
    for name, value in result.counts.items():
        table.add_row(name, f"{value:,}" if isinstance(value, int) else str(value))
    table.add_row("seconds", f"{result.seconds:.3f}")
    table.add_row("rows / second", f"{result.users_per_second:,.0f}")
    console.print(table)
    console.print(f"[bold]predictions:[/] {result.output}")


def render_metrics(metrics: dict[str, Any], title: str) -> None:
    valid, test = metrics.get("valid", {}), metrics.get("test", {})
    names = sorted(
        {key.split("/", 1)[1] for key in [*valid, *test]},
        key=lambda n: (n.split("@")[0], int(n.split("@")[1]) if "@" in n else 0),
    )
    console.print(_metric_table(valid, test, names, title))
    console.print(f"[bold]protocol:[/] {metrics['protocol']['description']}")
    if metrics["protocol"].get("warning"):
        console.print(f"[bold yellow]warning:[/] {metrics['protocol']['warning']}")
    for name, path in metrics.get("reports", {}).items():
        console.print(f"[bold]{name.replace('_', ' ')}:[/] {path}")
    for split, path in metrics.get("per_user", {}).items():
        console.print(f"[bold]per-user {split} metrics:[/] {path}")
    if "epochs" in metrics:
        console.print(
            f"epochs {metrics['epochs']} (best {metrics.get('best_epoch')}), "
            f"{metrics['fit_seconds']:.1f} s, {metrics['seconds_per_epoch']:.2f} s/epoch, "
            f"peak memory {metrics['peak_memory_mb']:.0f} MB"
            + (
                f", {metrics['train_samples_per_second']:,.0f} training samples/s"
                if "train_samples_per_second" in metrics
                else ""
            )
            + (
                f", features cached once in {metrics['feature_cache_seconds']:.1f} s"
                if metrics.get("feature_cache_seconds")
                else ""
            )
        )


def render_per_class(metrics: dict[str, Any]) -> None:
    """The per-class precision/recall/F1 table of a classification eval, weakest classes first."""
    path = metrics.get("reports", {}).get("per_class")
    if not path:
        return
    rows = sorted(json.loads(Path(path).read_text()), key=lambda row: (row["f1"], row["name"]))
    table = Table(title="test per class (weakest first)")
    for column in ("class", "precision", "recall", "f1", "support", "predicted"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for row in rows:
        table.add_row(
            str(row["name"]), *(f"{row[key]:.3f}" for key in ("precision", "recall", "f1")),
            str(row["support"]), str(row["predicted"]),
        )  # fmt: skip
    console.print(table)


def render_baselines(metrics: dict[str, Any]) -> None:
    """The fine-tuned model beside the untuned encoder's probe, zero-shot and the trivial baseline; a
    recommender beside popularity."""
    baselines = metrics.get("baselines")
    if not baselines:
        return
    if any(key.endswith("/ndcg@10") for key in metrics["test"]):  # a ranking: the checkpoint against popularity
        title, own = "against the popularity baseline (test)", f"{metrics['model']} (this checkpoint)"
    else:
        title, own = "before and after fine-tuning (test)", f"fine-tuned ({metrics['model']})"
    rows = {own: metrics["test"], **baselines}
    names = [key for key in metrics["test"] if key.split("/", 1)[1] in BASELINE_METRICS]
    table = Table(title=title)
    table.add_column("model")
    for name in names:
        table.add_column(name.split("/", 1)[1], justify="right")
    for label, values in rows.items():
        table.add_row(label, *(_fmt(values.get(name)) for name in names))
    console.print(table)


BASELINE_METRICS = (
    "ndcg@10",
    "hr@10",
    "mrr@10",
    "coverage@10",
    "accuracy",
    "macro_f1",
    "top3_accuracy",
    "in_scope_accuracy",
    "oos_recall",
    "rmse",
    "mae",
    "class_macro_f1",
)


def render_summary(rows: list[dict[str, Any]]) -> None:
    """One line per job: the overrides that differ between jobs, then validation/test NDCG@10, HR@10."""
    shared = set.intersection(*(set(row["overrides"].split()) for row in rows))
    metrics = [c for c in rows[0] if "ndcg@10" in c or "hr@10" in c]
    table = Table(title="sweep summary")
    table.add_column("job", no_wrap=True)
    table.add_column("overrides (varied)", no_wrap=True)
    for column in [*metrics, "epochs", "fit_seconds"]:
        table.add_column(column.replace("fit_seconds", "seconds"), justify="right")
    for index, row in enumerate(rows):
        varied = " ".join(o for o in row["overrides"].split() if o not in shared) or "-"
        cells = [f"{row[c]:.4f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in metrics]
        table.add_row(str(index), varied, *cells, str(row.get("epochs", "")), f"{row.get('fit_seconds') or 0:.0f}")
    console.print(table)


def render_compare(result: Any) -> None:
    """Groups of runs: each metric's mean ± std over seeds, then the paired test against the baseline."""
    metric = result.paired_metric
    table = Table(title=f"compare: {len(result.groups)} configuration(s)")
    table.add_column("configuration", no_wrap=True)
    table.add_column("runs", justify="right")
    for name in result.metrics:
        table.add_column(f"{name} (mean ± std)", justify="right")
    table.add_column(f"Δ {metric}", justify="right")
    table.add_column(f"{result.test} p (Holm)", justify="left")
    for group in result.groups:
        cells = []
        for name in result.metrics:
            stats = group.stats[name]
            spread = "" if stats["std"] is None else f" ± {stats['std']:.4f}"
            cells.append("-" if stats["mean"] is None else f"{stats['mean']:.4f}{spread}")
        sig = group.significance
        diff = "-" if sig.get("mean_diff") is None else f"{sig['mean_diff']:+.4f}"
        if sig.get("baseline"):
            note = "baseline" + (f" ({sig['reason']})" if sig.get("reason") else "")
        elif sig.get("p_value") is not None:
            note = f"{sig['p_value']:.3g} ({sig['p_holm']:.3g})" + (f" {sig['mark']}" if sig.get("mark") else "")
        else:
            note = str(sig.get("reason"))
        table.add_row(group.label, str(len(group.runs)), *cells, diff, note)
    console.print(table)
    if result.baseline:
        console.print(
            f"Δ and p: per-user {metric} against [bold]{result.baseline}[/], users paired by id (each user's value "
            f"averaged over seeds), Holm-corrected; * p < 0.05, ** p < 0.01."
        )
    console.print(f"[bold]protocol:[/] {' | '.join(result.protocols)}")
    for name, path in result.outputs.items():
        console.print(f"[bold]{name}:[/] {path}")


def render_trial(row: dict[str, Any]) -> None:
    """One finished trial of `recsys tune`, as it completes."""
    from recsys_cli.tasks.tune import param_columns

    values = " ".join(f"{key}={_short(row[key])}" for key in param_columns(row))
    if row["state"] == "complete":
        metric = next(k for k in row if k.startswith("val/"))
        console.print(f"trial {row['trial']}: {metric} {row[metric]:.4f}  {values}", highlight=False)
    else:
        console.print(f"trial {row['trial']} {row['state']}: {row.get('error') or '-'}  {values}", highlight=False)


def render_tune(result: Any) -> None:
    """The study's trials (best first), then the best trial's overrides beside its metrics."""
    from recsys_cli.tasks.tune import param_columns

    best, metric = result.best, result.metric
    test_metric = "test/" + metric.split("/", 1)[1]
    params = list(dict.fromkeys(key for row in result.trials for key in param_columns(row)))
    table = Table(title=f"study {result.study_name}: {len(result.trials)} trial(s), {result.direction} {metric}")
    for column in ("trial", "state", *params, metric, test_metric):
        table.add_column(column, justify="left" if column == "state" else "right")
    done = [row for row in result.trials if row[metric] is not None]
    ordered = sorted(done, key=lambda row: row[metric], reverse=result.direction == "maximize")
    for row in ordered + [row for row in result.trials if row[metric] is None]:
        style = "bold green" if row["trial"] == best["trial"] else None
        cells = [_short(row.get(column)) for column in params]
        table.add_row(
            str(row["trial"]), row["state"], *cells, _fmt(row[metric]), _fmt(row[test_metric]), style=style
        )  # fmt: skip
    console.print(table)
    render_metrics(
        _read_json(Path(best["run_dir"]) / "metrics.json"),
        title=f"best trial {best['trial']} (by {metric})",
    )
    if result.pinned:
        console.print(f"[bold]pinned by overrides (not searched):[/] {' '.join(result.pinned)}")
    console.print(f"chosen on {metric} alone; its test metrics are reported, never searched on.")
    console.print(f"[bold]best overrides:[/] {' '.join(best['overrides'])}", highlight=False)
    console.print(f"[bold]reproduce:[/] {best['command']}", highlight=False)
    console.print(f"[bold]study:[/] {result.storage}  (the same command again adds trials)")
    for name, path in result.outputs.items():
        console.print(f"[bold]{name}:[/] {path}")


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def render_options(groups: dict[str, list[tuple[str, str]]]) -> None:
    """`recsys list`: each config group's options with one line each."""
    for group, rows in groups.items():
        table = Table(title=f"{group}=", title_justify="left", show_header=False, box=None, padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        for name, description in rows:
            table.add_row(name, escape(description))  # `pip install 'recsys[mlflow]'` is not markup
        console.print(table)


def render_show(report: dict[str, Any]) -> None:
    """`recsys show`: what a checkpoint holds, its metrics, its main settings and the run folder's files."""
    model, data, training = report["model"], report["data"], report["training"]
    table = Table(title=f"{model['name']} ({model['kind']}) on {data.get('name')}", show_header=False)
    rows = [("checkpoint", report["checkpoint"]), ("run folder", report["run_dir"]), ("model class", model["class"])]
    weights = f"{model['stored_weights']:,} in {model['stored_tensors']} tensors ({_size(model['stored_bytes'])})"
    rows.append(("stored weights", weights))
    for key in ("total_parameters", "trainable_parameters"):
        if key in model:
            rows.append((key.replace("_", " "), f"{model[key]:,}"))
    for key in ("users", "items", "labels"):
        if key in data:
            rows.append((key, f"{data[key]:,}"))
    rows += [("data fingerprint", data.get("fingerprint")), ("processed data", data.get("processed_data"))]
    rows.append(("protocol", report["protocol"]))
    if "epochs" in training:
        rows.append(("epochs", f"{training['epochs']} (best {training.get('best_epoch')})"))
    if "fit_seconds" in training:
        rows.append(("fit", f"{training['fit_seconds']:.1f} s, {training['seconds_per_epoch']:.2f} s/epoch"))
    if "peak_memory_mb" in training:
        rows.append(("peak memory", f"{training['peak_memory_mb']:.0f} MB"))
    if "checkpoint_epoch" in training:
        rows.append(("weights from", f"epoch {training['checkpoint_epoch']}, step {training['checkpoint_step']:,}"))
    written = report["written_by"]
    version = f"recsys {written['recsys']}, pytorch_lightning {written['pytorch_lightning']}"
    if written["recsys"] != written["this_recsys"]:
        version += f" (this is recsys {written['this_recsys']})"
    rows.append(("written by", version))
    for name, value in rows:
        if value is not None:
            table.add_row(name, escape(str(value)))
    console.print(table)
    if report["metrics"]:
        valid, test = report["metrics"]["valid"], report["metrics"]["test"]
        names = list(dict.fromkeys(key.split("/", 1)[1] for key in [*valid, *test]))
        console.print(_metric_table(valid, test, names, "key metrics"))
    else:
        console.print("no metrics.json beside the checkpoint: `recsys eval --checkpoint …` computes them.")
    settings = Table(title="config (resolved)", show_header=False)
    values = {**report["config"], **{f"model.{key}": value for key, value in model["settings"].items()}}
    for key, value in values.items():
        settings.add_row(key, escape(_short(value)))
    settings.add_row("overrides", escape(" ".join(report["overrides"]) or "-"))
    console.print(settings)
    files = Table(title="files")
    files.add_column("file")
    files.add_column("size", justify="right")
    for name, size in report["files"].items():
        files.add_row(escape(name), _size(size))
    console.print(files)


# The order of metric rows: accuracy first, then beyond-accuracy; anything else after, by name.
METRIC_ORDER = ("hr", "ndcg", "mrr", "recall", "precision", "coverage", "novelty", "arp")
GROUP_METRICS = ("hr", "ndcg", "mrr")


def _metric_table(valid: dict[str, float], test: dict[str, float], names: list[str], title: str) -> Table:
    """The metrics ``names`` of both splits. Metrics at cut-offs make a grid, one row per metric (``hr``,
    ``new_session/ndcg``, ...) and one column per split and K; others (accuracy, counts) one row each."""
    at = [name for name in names if "@" in name]
    if not at:
        table = Table(title=title)
        table.add_column("metric")
        table.add_column("valid", justify="right")
        table.add_column("test", justify="right")
        for name in names:
            table.add_row(name, _fmt(valid.get(f"val/{name}")), _fmt(test.get(f"test/{name}")))
        return table
    ks = sorted({int(name.rsplit("@", 1)[1]) for name in at})
    bases = sorted({name.rsplit("@", 1)[0] for name in at}, key=_metric_rank)
    # Subsets of users (new_session/, cold/, ...) show the ranking metrics; metrics.json keeps them all.
    bases = [base for base in bases if "/" not in base or base.rpartition("/")[2] in GROUP_METRICS]
    table = Table(title=title)
    table.add_column("metric")
    for split in ("valid", "test"):
        for index, k in enumerate(ks):
            table.add_column(f"{split} @{k}" if index == 0 else f"@{k}", justify="right")
    for base in bases:
        cells = [
            _fmt(values.get(f"{prefix}/{base}@{k}")) for prefix, values in (("val", valid), ("test", test)) for k in ks
        ]
        table.add_row(base, *cells)
    for name in sorted(set(names) - set(at), key=_metric_rank):  # no cut-off: under each split's first column
        pad = [""] * (len(ks) - 1)
        table.add_row(name, _count(valid.get(f"val/{name}")), *pad, _count(test.get(f"test/{name}")), *pad)
    return table


def _metric_rank(name: str) -> tuple[str, int, str]:
    group, _, metric = name.rpartition("/")
    return (group, METRIC_ORDER.index(metric) if metric in METRIC_ORDER else len(METRIC_ORDER), name)


def _count(value: float | None) -> str:
    return f"{value:,.0f}" if value is not None and float(value).is_integer() else _fmt(value)


def render_json(report: dict[str, Any]) -> None:
    """Plain JSON on stdout (no colour, no wrapping), for scripts."""
    sys.stdout.write(json.dumps(report, indent=2, default=str) + "\n")


def _size(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1000
    return f"{size} B"


# --- JSON views: what `--json` prints on stdout, one document per command -------------------------------
def json_preprocess(result: Any) -> dict[str, Any]:
    return {
        "title": result.title,
        "summary": dict(result.summary),
        "path": result.path,
        "reused": result.reused,
    }


def json_train(result: Any) -> dict[str, Any]:
    return {**result.metrics, "run_dir": result.run_dir, "best_checkpoint": result.best_checkpoint}


def json_sweep(root: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"sweep_folder": root, "jobs": rows}


def json_eval(result: Any) -> dict[str, Any]:
    return {**result.metrics, "output": result.output}


def json_predict(result: Any) -> dict[str, Any]:
    return {
        "output": result.output,
        "rows": result.rows,
        "counts": result.counts,
        "seconds": round(result.seconds, 4),
        "rows_per_second": round(result.users_per_second, 1),
    }


def json_compare(result: Any) -> dict[str, Any]:
    from recsys_cli.tasks.compare import summary_rows

    return {
        "groups": summary_rows(result),
        "baseline": result.baseline,
        "test": result.test,
        "paired_metric": result.paired_metric,
        "protocols": result.protocols,
        "outputs": result.outputs,
    }


def json_tune(result: Any) -> dict[str, Any]:
    return {
        "study": result.study_name,
        "storage": result.storage,
        "metric": result.metric,
        "direction": result.direction,
        "best": result.best,
        "trials": result.trials,
        "pinned": result.pinned,
        "outputs": result.outputs,
    }


def set_output(quiet: bool, as_json: bool) -> None:
    """``-q``: no progress, no tables (errors and warnings still print on stderr). ``--json``: stdout holds
    the one JSON document :func:`render_json` prints; progress stays on stderr."""
    from recsys_cli.core.progress import set_quiet

    set_quiet(quiet)
    console.quiet = quiet or as_json
