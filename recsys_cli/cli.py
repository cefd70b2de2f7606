"""The `recsys` command line: parse arguments, call one task function, render its result (:mod:`render`).

No logic lives here, and nothing heavy is imported at module level: `recsys --help` and argument
errors never import torch, transformers or Lightning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from recsys_cli import __version__, render
from recsys_cli.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, RecsysError
from recsys_cli.render import console, err_console

app = typer.Typer(
    name="recsys",
    help="Train, evaluate and apply recommenders. Extra arguments are Hydra overrides, e.g. "
    "`recsys train model=sasrec data=ml100k trainer.max_epochs=50`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _complete_override(ctx: typer.Context, incomplete: str) -> list[str]:
    """Tab completion of config choices (``model=<Tab>``); the words before it are the overrides parsed so far."""
    from recsys_cli.config import complete_override

    return complete_override(list(ctx.params.get("overrides") or []), incomplete)


Overrides = Annotated[
    list[str] | None,
    typer.Argument(
        help="Hydra overrides key=value, e.g. data=ml100k model=pop trainer.max_epochs=3 "
        "(with --multirun, comma lists sweep: model=pop,sasrec seed=1,2,3).",
        show_default=False,
        autocompletion=_complete_override,
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


Quiet = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="Print nothing but errors and warnings: no progress, no tables (for scripts)."),
]
AsJson = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print the result as one JSON document on stdout, nothing else there (progress stays on stderr), "
        "e.g. `--json | jq '.test'`.",
    ),
]


def _fail(message: str, code: int = EXIT_USER_ERROR) -> None:
    from rich.markup import escape

    # The message is plain text: `pip install 'recsys[minilm]'` must not be read as rich markup.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _guard(func: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a task; a user error becomes one line on stderr and exit code 2."""
    try:
        return func(*args, **kwargs)
    except RecsysError as exc:
        _fail(exc.message, getattr(exc, "exit_code", EXIT_USER_ERROR))
    except KeyboardInterrupt:
        _fail("interrupted; nothing half-written was left behind.", EXIT_INTERRUPTED)
    except Exception as exc:
        # Hydra's instantiate wraps what a `_target_` raises: a user error there (a logger whose package is
        # not installed, say) is still one line.
        if type(exc).__name__ == "InstantiationException" and isinstance(exc.__cause__, RecsysError):
            _fail(exc.__cause__.message, EXIT_USER_ERROR)
        raise


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


@app.command("list")
def list_options(
    group: Annotated[
        str | None, typer.Argument(help="One config group: data, model, trainer or logger (default: all).")
    ] = None,
) -> None:
    """Show the choices of each config group, one line each.

    E.g. `recsys list model`, then `recsys train model=intent_sasrec data=office`.
    """
    from recsys_cli.config import LISTED_GROUPS, describe_options

    groups = [group] if group else list(LISTED_GROUPS)
    render.render_options({name: _guard(describe_options, name) for name in groups})


