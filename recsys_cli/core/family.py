"""The interface a model family implements to run on the core: :class:`ModelFamily`.

A family (recommenders, text models, ...) is a set of models that share their data, their evaluation and
their predictions. The run core (:mod:`recsys_cli.core.run`) owns everything else — run folders, the
trainer, callbacks, fit-then-test, metrics files, checkpoints — and asks the family only for the parts
below. Each model class names its family by a dotted path (its ``family`` attribute), so the family is
chosen once, from ``model._target_`` (or from a checkpoint's config), and the core never imports one.

A new family (a graph model that needs the training edges, say) is one module under
``recsys_cli/families/`` implementing this class, plus its models naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from recsys_cli.errors import RecsysError

if TYPE_CHECKING:
    import pytorch_lightning as pl

    from recsys_cli.data.spec import DataSpec


@dataclass
class Prepared:
    """A family's processed data, as the core passes it around.

    ``content``: the family's own object (a processed interaction log, split texts, ...); ``spec``: the
    typed description every model is built from; ``path``: the processed folder; ``fingerprint``: of the
    input and everything that decided the processing; ``summary``: rows for the `preprocess` table;
    ``same_as_checkpoint``: when reopened for a checkpoint, whether this is the data it was trained on.
    """

    name: str
    content: Any
    spec: DataSpec
    path: Path | None
    fingerprint: str
    reused: bool = False
    title: str = ""
    summary: list[tuple[str, str]] = field(default_factory=list)
    same_as_checkpoint: bool | None = None
    info: dict[str, Any] = field(default_factory=dict)  # family-specific entries for eval's metrics.json


@dataclass
class PredictRequest:
    """What `recsys predict` was asked; each family checks the options it does not use."""

    output: Path
    input_path: Path | None = None
    all_users: bool = False
    top_k: int = 10
    exclude_seen: bool = True
    batch_size: int | None = None
    progress: bool = False
    text_column: str = "text"
    embeddings: Path | None = None
    explain: bool = False
    int8: bool = False  # text models: int8 dynamic quantisation of the encoder's linear layers (CPU inference)

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        self.input_path = None if self.input_path is None else Path(self.input_path)
        self.embeddings = Path(self.embeddings) if self.embeddings else None


@dataclass
class PredictResult:
    output: Path
    rows: int
    counts: dict[str, int | str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def users_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


class ModelFamily:
    """What the run core needs from a family of models; one instance per run."""

    kind: str = ""  # written into checkpoints: `recsys eval/predict` name it in their messages

    # --- data -----------------------------------------------------------------------------------
    def reads(self, data_cfg: DictConfig) -> bool:
        """Whether the dataset configured by ``data_cfg`` has what this family trains on."""
        raise NotImplementedError

    def missing_data_message(self, cfg: DictConfig) -> str:
        """The one-line error when ``cfg.data`` lacks what this family trains on (``reads`` is false)."""
        return f"data={cfg.data.name} has nothing model={cfg.model.name} can train on; choose another dataset."

    def prepare(self, cfg: DictConfig, force: bool = False) -> Prepared:
        """Build (or reuse) the processed folder of ``cfg.data`` and describe it."""
        raise NotImplementedError

    def reopen(self, cfg: DictConfig, checkpoint: dict[str, Any]) -> Prepared:
        """The data to evaluate a checkpoint on: its own processed folder when ``cfg.data`` is the
        training data (no raw files needed), otherwise ``cfg.data`` read through the checkpoint's maps."""
        raise NotImplementedError

    def datamodule(self, cfg: DictConfig, data: Prepared, model: pl.LightningModule) -> pl.LightningDataModule:
        raise NotImplementedError

    # --- training and evaluation ------------------------------------------------------------------
    def before_fit(self, cfg: DictConfig, model: pl.LightningModule, datamodule: Any) -> dict[str, Any]:
        """Work done once before training (e.g. caching a frozen encoder's outputs); metrics.json entries."""
        return {}

    def evaluator(self, cfg: DictConfig, data: Prepared, checkpoint: dict[str, Any] | None = None) -> pl.Callback:
        """The callback that measures validation/test batches into ``results['val'|'test']``."""
        raise NotImplementedError

    def protocol(self, cfg: DictConfig, data: Prepared) -> dict[str, Any]:
        """How the model is evaluated (``description`` is printed under every metrics table)."""
        raise NotImplementedError

    def checkpoint_data(self, cfg: DictConfig, data: Prepared, datamodule: Any) -> dict[str, Any]:
        """What eval and predict need beyond the weights and the spec (id maps, label names, ...)."""
        raise NotImplementedError

    def reports(
        self, folder: Path, evaluator: Any, data: Prepared, model: pl.LightningModule, metrics: dict[str, Any]
    ) -> dict[str, Any]:
        """Files written after testing (per-user metrics, per-class report, ...); metrics.json entries."""
        return {}

    def baselines(self, cfg: DictConfig, data: Prepared) -> dict[str, dict[str, float]]:
        """`recsys eval --baselines`: test metrics of the untrained references this family compares with."""
        raise RecsysError(f"--baselines is not available for {self.kind} checkpoints; drop the option.")

    # --- inference --------------------------------------------------------------------------------
    def predict(self, checkpoint: dict[str, Any], request: PredictRequest) -> PredictResult:
        raise NotImplementedError


def family_of_class(model_class: type) -> ModelFamily:
    """The family a model class names (``family``: a dotted path to a :class:`ModelFamily` subclass)."""
    from hydra.utils import get_class

    path = getattr(model_class, "family", None)
    if not path:
        raise RecsysError(
            f"model class {model_class.__name__} names no model family; give it a `family` attribute "
            "(e.g. recsys_cli.families.recommender.RecommenderFamily)."
        )
    return get_class(path)()


def family_for(cfg: DictConfig) -> ModelFamily:
    """The family of ``cfg.model`` (its class says which)."""
    from hydra.utils import get_class

    try:
        model_class = get_class(cfg.model._target_)
    except Exception:
        raise RecsysError(
            f"model={cfg.model.get('name')} names an unknown class '{cfg.model.get('_target_')}'; check model._target_."
        ) from None
    return family_of_class(model_class)


def family_of_checkpoint(checkpoint: dict[str, Any]) -> ModelFamily:
    from recsys_cli.checkpoint import model_class

    return family_of_class(model_class(checkpoint))


def all_families() -> list[ModelFamily]:
    """One instance of every family a selectable model (``conf/model/*.yaml``) belongs to."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from recsys_cli.config import config_dir

    paths: dict[str, None] = {}
    for option in sorted((config_dir() / "model").glob("*.yaml")):
        target = OmegaConf.load(option).get("_target_")
        if target:
            paths.setdefault(getattr(get_class(target), "family", ""), None)
    return [get_class(path)() for path in paths if path]
