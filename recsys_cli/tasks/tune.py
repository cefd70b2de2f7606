"""`recsys tune`: an Optuna search (Akiba et al. 2019, "Optuna: A Next-generation Hyperparameter
Optimization Framework") over config keys, one `recsys train` run per trial.

The space and the search settings come from the ``tune`` config group (``conf/tune/*.yaml``). Each
trial composes the base overrides plus its drawn values, trains in
``<runs_dir>/tune/<name>/trial_NNN/`` and is scored on ``tune.metric``, a validation metric of its
best checkpoint; the test metrics are recorded for the report and never reach the sampler. The study
lives in a SQLite file in the same folder, so the same command run again adds trials to it. A trial
whose process died (killed, out of memory, preempted) stops sending Optuna's heartbeat; the next run of
the study marks it failed and trains its values again.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys_cli.config import compose_config, to_container
from recsys_cli.core.resume import LAST
from recsys_cli.core.run import RunInterrupted
from recsys_cli.errors import RecsysError
from recsys_cli.io import atomic_path, atomic_write_json, atomic_write_text

TYPES = ("float", "int", "categorical")
SPEC_KEYS = {"type", "low", "high", "log", "choices"}
SAMPLERS = ("tpe", "random")
DIRECTIONS = {"max": "maximize", "min": "minimize", "maximize": "maximize", "minimize": "minimize"}
# A running trial records a heartbeat every HEARTBEAT_SECONDS; one silent for STALE_SECONDS belongs to a
# process that died, and the next `recsys tune` of the study fails it and queues its values again.
HEARTBEAT_SECONDS = 10
STALE_SECONDS = 30


@dataclass
class Param:
    """One searched override key and how to draw it."""

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None

    def suggest(self, trial: Any) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log)
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_categorical(self.key, self.choices)


@dataclass
class TuneResult:
    root: Path
    study_name: str
    storage: str
    metric: str
    direction: str
    trials: list[dict[str, Any]]
    best: dict[str, Any]
    added: int
    pinned: list[str] = field(default_factory=list)
    outputs: dict[str, Path] = field(default_factory=dict)


class _TrialFailed(Exception):
    """A trial's own configuration was unusable (e.g. heads that do not divide the width): skip it."""


def search_space(params: dict[str, Any], prefix: str = "") -> list[Param]:
    """Flatten ``tune.params``: every mapping with a ``type`` is one entry, keyed by its path; null is none."""
    space = []
    for name, node in params.items():
        key = f"{prefix}{name}"
        if node is None:  # how a space that extends another leaves an entry out
            continue
        if not isinstance(node, dict):
            raise RecsysError(f"tune.params.{key} must be a mapping such as {{type: float, low: 0.0, high: 0.5}}.")
        space.extend([_param(key, node)] if "type" in node else search_space(node, prefix=f"{key}."))
    return space


def _param(key: str, spec: dict[str, Any]) -> Param:
    where = f"tune.params.{key}"
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise RecsysError(f"{where} has unknown field '{unknown[0]}'; use {', '.join(sorted(SPEC_KEYS))}.")
    param_type = spec["type"]
    if param_type not in TYPES:
        raise RecsysError(f"{where}.type is '{param_type}'; choose one of: {', '.join(TYPES)}.")
    if param_type == "categorical":
        if not isinstance(spec.get("choices"), list) or not spec["choices"]:
            raise RecsysError(f"{where} is categorical and needs a non-empty list, e.g. choices: [32, 64].")
        return Param(key, param_type, choices=list(spec["choices"]))
    low, high, log = spec.get("low"), spec.get("high"), bool(spec.get("log", False))
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low > high:
        raise RecsysError(f"{where} needs numbers low <= high, e.g. {{type: {param_type}, low: 1, high: 3}}.")
    if log and low <= 0:
        raise RecsysError(f"{where} has log: true, so low must be above 0 (got {low}).")
    return Param(key, param_type, low, high, log)


