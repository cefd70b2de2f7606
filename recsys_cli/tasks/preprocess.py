"""`recsys preprocess`: build (or reuse) the processed folder of the configured dataset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from recsys_cli.data.preprocess import PreprocessConfig, Processed, prepare
from recsys_cli.errors import RecsysError


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
    )


def build_source(data_cfg: DictConfig) -> Any:
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(data_cfg.source, _convert_="all")
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, RecsysError):
            raise cause from None
        raise RecsysError(
            f"cannot build the data source of data={data_cfg.name}: {str(exc).splitlines()[0]}; "
            "check the data.source keys."
        ) from None


def prepare_data(cfg: DictConfig, item_vocab: list[str] | None = None, force: bool = False) -> PreprocessResult:
    source = build_source(cfg.data)
    processed, reused = prepare(
        str(cfg.data.name), source, preprocess_config(cfg.data), cfg.paths.data_dir, item_vocab=item_vocab, force=force
    )
    return PreprocessResult(processed=processed, reused=reused)


def run(cfg: DictConfig, force: bool = False) -> PreprocessResult:
    return prepare_data(cfg, force=force)
