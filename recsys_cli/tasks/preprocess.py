"""`recsys preprocess`: build (or reuse) the processed folder of the configured dataset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from recsys_cli.data.preprocess import PreprocessConfig, Processed, prepare


@dataclass
class PreprocessResult:
    processed: Processed
    reused: bool

    @property
    def stats(self) -> dict[str, Any]:
        return self.processed.meta


def preprocess_config(data_cfg: DictConfig) -> PreprocessConfig:
    return PreprocessConfig(
        rating_threshold=data_cfg.preprocess.rating_threshold,
        min_user_interactions=int(data_cfg.preprocess.min_user_interactions),
        min_item_interactions=int(data_cfg.preprocess.min_item_interactions),
        split=str(data_cfg.split.kind),
        valid_ratio=float(data_cfg.split.valid_ratio),
        test_ratio=float(data_cfg.split.test_ratio),
        # Configs stored in checkpoints written before the key existed have no seed: 0, its default.
        split_seed=int(data_cfg.split.get("seed", 0)),
    )


def build_source(data_cfg: DictConfig) -> Any:
    from recsys_cli.config import build

    return build(data_cfg.source, f"the data source of data={data_cfg.name}", "check the data.source keys.")


def prepare_data(
    cfg: DictConfig, item_vocab: list[str] | None = None, force: bool = False, user_vocab: list[str] | None = None
) -> PreprocessResult:
    source = build_source(cfg.data)
    processed, reused = prepare(
        str(cfg.data.name),
        source,
        preprocess_config(cfg.data),
        cfg.paths.data_dir,
        item_vocab=item_vocab,
        force=force,
        user_vocab=user_vocab,
    )
    return PreprocessResult(processed=processed, reused=reused)


def run(cfg: DictConfig, force: bool = False) -> Any:
    """The processed interaction log, or for a text-only dataset its cleaned and split texts."""
    if cfg.data.get("source") is None and cfg.data.get("text") is not None:
        from recsys_cli.tasks.text import load_text_splits

        return load_text_splits(cfg)
    return prepare_data(cfg, force=force)