def override_value(value: Any) -> str:
    """A drawn value as Hydra override text (``null``, ``true``, ``0.001``, ``'a b'``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str) and not re.fullmatch(r"[\w./@:+-]+", value):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value)


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def run(
    overrides: list[str] | None = None,
    n_trials: int | None = None,
    name: str | None = None,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
) -> TuneResult:
    """Add ``n_trials`` (default ``tune.n_trials``) trials to the study and report its best trial so far."""
    import optuna

    from recsys_cli.tasks import train

    overrides = list(overrides or [])
    cfg = compose_config(overrides)  # a bad base config fails here, before any trial
    settings = cfg.tune
    metric, direction = str(settings.metric), str(settings.direction)
    if not metric.startswith("val/"):
        raise RecsysError(
            f"tune.metric={metric} is not a validation metric; test data never guides the search: "
            "pass e.g. tune.metric=val/ndcg@10."
        )
    if direction not in DIRECTIONS:
        raise RecsysError(f"tune.direction={direction}; choose one of: {', '.join(DIRECTIONS)}.")
    direction = DIRECTIONS[direction]
    n_trials = int(settings.n_trials if n_trials is None else n_trials)
    if n_trials < 0:
        raise RecsysError(f"--trials must be 0 or more (got {n_trials}); 0 only reports the study.")
    name = str(name or settings.study.name or f"{cfg.model.name}_{cfg.data.name}")
    if not re.fullmatch(r"[\w.@+-]+", name):
        raise RecsysError(f"study name '{name}' must be a plain folder name (letters, digits, . _ - + @).")

    given = {override_key(o) for o in overrides}
    space = search_space(to_container(settings.params))
    pinned = [p.key for p in space if p.key in given]
    space = [p for p in space if p.key not in given]
    _check_space(cfg, space)

    root = Path(cfg.paths.runs_dir) / "tune" / name
    root.mkdir(parents=True, exist_ok=True)
    storage = str(settings.study.storage or f"sqlite:///{(root / 'study.db').resolve()}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=_storage(storage), load_if_exists=True, direction=direction)
    trained = sorted(o for o in overrides if not override_key(o).startswith("tune"))
    _check_resume(study, name, metric, direction, trained)
    study.sampler = _sampler(settings.sampler, offset=len(study.trials))
    _queue_interrupted(study)
    if settings.get("start_from_config", False):
        baseline = config_values(cfg, space)
        # Also when the study's first (baseline) trial was interrupted: it has no other chance to run.
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
        if baseline and not study.get_trials(deepcopy=False, states=states):
            study.enqueue_trial(baseline)

    def objective(trial: Any) -> float:
        values = {param.key: param.suggest(trial) for param in space}
        drawn = [f"{key}={override_value(value)}" for key, value in values.items()]
        job = [*overrides, *drawn]
        trial.set_user_attr("overrides", drawn)
        earlier = _same_trial(trial.study, values)
        if earlier is not None:
            # The study's seed and base config are fixed, so the same values would train the same model:
            # record the earlier trial's result instead (a categorical space is often drawn again).
            for key in ("run_dir", "valid", "test", "fit_seconds"):
                trial.set_user_attr(key, earlier.user_attrs.get(key))
            trial.set_user_attr("repeat_of", earlier.number)
            return float(earlier.value)
        run_dir, resume_from = _trial_folder(trial, root)
        trial.set_user_attr("run_dir", str(run_dir))
        try:
            result = train.run(compose_config(job), run_dir=run_dir, overrides=job, resume_from=resume_from)
        except RunInterrupted as exc:  # Ctrl-C: the study stops; its next run resumes this trial
            trial.set_user_attr("interrupted", True)
            how = "run the same `recsys tune` command again to resume this trial and continue the study"
            raise RunInterrupted(exc.run_dir, run_dir / "checkpoints" / LAST, how) from None
        except RecsysError as exc:
            trial.set_user_attr("error", exc.message)
            raise _TrialFailed(exc.message) from None
        valid, test = result.metrics.get("valid", {}), result.metrics.get("test", {})
        if metric not in valid:
            raise RecsysError(
                f"tune.metric={metric} is not among the validation metrics of model={cfg.model.name}; "
                f"choose one of: {', '.join(sorted(valid))}."
            )
        trial.set_user_attr("valid", valid)
        trial.set_user_attr("test", test)  # reported only: the sampler sees the returned value alone
        trial.set_user_attr("fit_seconds", result.metrics.get("fit_seconds"))
        return float(valid[metric])

    callbacks = [lambda _study, frozen: on_trial(trial_row(frozen, metric))] if on_trial else []
    study.optimize(objective, n_trials=n_trials, catch=(_TrialFailed,), callbacks=callbacks, gc_after_trial=True)

    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        errors = [t.user_attrs["error"] for t in study.trials if "error" in t.user_attrs]
        why = errors[0] if errors else "none has run yet (pass --trials 1 or more)"
        raise RecsysError(f"no trial of study '{name}' completed: {why}")
    best = _best_summary(study.best_trial, name, storage, metric, direction, overrides)
    best.update(n_trials=len(study.trials), completed=len(completed))
    result = TuneResult(
        root=root,
        study_name=name,
        storage=storage,
        metric=metric,
        direction=direction,
        trials=[trial_row(t, metric) for t in study.trials],
        best=best,
        added=n_trials,
        pinned=pinned,
    )
    result.outputs = _write_outputs(result)
    return result


def config_values(cfg: Any, space: list[Param]) -> dict[str, Any]:
    """The config's own values of the searched keys that lie inside their ranges (a baseline trial)."""
    from omegaconf import OmegaConf

    values = {}
    for param in space:
        value = OmegaConf.select(cfg, param.key, default=None, throw_on_missing=False)
        if param.type == "categorical":
            inside = value in param.choices
        else:
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            inside = number and param.low <= value <= param.high and (param.type == "float" or value == int(value))
        if inside:
            values[param.key] = value
    return values


