"""`recsys preprocess`: build (or reuse) the processed folder of the configured dataset."""

from __future__ import annotations

from omegaconf import DictConfig

from recsys_cli.core.family import Prepared


def run(cfg: DictConfig, force: bool = False) -> Prepared:
    """The processed data of ``cfg.data`` as the configured model's family reads it.

    A dataset that family cannot read (``recsys preprocess data=banking77`` with the default
    recommender) is processed by the family that can: the data decides what there is to process.
    """
    from recsys_cli.core.family import all_families, family_for
    from recsys_cli.core.run import start_task

    start_task()
    family = family_for(cfg)
    if not family.reads(cfg.data):
        family = next((other for other in all_families() if other.reads(cfg.data)), family)
    return family.prepare(cfg, force=force)