@app.command()
def preprocess(
    overrides: Overrides = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if a processed folder exists.")] = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Clean, filter, index and split a dataset into data/processed/.

    E.g. `recsys preprocess data=ml100k`, or your own file: `recsys preprocess data=csv data.path=events.csv`.
    """
    from recsys_cli.config import compose_config
    from recsys_cli.tasks import preprocess as task

    render.set_output(quiet, as_json)
    cfg = _guard(compose_config, overrides or [])
    result = _guard(task.run, cfg, force=force)
    render.render_json(render.json_preprocess(result)) if as_json else render.render_preprocess(result)


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
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Continue a killed run from its last finished epoch (optimiser, early stopping and random state "
            "included), e.g. --resume runs/<run>; or a killed --multirun sweep, e.g. --resume runs/multirun/<time> "
            "(finished jobs are not trained again). Overrides given with a run apply on top of its own, e.g. "
            "trainer.max_epochs=100.",
            show_default=False,
        ),
    ] = None,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Train a model to early stop and print its metrics.

    E.g. `recsys train model=sasrec data=ml100k`, or a sweep: `recsys train -m model=pop,sasrec seed=1,2,3`.
    """
    from recsys_cli.config import compose_config, expand_sweep
    from recsys_cli.tasks import train as task

    overrides = overrides or []
    render.set_output(quiet, as_json)
    if resume is not None and not task.is_sweep(resume):
        result = _guard(task.resume, resume, overrides)
        if as_json and result.metrics:
            render.render_json(render.json_train(result))
        elif result.metrics:  # empty in a DDP worker (rank > 0): rank 0 reports
            render.render_train(result, title=f"{result.metrics['model']} on {result.metrics['data']} (resumed)")
        return
    if multirun or resume is not None:
        if resume is not None:  # a sweep folder
            if overrides:
                _fail(f"--resume {resume} is a sweep: it continues with its own jobs; drop the overrides.")
            root, results = _guard(task.resume_sweep, resume)
        else:
            jobs = _guard(expand_sweep, overrides)
            console.print(f"[bold]multirun:[/] {len(jobs)} job(s)")
            root, results = _guard(task.sweep, jobs)
        if as_json:
            render.render_json(render.json_sweep(root, [task.summary_row(r) for r in results]))
            return
        for result in results:
            render.render_metrics(result.metrics, title=f"{result.run_dir.name}")
        render.render_summary([task.summary_row(r) for r in results])
        console.print(f"[bold]sweep folder:[/] {root}  (summary.csv, summary.json)")
        return
    cfg = _guard(compose_config, overrides)
    result = _guard(task.run, cfg, overrides=overrides)
    if not result.metrics:  # a DDP worker (rank > 0): rank 0 reports
        return
    if as_json:
        render.render_json(render.json_train(result))
    else:
        render.render_train(result, title=f"{cfg.model.name} on {cfg.data.name}")


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
            help="Also score untrained references on the same split: for a recommender the popularity model "
            "(as model=pop); for a text model the untuned encoder (linear probe, zero-shot label names) and the "
            "majority class / mean, to show what fine-tuning bought, e.g. --baselines.",
        ),
    ] = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Recompute validation and test metrics of a checkpoint; overrides may point it at other data.

    E.g. `recsys eval -c runs/<run> --baselines`, or on other data:
    `recsys eval -c runs/<run>/checkpoints/best.ckpt data=csv data.path=other.csv`.
    """
    from recsys_cli.tasks import evaluate as task

    render.set_output(quiet, as_json)
    result = _guard(task.run, checkpoint, overrides or [], output, baselines)
    render.render_json(render.json_eval(result)) if as_json else render.render_eval(result)


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
            help="CSV/JSONL/Parquet with user_id, history (item ids) and/or query (free text) columns, any of them "
            "missing per row, e.g. sessions.jsonl; for a text model, a text column, e.g. queries.csv.",
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
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="Recommenders: add each query's predicted intent and, per recommended item, the history items "
            "most like it (by the model's item vectors).",
        ),
    ] = False,
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="Text models on CPU: int8 dynamic quantisation of the encoder's linear layers (faster where the "
            "CPU has no native bf16; predictions may differ slightly, see README).",
        ),
    ] = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Write top-K recommendations for users, item histories or queries.

    E.g. `recsys predict -c runs/<run>/checkpoints/best.ckpt -i sessions.jsonl -o recs.jsonl --top-k 10`,
    or `recsys predict -c runs/<run> --all-users -o recs.parquet`.
    """
    from recsys_cli.core.family import PredictRequest
    from recsys_cli.tasks import predict as task

    request = PredictRequest(
        output=output,
        input_path=input,
        all_users=all_users,
        top_k=top_k,
        exclude_seen=exclude_seen,
        batch_size=batch_size,
        progress=True,  # a bar on a terminal, start and end lines in a log, nothing with -q
        text_column=text_column,
        embeddings=embeddings,
        explain=explain,
        int8=int8,
    )
    render.set_output(quiet, as_json)
    result = _guard(task.predict, checkpoint, request)
    render.render_json(render.json_predict(result)) if as_json else render.render_predict(result)


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
    group_by: Annotated[
        str | None,
        typer.Option(
            "--group-by",
            help="Comma-separated override keys that make a configuration besides model and data (default: all "
            "but seeds and paths), e.g. --group-by model (one group per model) or --group-by model.lr.",
        ),
    ] = None,
    ignore: Annotated[
        str | None,
        typer.Option(
            "--ignore",
            help="Comma-separated override keys that never make a configuration, e.g. --ignore init_from,"
            "intent_checkpoint (runs started from their own seed's checkpoint pool into one group).",
        ),
    ] = None,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Compare runs: mean ± std over seeds per configuration, paired tests against a baseline.

    E.g. `recsys compare runs/multirun/<time> --baseline pop --plot compare.png`.
    """
    from recsys_cli.tasks import compare as task

    render.set_output(quiet, as_json)
    result = _guard(
        task.compare,
        runs,
        metrics=_comma_list(metrics),
        paired_metric=paired_metric,
        test=test,
        baseline=baseline,
        allow_mixed_protocols=allow_mixed_protocols,
        plot=plot,
        output=output,
        group_by=_comma_list(group_by),
        ignore=_comma_list(ignore),
    )
    render.render_json(render.json_compare(result)) if as_json else render.render_compare(result)


def _comma_list(text: str | None) -> list[str] | None:
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


@app.command()
def tune(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="Hydra overrides for every trial, e.g. model=sasrec data=ml100k tune=sasrec (the space, from "
            "conf/tune/); a searched key given here is pinned, e.g. model.hidden_size=64.",
            show_default=False,
            autocompletion=_complete_override,
        ),
    ] = None,
    trials: Annotated[
        int | None, typer.Option("--trials", "-n", help="Trials to add to the study (default tune.n_trials), e.g. 20.")
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", help="Study name and folder runs/tune/<name> (default <model>_<data>), e.g. lr_search."),
    ] = None,
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Search hyperparameters with Optuna on a validation metric; the same command again continues the study.

    E.g. `recsys tune model=sasrec data=ml100k tune=sasrec --trials 20`.
    """
    from recsys_cli.tasks import tune as task

    render.set_output(quiet, as_json)
    result = _guard(task.run, overrides or [], n_trials=trials, name=name, on_trial=render.render_trial)
    render.render_json(render.json_tune(result)) if as_json else render.render_tune(result)


@app.command("show")
def show_checkpoint(
    path: Annotated[
        Path,
        typer.Argument(
            help="A checkpoint (.ckpt) or a run folder of `recsys train`, e.g. runs/<run>.", show_default=False
        ),
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the same as JSON on stdout, e.g. `--json | jq .metrics`.")
    ] = False,
) -> None:
    """Show what a checkpoint holds: model, data, protocol, key metrics, epochs, config, files, version.

    E.g. `recsys show runs/<run>` or `recsys show runs/<run>/checkpoints/best.ckpt --json`.
    """
    from recsys_cli.tasks import show as task

    report = _guard(task.show, path)
    if as_json:
        render.render_json(report)
    else:
        render.render_show(report)


def main() -> None:
    app()