def _queue_interrupted(study: Any) -> None:
    """Queue again, once, the values of every trial stopped by Ctrl-C, so the study's next run resumes it."""
    import optuna

    queued = {t.user_attrs.get("resume_of") for t in study.trials}
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
        if trial.user_attrs.get("interrupted") and trial.number not in queued:
            study.enqueue_trial(
                trial.params, user_attrs={"resume_of": trial.number, "run_dir": trial.user_attrs.get("run_dir")}
            )


def _trial_folder(trial: Any, root: Path) -> tuple[Path, Path | None]:
    """A trial's run folder, and the ``last.ckpt`` to resume from when it repeats a trial that was killed
    (its heartbeat stopped) or interrupted: that trial's folder then continues from its last finished epoch.

    Such a repeat carries the user attributes of the trial it repeats, ``run_dir`` among them.
    """
    from recsys_cli.core.resume import resume_point

    earlier = trial.user_attrs.get("run_dir")
    if earlier:
        try:
            point = resume_point(earlier)
            return point.run_dir, point.checkpoint
        except RecsysError:
            pass  # it left nothing to resume from: trained anew in its own folder
    return root / f"trial_{trial.number:03d}", None


def _same_trial(study: Any, values: dict[str, Any]) -> Any:
    """A completed trial of ``study`` that drew exactly ``values`` (and trained), or None."""
    import optuna

    for earlier in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if earlier.params == values and "repeat_of" not in earlier.user_attrs:
            return earlier
    return None


def _check_space(cfg: Any, space: list[Param]) -> None:
    from omegaconf import OmegaConf

    if not space:
        raise RecsysError(
            "nothing to search: tune.params is empty or every key is pinned by an override; "
            "pick a space with tune=<name> (e.g. tune=sasrec) or unpin a key."
        )
    absent = object()
    for param in space:
        if OmegaConf.select(cfg, param.key, default=absent, throw_on_missing=False) is absent:
            raise RecsysError(
                f"tune.params.{param.key}: {param.key} is not a key of this config (model={cfg.model.name}); "
                f"pick a space for this model (tune=<name>) or drop it with tune.params.{param.key}=null."
            )


