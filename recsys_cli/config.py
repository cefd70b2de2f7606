"""Composing Hydra configs from command-line overrides, run folders and sweep expansion.

Typer owns the command line, so Hydra is used through its Compose API. That API has no run folders,
no logging setup and no ``--multirun``; this module provides the three: :func:`compose_config`,
:func:`make_run_dir` and :func:`expand_sweep` (built on Hydra's own overrides parser, so sweep
syntax such as ``model=pop,sasrec seed=range(1,4)`` means what it means in Hydra). The config is typed
by the dataclasses in :mod:`recsys_cli.schema`, so a value of the wrong type fails while composing.
"""

from __future__ import annotations

import difflib
import itertools
import re
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from recsys_cli.errors import RecsysError
from recsys_cli.io import ensure_folder

CONFIG_NAME = "config"


def config_dir() -> Path:
    """The folder of Hydra YAML: inside the installed package, or the repository's ``conf/``."""
    packaged = Path(__file__).parent / "conf"
    if packaged.is_dir():
        return packaged
    repo = Path(__file__).resolve().parents[1] / "conf"
    if repo.is_dir():
        return repo
    raise RecsysError("recsys cannot find its config folder; reinstall the package (pip install recsys).")


def group_options(group: str) -> list[str]:
    """Names selectable for a config group, e.g. ``group_options('model') -> ['pop', 'sasrec']``."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


LISTED_GROUPS = ("data", "model", "trainer", "logger")


def describe_options(group: str) -> list[tuple[str, str]]:
    """``(name, first sentence of the YAML's leading comment)`` for each option of a config group."""
    if group not in LISTED_GROUPS:
        raise RecsysError(f"unknown config group '{group}'; use one of: {', '.join(LISTED_GROUPS)}.")
    rows = []
    for name in group_options(group):
        comment = []
        for line in (config_dir() / group / f"{name}.yaml").read_text(encoding="utf-8").splitlines():
            if not line.startswith("#"):
                break
            comment.append(line.lstrip("#").strip())
        text = " ".join(comment)
        sentence = re.split(r"(?<!\bal)(?<!e\.g)(?<!i\.e)\.\s", text, maxsplit=1)[0].rstrip(".")  # not at "et al."
        rows.append((name, sentence[:157] + "..." if len(sentence) > 160 else sentence))
    return rows


def complete_override(previous: list[str], incomplete: str) -> list[str]:
    """Shell completion of a config choice: ``model=sa`` → ``model=sasrec`` (zsh, fish). Bash splits words at
    ``=``, so there the word is ``sa`` after ``previous`` words ``model`` and ``=``, and the completion ``sasrec``."""
    groups = [path.name for path in config_dir().iterdir() if path.is_dir()]
    if "=" in incomplete:
        group, prefix = incomplete.split("=", 1)
        choices = group_options(group) if group in groups else []
        return [f"{group}={name}" for name in choices if name.startswith(prefix)]
    if len(previous) >= 2 and previous[-1] == "=" and previous[-2] in groups:
        return [name for name in group_options(previous[-2]) if name.startswith(incomplete)]
    return []


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """Compose ``conf/config.yaml`` with Hydra overrides; user mistakes become :class:`RecsysError`."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException, ValidationError

    overrides = list(overrides or [])
    register_schemas()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="recsys"):
            cfg = compose(config_name=CONFIG_NAME, overrides=overrides)
    except MissingConfigException as exc:
        raise RecsysError(_missing_option_message(str(exc))) from None
    except (HydraException, OmegaConfBaseException) as exc:
        wrong_type = _cause(exc, ValidationError)
        raise RecsysError(_type_message(wrong_type) or _override_message(str(exc))) from None
    try:
        OmegaConf.resolve(cfg)  # typed keys check what their interpolations give here
        missing = sorted(OmegaConf.missing_keys(cfg), key=len)
    except MissingMandatoryValue as exc:
        found = re.search(r"Missing mandatory value: ([\w.]+)", str(exc))
        missing = [found.group(1) if found else "a required key"]
    except ValidationError as exc:
        raise RecsysError(_type_message(exc) or f"config cannot be resolved: {_first_line(str(exc))}.") from None
    except OmegaConfBaseException as exc:
        raise RecsysError(f"config cannot be resolved: {_first_line(str(exc))}; check the overrides.") from None
    if missing:
        raise RecsysError(f"{missing[0]} is required for data={cfg.data.get('name', '?')}; pass {missing[0]}=<value>.")
    return cfg


def register_schemas() -> None:
    """Store the typed schemas (:mod:`recsys_cli.schema`) where the YAML's defaults lists name them."""
    from hydra.core.config_store import ConfigStore

    from recsys_cli.schema import SCHEMAS

    store = ConfigStore.instance()
    for group, name, node in SCHEMAS:
        store.store(group=group, name=name, node=node)


def _cause(exc: BaseException, kind: type[BaseException]) -> Any:
    """The first exception of ``kind`` in ``exc``'s chain (Hydra wraps OmegaConf's errors)."""
    seen: BaseException | None = exc
    while seen is not None and not isinstance(seen, kind):
        seen = seen.__cause__ or seen.__context__
    return seen


def _type_message(exc: Any) -> str | None:
    """``seed must be an integer, not 'abc'; pass e.g. seed=10.`` for a value of the wrong type, else None."""
    import dataclasses
    import typing

    key = getattr(exc, "full_key", None) or ""
    owner = getattr(exc, "object_type", None)
    if exc is None or not key:
        return None
    item = re.fullmatch(r"(.+)\[(\d+)\]", key)  # an element of a typed list: eval.ks[1]
    if item:
        key, expected = item.group(1), getattr(exc, "ref_type", None)
    elif dataclasses.is_dataclass(owner):
        expected = typing.get_type_hints(owner).get(key.rsplit(".", 1)[-1])
    else:
        return None
    kind, example = _type_words(expected)
    if kind is None:
        return None
    value = exc.value
    shown = "null" if value is None else "a group of keys" if isinstance(value, dict) else repr(value)
    if item:
        shown += f" (item {item.group(2)})"
    if dataclasses.is_dataclass(expected):
        fields = [field.name for field in dataclasses.fields(expected)]
        return f"{key} is {kind} ({', '.join(fields)}), not {shown}; set one of them, e.g. {key}.{fields[0]}=..."
    interpolation = re.search(r"dereferencing interpolation '([^']+)'", str(exc))
    if interpolation:  # the value came from another key through an interpolation
        shown += f" (from {interpolation.group(1)})"
    return f"{key} must be {kind}, not {shown}; pass e.g. {key}={example}."


def _type_words(expected: Any) -> tuple[str | None, str]:
    """How an error names a schema type, and an example value of it (``None`` for an untyped key)."""
    import dataclasses
    import typing

    args = [arg for arg in typing.get_args(expected) if arg is not type(None)]
    if type(None) in typing.get_args(expected) and len(args) == 1:  # X | None
        kind, example = _type_words(args[0])
        return (f"{kind} or null" if kind else None), example
    if typing.get_origin(expected) is list and args and args[0] in _TYPE_WORDS:
        _, plural, example = _TYPE_WORDS[args[0]]
        return f"a list of {plural}", f"[{example}]"
    if dataclasses.is_dataclass(expected):
        return "a group of keys", ""
    kind, _, example = _TYPE_WORDS.get(expected, (None, "", ""))
    return kind, example


_TYPE_WORDS = {  # type: (one, several, an example)
    int: ("an integer", "integers", "10"),
    float: ("a number", "numbers", "0.1"),
    bool: ("true or false", "booleans", "true"),
    str: ("a string", "strings", "text"),
}


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _missing_option_message(text: str) -> str:
    match = re.search(r"Could not find '([\w-]+)/([^']+)'", text)
    if match:
        group, name = match.groups()
        choices = group_options(group)
        closest = difflib.get_close_matches(name, choices, n=1, cutoff=0.0) or choices or ["<name>"]
        options = ", ".join(choices) or "none"
        return f"unknown {group} '{name}'; choose one of: {options} (e.g. {group}={closest[0]})."
    return f"{_first_line(text)}; check the config group names (data, model, trainer, logger)."


def _override_message(text: str) -> str:
    match = re.search(r"Key '([^']+)' is not in struct", text) or re.search(r"Could not override '([^']+)'", text)
    if match:
        return (
            f"unknown config key '{match.group(1)}'; check its spelling, or add it with '+{match.group(1)}=...'"
            " if it is meant to be new."
        )
    return f"bad override: {_first_line(text)}; overrides look like key=value (e.g. trainer.max_epochs=3)."


def expand_sweep(overrides: list[str]) -> list[list[str]]:
    """Expand Hydra sweep syntax into one override list per job (cartesian product, in order)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        raise RecsysError(_override_message(str(exc))) from None
    choices = []
    for override in parsed:
        if override.is_sweep_override():
            key = override.get_key_element()
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            choices.append([override.input_line])
    return [list(job) for job in itertools.product(*choices)]


def run_name(cfg: DictConfig) -> str:
    """``<time>_<model>_<data>`` unless ``run.name`` is set."""
    if cfg.run.name:
        return str(cfg.run.name)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")[:-3]
    return f"{stamp}_{model_name(cfg)}_{cfg.data.name}"


def model_name(cfg: DictConfig) -> str:
    return str(cfg.model.name)


def make_run_dir(cfg: DictConfig, parent: Path | None = None) -> Path:
    """Create the run folder (under ``paths.runs_dir`` or ``parent``) and save the resolved config."""
    root = Path(parent) if parent is not None else Path(cfg.paths.runs_dir)
    run_dir = root / run_name(cfg)
    if cfg.run.name and run_dir.exists():
        shutil.rmtree(run_dir)  # a fixed name means "this run replaces the last one of that name"
    ensure_folder(run_dir)
    save_config(cfg, run_dir / "config.yaml")
    return run_dir


def save_config(cfg: DictConfig, path: Path) -> None:
    from recsys_cli.io import atomic_write_text

    atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))


def to_container(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def build(node: Any, what: str, fix: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node, **kwargs)``; a failure becomes one line naming ``what`` and ``fix``.

    A :class:`RecsysError` raised by the object's own constructor passes through unchanged.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs, _convert_="all")
    except InstantiationException as exc:
        if isinstance(exc.__cause__, RecsysError):
            raise exc.__cause__ from None
        raise RecsysError(f"cannot build {what}: {str(exc).splitlines()[0]}; {fix}") from None
