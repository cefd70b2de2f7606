"""Every option of every config group composes and builds, so a broken YAML never reaches a user."""

import inspect
from types import SimpleNamespace

import pandas as pd
import pytest
from hydra.utils import get_class, instantiate

from recsys_cli.config import build, compose_config, expand_sweep, group_options
from recsys_cli.data.text import TextSource
from recsys_cli.errors import RecsysError
from recsys_cli.tasks.preprocess import build_source, preprocess_config
from recsys_cli.tasks.text import build_text_model
from recsys_cli.tasks.train import build_model, model_family


@pytest.mark.parametrize("name", group_options("data"))
def test_every_data_option_builds_its_sources(name, tmp_path):
    cfg = compose_config([f"data={name}", f"data.path={tmp_path}"])
    assert "source" in cfg.data or "text" in cfg.data
    if "source" in cfg.data:  # an interaction log, for recommenders
        source = build_source(cfg.data)
        assert type(source).__name__.endswith("Source")
        assert preprocess_config(cfg.data).split in ("leave_one_out", "temporal")
        assert cfg.data.max_len > 0 and cfg.data.batch_size > 0
    if "text" in cfg.data:  # texts with labels, for text models
        assert isinstance(build(cfg.data.text.source, "text source", ""), TextSource)
        assert cfg.data.text.max_length > 0 and cfg.data.text.batch_size > 0


@pytest.mark.parametrize("name", group_options("model"))
def test_every_model_option_builds(name, tiny_encoder):
    cfg = compose_config([f"model={name}"])
    assert cfg.model.name == name
    if model_family(cfg) == "text":
        cfg = compose_config([f"model={name}", f"model.encoder={tiny_encoder}"])
        task = "regression" if cfg.model.task == "regression" else "classification"
        splits = SimpleNamespace(label_names=["a", "b", "c"], task=task, train=pd.DataFrame({"label": [1.0, 5.0]}))
        model = build_text_model(cfg, splits)
        assert model.n_labels == 3 and model.task == cfg.model.task
        assert cfg.train.monitor == cfg.model.recipe.monitor and cfg.trainer.max_epochs == cfg.model.recipe.max_epochs
        return
    model = build_model(cfg, n_items=20, max_len=5)
    assert model.n_items == 20 and model.max_len == 5
    assert cfg.train.monitor == "val/ndcg@10"


@pytest.mark.parametrize("data", ["synthetic", "ml100k", "seqtxt"])
def test_a_model_recipe_sets_the_history_length_and_window_stride_and_an_override_wins(data):
    extra = ["data.path=x"] if data == "seqtxt" else []
    assert compose_config(["model=gru4rec", f"data={data}", *extra]).data.max_len == 20  # gru4rec's recipe
    assert compose_config(["model=gru4rec", f"data={data}", "data.max_len=7", *extra]).data.max_len == 7
    assert compose_config(["model=sasrec", f"data={data}", *extra]).data.max_len == 50  # the data's own
    assert compose_config(["model=bert4rec", f"data={data}", *extra]).data.window_stride == 10  # bert4rec's recipe
    overridden = compose_config(["model=bert4rec", f"data={data}", "data.window_stride=null", *extra])
    assert overridden.data.window_stride is None
    assert compose_config(["model=sasrec", f"data={data}", *extra]).data.window_stride is None


@pytest.mark.parametrize("name", group_options("trainer"))
def test_every_trainer_option_has_valid_trainer_arguments(name):
    cfg = compose_config([f"trainer={name}"])
    trainer_cls = get_class(cfg.trainer._target_)
    accepted = set(inspect.signature(trainer_cls.__init__).parameters)
    assert set(cfg.trainer) - {"_target_"} <= accepted
    if cfg.trainer.accelerator == "cpu":
        assert instantiate(cfg.trainer, logger=False).max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("name", group_options("logger"))
def test_every_logger_option_builds(name, tmp_path):
    cfg = compose_config([f"logger={name}"])
    if cfg.logger.get("_target_"):
        assert instantiate(cfg.logger, save_dir=str(tmp_path)) is not None


def test_sweep_expansion_is_a_cartesian_product_in_order():
    jobs = expand_sweep(["model=pop,sasrec", "seed=1,2", "trainer=debug"])
    assert jobs == [
        ["model=pop", "seed=1", "trainer=debug"],
        ["model=pop", "seed=2", "trainer=debug"],
        ["model=sasrec", "seed=1", "trainer=debug"],
        ["model=sasrec", "seed=2", "trainer=debug"],
    ]


def test_config_is_strict_about_unknown_keys_and_names():
    with pytest.raises(RecsysError, match=r"unknown config key 'model.hiden_size'"):
        compose_config(["model.hiden_size=3"])
    with pytest.raises(
        RecsysError, match=r"unknown model 'bert'; choose one of: .*\bbert_intent\b.*\bpop\b.*\bsasrec\b"
    ):
        compose_config(["model=bert"])
    with pytest.raises(RecsysError, match="unknown SASRec loss"):
        build_model(compose_config(["model.loss=hinge"]), n_items=5, max_len=3)