def _check_resume(study: Any, name: str, metric: str, direction: str, trained: list[str]) -> None:
    """A resumed study must tune the same configuration towards the same goal; a new one records it."""
    attrs = study.user_attrs
    if not attrs:
        study.set_user_attr("metric", metric)
        study.set_user_attr("overrides", trained)
        return
    found_direction = study.direction.name.lower()
    if attrs.get("metric") != metric or found_direction != direction:
        raise RecsysError(
            f"study '{name}' optimises {attrs.get('metric')} ({found_direction}), not {metric} ({direction}); "
            "keep its settings to continue it, or start another with --name NAME."
        )
    if attrs.get("overrides") != trained:
        before, now = set(attrs.get("overrides", [])), set(trained)
        changes = [f"+{o}" for o in sorted(now - before)] + [f"-{o}" for o in sorted(before - now)]
        raise RecsysError(
            f"study '{name}' was started with other overrides ({' '.join(changes)}), so its trials would not "
            "compare; pass the same overrides to continue it, or start another study with --name NAME."
        )


def _storage(url: str) -> Any:
    """The study's database (``url``, by default a SQLite file) with a heartbeat: a trial of a process that
    died is failed and queued again (once) by the next run of the study."""
    import warnings

    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():  # the heartbeat has been "experimental" since Optuna 2.8 (2021)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=STALE_SECONDS,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
        )


def _sampler(settings: Any, offset: int) -> Any:
    import optuna

    sampler = str(settings.kind)
    if sampler not in SAMPLERS:
        raise RecsysError(f"tune.sampler.kind={sampler}; choose one of: {', '.join(SAMPLERS)}.")
    # Offset by the trials already in the study, so a resumed search does not redraw its first values.
    seed = None if settings.seed is None else int(settings.seed) + offset
    if sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=int(settings.n_startup_trials))


ROW_COLUMNS = ("trial", "state", "fit_seconds", "run_dir", "error")


def param_columns(row: dict[str, Any]) -> list[str]:
    """The searched keys among a :func:`trial_row`'s columns (the others are fixed or metrics)."""
    return [key for key in row if key not in ROW_COLUMNS and "/" not in key]


def trial_row(trial: Any, metric: str) -> dict[str, Any]:
    """One line of the trials table: number, state, drawn values, objective, its test twin, folder."""
    test_metric = "test/" + metric.split("/", 1)[1]
    return {
        "trial": trial.number,
        "state": trial.state.name.lower(),
        **trial.params,
        metric: trial.value,
        test_metric: trial.user_attrs.get("test", {}).get(test_metric),
        "fit_seconds": trial.user_attrs.get("fit_seconds"),
        "run_dir": trial.user_attrs.get("run_dir"),
        "repeat_of": trial.user_attrs.get("repeat_of"),
        "error": trial.user_attrs.get("error"),
    }


def _best_summary(
    trial: Any, name: str, storage: str, metric: str, direction: str, overrides: list[str]
) -> dict[str, Any]:
    job = [*overrides, *trial.user_attrs["overrides"]]
    return {
        "study": name,
        "storage": storage,
        "metric": metric,
        "direction": direction,
        "trial": trial.number,
        "value": trial.value,
        "params": dict(trial.params),
        "overrides": trial.user_attrs["overrides"],
        "command": shlex.join(["recsys", "train", *job]),
        "run_dir": trial.user_attrs["run_dir"],
        "valid": trial.user_attrs.get("valid", {}),
        "test": trial.user_attrs.get("test", {}),
    }


def _write_outputs(result: TuneResult) -> dict[str, Path]:
    """``trials.csv``, ``best.json`` (overrides, command, metrics) and ``best.yaml`` (its resolved config)."""
    import pandas as pd

    outputs = {name: result.root / name for name in ("trials.csv", "best.json", "best.yaml")}
    with atomic_path(outputs["trials.csv"]) as tmp:
        pd.DataFrame(result.trials).to_csv(tmp, index=False)
    atomic_write_json(outputs["best.json"], result.best)
    atomic_write_text(outputs["best.yaml"], (Path(result.best["run_dir"]) / "config.yaml").read_text())
    return outputs
