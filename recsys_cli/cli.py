"""The `recsys` command line: parse arguments, call one task function, render its result with rich.

No logic lives here, and nothing heavy is imported at module level: `recsys --help` and argument
errors never import torch, transformers or Lightning.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from recsys_cli import __version__
from recsys_cli.errors import EXIT_USER_ERROR, RecsysError

app = typer.Typer(
    name="recsys",
    help="Train, evaluate and apply recommenders. Extra arguments are Hydra overrides, e.g. "
    "`recsys train model=sasrec data=ml100k trainer.max_epochs=50`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

Overrides = Annotated[
    list[str] | None,
    typer.Argument(
        help="Hydra overrides key=value, e.g. data=ml100k model=pop trainer.max_epochs=3 "
        "(with --multirun, comma lists sweep: model=pop,sasrec seed=1,2,3).",
        show_default=False,
    ),
]
Checkpoint = Annotated[
    Path,
    typer.Option(
        "--checkpoint",
        "-c",
        help="A checkpoint from `recsys train`, e.g. runs/<run>/checkpoints/best.ckpt.",
        show_default=False,
    ),
]


def _fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_USER_ERROR)


def _guard(func: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a task; a user error becomes one line on stderr and exit code 2."""
    try:
        return func(*args, **kwargs)
    except RecsysError as exc:
        _fail(exc.message)
    except KeyboardInterrupt:
        _fail("interrupted; nothing half-written was left behind.")


