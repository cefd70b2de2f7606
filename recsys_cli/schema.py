"""Typed schemas of the config: the top level, the ``data`` group and the ``trainer`` group.

The YAML under ``conf/`` holds the values and the comments that document them; these dataclasses
hold only types (every field is ``MISSING``), so a mistyped value (``seed=abc``,
``trainer.max_epochs=abc``, ``data.batch_size=x``) fails when the config is composed, naming the
key. :func:`recsys_cli.config.compose_config` stores them in Hydra's ConfigStore under
``schema/...`` (:data:`SCHEMAS`); each YAML names its schema first in its defaults list, e.g.
``/schema/data/interactions@_here_``.

``Any`` marks what stays untyped: a model's keys are its constructor's, ``_target_``-built sources
take their class's arguments, and the logger and tune groups are free-form. It also marks the few
values that Lightning or the data code take in more than one type (``devices: 1`` or ``auto``;
``limit_train_batches: 1.0`` or ``2``); OmegaConf 2.3 has no ``Union``.

Dataclasses only: this module is imported while composing, which ``recsys --help`` never does, and it
must never import torch or Lightning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


@dataclass
class PathsConfig:
    data_dir: str = MISSING
    runs_dir: str = MISSING


@dataclass
class RunConfig:
    name: str | None = MISSING


@dataclass
class TrainConfig:
    monitor: str = MISSING
    mode: str = MISSING
    patience: int = MISSING
    min_delta: float = MISSING
    resumable: bool = MISSING
    keep_last: bool = MISSING


@dataclass
class EvalConfig:
    ks: list[int] = MISSING
    mask_history: bool = MISSING
    ranking: str = MISSING
    num_negatives: int = MISSING
    negatives: str = MISSING
    negative_seed: int = MISSING
    cold_start_items: float = MISSING
    cold_start_seed: int = MISSING
    query_only: bool = MISSING
    oos_queries: str | None = MISSING


@dataclass
class Config:
    """``conf/config.yaml``; each group's node is typed by the schema its own YAML names (or not at all)."""

    seed: int = MISSING
    threads: Any = MISSING  # "auto" or a number (checked when a task starts)
    paths: PathsConfig = field(default_factory=PathsConfig)
    run: RunConfig = field(default_factory=RunConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    data: Any = MISSING
    model: Any = MISSING
    trainer: Any = MISSING
    logger: Any = MISSING
    tune: Any = MISSING


@dataclass
class PreprocessConfig:
    # A number or null; Any keeps an integer threshold an integer, as the processed-data fingerprint hashed it.
    rating_threshold: Any = MISSING
    min_user_interactions: int = MISSING
    min_item_interactions: int = MISSING


@dataclass
class SplitConfig:
    kind: str = MISSING
    valid_ratio: float = MISSING
    test_ratio: float = MISSING
    seed: int = MISSING


@dataclass
class TextConfig:
    source: Any = MISSING
    valid_ratio: float = MISSING
    test_ratio: float = MISSING
    split_seed: int = MISSING
    dedupe: bool = MISSING
    unknown_labels: float = MISSING
    max_length: int = MISSING
    batch_size: int = MISSING
    eval_batch_size: int = MISSING
    num_workers: int = MISSING
    group_by_length: bool = MISSING


@dataclass
class DataConfig:
    name: str = MISSING
    path: str | None = MISSING


@dataclass
class InteractionData(DataConfig):
    """A dataset with an interaction log, for recommenders (``conf/data/base/interactions.yaml``)."""

    source: Any = MISSING
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    max_len: int = MISSING
    window_stride: int | None = MISSING
    batch_size: int = MISSING
    eval_batch_size: int = MISSING
    num_workers: int = MISSING
    group_by_length: bool = MISSING


@dataclass
class TextData(DataConfig):
    """A dataset of texts with labels, for text models (``conf/data/base/text.yaml``)."""

    text: TextConfig = field(default_factory=TextConfig)


@dataclass
class InteractionTextData(InteractionData):
    """An interaction log with texts too (amazon_reviews, synthetic)."""

    text: TextConfig = field(default_factory=TextConfig)


@dataclass
class TrainerConfig:
    """``conf/trainer/cpu.yaml``: pytorch_lightning.Trainer arguments."""

    _target_: str = MISSING
    accelerator: str = MISSING
    devices: Any = MISSING  # a count, a list of device ids, or auto
    max_epochs: int = MISSING
    max_time: str | None = MISSING  # a wall-clock limit, "DD:HH:MM:SS"
    precision: Any = MISSING  # Lightning takes 32-true, bf16-mixed, 16, ... (strings and integers)
    gradient_clip_val: float | None = MISSING
    check_val_every_n_epoch: int | None = MISSING
    log_every_n_steps: int = MISSING
    num_sanity_val_steps: int = MISSING
    limit_train_batches: Any = MISSING  # a fraction (float) or a count (int) of batches
    limit_val_batches: Any = MISSING
    limit_test_batches: Any = MISSING
    enable_progress_bar: bool = MISSING
    enable_model_summary: bool = MISSING
    deterministic: Any = MISSING  # true, false, or warn


@dataclass
class DDPTrainerConfig(TrainerConfig):
    """``conf/trainer/ddp.yaml``: a strategy and a node count on top of the single-device arguments."""

    strategy: str = MISSING
    num_nodes: int = MISSING


# (ConfigStore group, name, schema): a YAML names one as /<group>/<name>@_here_ in its defaults list.
SCHEMAS: tuple[tuple[str, str, type], ...] = (
    ("schema", "config", Config),
    ("schema/data", "interactions", InteractionData),
    ("schema/data", "text", TextData),
    ("schema/data", "interactions_text", InteractionTextData),
    ("schema/trainer", "trainer", TrainerConfig),
    ("schema/trainer", "ddp", DDPTrainerConfig),
)