def _version(value: bool) -> None:
    if value:
        console.print(f"recsys {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """recsys: BERT-aware recommender training and evaluation."""


@app.command()
def preprocess(
    overrides: Overrides = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if a processed folder exists.")] = False,
) -> None:
    """Clean, filter, index and split a dataset into data/processed/ (e.g. `recsys preprocess data=ml100k`)."""
    from recsys_cli.config import compose_config
    from recsys_cli.tasks import preprocess as task

    cfg = _guard(compose_config, overrides or [])
    result = _guard(task.run, cfg, force=force)
    if hasattr(result, "label_names"):
        render_text_data(result, title=f"{cfg.data.name}: texts")
    else:
        render_preprocess(result)


@app.command()
def train(
    overrides: Overrides = None,
    multirun: Annotated[
        bool,
        typer.Option(
            "--multirun",
            "-m",
            help="Sweep: run every combination of comma lists in the overrides, e.g. -m model=pop,sasrec seed=1,2,3.",
        ),
    ] = False,
) -> None:
    """Train a model to early stop and print its metrics (e.g. `recsys train model=sasrec data=ml100k`)."""
    from recsys_cli.config import compose_config, expand_sweep
    from recsys_cli.tasks import train as task

    overrides = overrides or []
    if multirun:
        jobs = _guard(expand_sweep, overrides)
        console.print(f"[bold]multirun:[/] {len(jobs)} job(s)")
        root, results = _guard(task.sweep, jobs)
        for result in results:
            render_metrics(result.metrics, title=f"{result.run_dir.name}")
        render_summary([task.summary_row(r) for r in results])
        console.print(f"[bold]sweep folder:[/] {root}  (summary.csv, summary.json)")
        return
    cfg = _guard(compose_config, overrides)
    result = _guard(task.run, cfg, overrides=overrides)
    if not result.metrics:  # a DDP worker (rank > 0): rank 0 reports
        return
    render_metrics(result.metrics, title=f"{cfg.model.name} on {cfg.data.name}")
    console.print(f"[bold]run folder:[/] {result.run_dir}")
    console.print(f"[bold]best checkpoint:[/] {result.best_checkpoint}")


@app.command("eval")
def evaluate(
    checkpoint: Checkpoint,
    overrides: Overrides = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Where to write the metrics JSON (default: <run>/eval/metrics.json)."),
    ] = None,
    baselines: Annotated[
        bool,
        typer.Option(
            "--baselines",
            help="Text models: also score the untuned encoder (linear probe, zero-shot label names) and the "
            "majority class / mean, to show what fine-tuning bought, e.g. --baselines.",
        ),
    ] = False,
) -> None:
    """Recompute validation and test metrics of a checkpoint; overrides may point it at other data."""
    from recsys_cli.tasks import evaluate as task

    result = _guard(task.run, checkpoint, overrides or [], output, baselines)
    render_metrics(result.metrics, title=f"{result.metrics['model']} on {result.metrics['data']}")
    render_per_class(result.metrics)
    render_baselines(result.metrics)
    console.print(f"[bold]metrics:[/] {result.output}")


@app.command()
def predict(
    checkpoint: Checkpoint,
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="Output file: .jsonl, .csv or .parquet, e.g. recs.jsonl.", show_default=False
        ),
    ],
    input: Annotated[
        Path | None,
        typer.Option(
            "--input",
            "-i",
            help="CSV/JSONL/Parquet with a user_id and/or a history (item ids) column, e.g. users.csv; "
            "for a text model, a text column, e.g. queries.csv.",
        ),
    ] = None,
    all_users: Annotated[
        bool, typer.Option("--all-users", help="Recommend for every user the checkpoint knows instead of --input.")
    ] = False,
    top_k: Annotated[
        int, typer.Option("--top-k", "-k", help="Items per user (intents per text for a text model), e.g. --top-k 10.")
    ] = 10,
    exclude_seen: Annotated[
        bool, typer.Option("--exclude-seen/--include-seen", help="Leave out items the user already interacted with.")
    ] = True,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size", help="Users (default 128: activations stay in CPU cache) or texts (default 64) per batch."
        ),
    ] = None,
    text_column: Annotated[
        str, typer.Option("--text-column", help="Text models: the input column holding the texts, e.g. query.")
    ] = "text",
    embeddings: Annotated[
        Path | None,
        typer.Option("--embeddings", help="Text models: also write pooled text embeddings here, e.g. emb.parquet."),
    ] = None,
) -> None:
    """Write top-K recommendations for users or item histories (e.g. `--input users.csv --output recs.jsonl`)."""
    from recsys_cli.tasks import predict as task

    if top_k < 1:
        _fail(f"--top-k must be at least 1 (got {top_k}); pass e.g. --top-k 10.")
    result = _guard(
        task.run,
        checkpoint,
        output,
        input_path=input,
        all_users=all_users,
        top_k=top_k,
        exclude_seen=exclude_seen,
        batch_size=batch_size,
        progress=sys.stderr.isatty(),
        text_column=text_column,
        embeddings=embeddings,
    )
    table = Table(title="predict", show_header=False)
    for name, value in result.counts.items():
        table.add_row(name, f"{value:,}")
    table.add_row("seconds", f"{result.seconds:.3f}")
    table.add_row("rows / second", f"{result.users_per_second:,.0f}")
    console.print(table)
    console.print(f"[bold]predictions:[/] {result.output}")


@app.command()
def compare(
    runs: Annotated[
        list[str],
        typer.Argument(
            help="Run folders, folders of runs (a sweep: runs/multirun/<time>; runs/tune/<name>) or globs "
            "such as 'runs/*'.",
            show_default=False,
        ),
    ],
    metrics: Annotated[
        str, typer.Option("--metrics", help="Comma-separated metrics to tabulate, e.g. test/ndcg@10,val/hr@20.")
    ] = "test/ndcg@10,test/hr@10",
    test: Annotated[
        str, typer.Option("--test", help="Paired significance test of per-user values: ttest or wilcoxon.")
    ] = "ttest",
    paired_metric: Annotated[
        str, typer.Option("--paired-metric", help="The per-user metric the test pairs, e.g. test/ndcg@10.")
    ] = "test/ndcg@10",
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline", help="The group every other is tested against: a model name or a run folder (default: pop)."
        ),
    ] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write a bar chart (mean ± std) here, e.g. --plot compare.png.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the table here: .json or .csv, e.g. summary.csv.")
    ] = None,
    allow_mixed_protocols: Annotated[
        bool,
        typer.Option("--allow-mixed-protocols", help="Compare runs evaluated under different protocols anyway."),
    ] = False,
) -> None:
    """Compare runs: mean ± std over seeds per configuration, paired tests against a baseline.

    E.g. `recsys compare runs/multirun/<time> --baseline pop --plot compare.png`.
    """
    from recsys_cli.tasks import compare as task

    names = [name.strip() for name in metrics.split(",") if name.strip()]
    result = _guard(
        task.compare,
        runs,
        metrics=names,
        paired_metric=paired_metric,
        test=test,
        baseline=baseline,
        allow_mixed_protocols=allow_mixed_protocols,
        plot=plot,
        output=output,
    )
    render_compare(result)


@app.command()
def tune(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="Hydra overrides for every trial, e.g. model=sasrec data=ml100k tune=sasrec (the space, from "
            "conf/tune/); a searched key given here is pinned, e.g. model.hidden_size=64.",
            show_default=False,
        ),
    ] = None,
    trials: Annotated[
        int | None, typer.Option("--trials", "-n", help="Trials to add to the study (default tune.n_trials), e.g. 20.")
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="Study name and folder runs/tune/<name> (default <model>_<data>), e.g. lr_search."),
    ] = None,
) -> None:
    """Search hyperparameters with Optuna on a validation metric; the same command again continues the study.

    E.g. `recsys tune model=sasrec data=ml100k tune=sasrec --trials 20`.
    """
    from recsys_cli.tasks import tune as task

    result = _guard(task.run, overrides or [], n_trials=trials, name=name, on_trial=render_trial)
    render_tune(result)


# --- rendering --------------------------------------------------------------------------------------
def render_preprocess(result: Any) -> None:
    meta = result.stats
    counts = meta["counts"]
    table = Table(title=f"{meta['name']}: {meta['source']}", show_header=False)
    table.add_row("raw rows", f"{meta['raw_rows']:,}")
    for reason, dropped in meta["dropped"].items():
        table.add_row(f"dropped: {reason}", f"{dropped:,}")
    table.add_row("users", f"{counts['users']:,}")
    table.add_row("items", f"{counts['items']:,}")
    table.add_row("interactions", f"{counts['interactions']:,}")
    table.add_row("density", f"{counts['density']:.4%}")
    for split, size in meta["splits"].items():
        table.add_row(f"{split} events", f"{size:,}")
    table.add_row("split", meta["config"]["split"])
    console.print(table)
    state = "reused" if result.reused else "written"
    console.print(f"[bold]processed data ({state}):[/] {result.processed.path}")


def render_text_data(splits: Any, title: str) -> None:
    table = Table(title=title, show_header=False)
    for reason, value in splits.counts.items():
        table.add_row(reason, f"{value:,}")
    for split in ("train", "valid", "test"):
        table.add_row(f"{split} texts", f"{len(getattr(splits, split)):,}")
    labels = f"{len(splits.label_names)}" if splits.label_names else "numeric target"
    table.add_row("labels", labels)
    console.print(table)


def render_metrics(metrics: dict[str, Any], title: str) -> None:
    valid, test = metrics.get("valid", {}), metrics.get("test", {})
    names = sorted(
        {key.split("/", 1)[1] for key in [*valid, *test]},
        key=lambda n: (n.split("@")[0], int(n.split("@")[1]) if "@" in n else 0),
    )
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("valid", justify="right")
    table.add_column("test", justify="right")
    for name in names:
        table.add_row(name, _fmt(valid.get(f"val/{name}")), _fmt(test.get(f"test/{name}")))
    console.print(table)
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
    import json

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
    """The fine-tuned model beside the untuned encoder's probe, zero-shot and the trivial baseline."""
    baselines = metrics.get("baselines")
    if not baselines:
        return
    rows = {f"fine-tuned ({metrics['model']})": metrics["test"], **baselines}
    names = [key for key in metrics["test"] if key.split("/", 1)[1] in BASELINE_METRICS]
    table = Table(title="before and after fine-tuning (test)")
    table.add_column("model")
    for name in names:
        table.add_column(name.split("/", 1)[1], justify="right")
    for label, values in rows.items():
        table.add_row(label, *(_fmt(values.get(name)) for name in names))
    console.print(table)


BASELINE_METRICS = (
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
            note = f"{sig['p_value']:.3g} ({sig['p_holm']:.3g})" + (" *" if sig["significant"] else "")
        else:
            note = str(sig.get("reason"))
        table.add_row(group.label, str(len(group.runs)), *cells, diff, note)
    console.print(table)
    if result.baseline:
        console.print(
            f"Δ and p: per-user {metric} against [bold]{result.baseline}[/], users paired by id (each user's value "
            f"averaged over seeds), Holm-corrected; * p < 0.05."
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
    import json

    return json.loads(path.read_text())


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def main() -> None:
    app()
