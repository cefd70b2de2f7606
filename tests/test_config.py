"""Every option of every config group composes and builds, so a broken YAML never reaches a user."""

import inspect
import itertools

import pandas as pd
import pytest
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from recsys_cli.config import build, compose_config, expand_sweep, group_options
from recsys_cli.core.family import family_for
from recsys_cli.core.run import build_model
from recsys_cli.data.spec import DataSpec
from recsys_cli.data.text import TextSource
from recsys_cli.errors import RecsysError
from recsys_cli.families.recommender import build_source, preprocess_config
from recsys_cli.schema import InteractionData, InteractionTextData, TextData


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
    if family_for(cfg).kind == "text":
        cfg = compose_config([f"model={name}", f"model.encoder={tiny_encoder}"])
        spec = DataSpec(task=cfg.model.task, label_names=["a", "b", "c"], target_mean=3.0, target_std=2.0)
        model = build_model(cfg, spec)
        assert model.n_labels == 3 and model.task == cfg.model.task
        assert cfg.train.monitor == cfg.model.recipe.monitor and cfg.trainer.max_epochs == cfg.model.recipe.max_epochs
        return
    if "text_encoder" in cfg.model:
        cfg = compose_config([f"model={name}", f"model.text_encoder={tiny_encoder}"])
    items = pd.DataFrame({"item_idx": range(1, 21), "title": [f"a gift for a runner {i}" for i in range(20)]})
    model = build_model(cfg, DataSpec(n_users=4, n_items=20, max_len=5, items=items))
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
    if name in ("tensorboard", "mlflow", "wandb"):  # optional extras: tests/test_loggers.py covers them missing
        pytest.importorskip(name)
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
        build_model(compose_config(["model.loss=hinge"]), DataSpec(n_items=5, max_len=3))


def test_every_data_model_and_trainer_combination_composes_with_typed_data():
    """Every data x model pair, the trainers taken in turn (each data and each model meets every trainer);
    a model's recipe reaches typed keys through interpolations (data.max_len, trainer.max_epochs)."""
    datas, models, trainers = group_options("data"), group_options("model"), group_options("trainer")
    for (i, data), (j, model) in itertools.product(enumerate(datas), enumerate(models)):
        trainer = trainers[(i + j) % len(trainers)]
        cfg = compose_config([f"data={data}", f"model={model}", f"trainer={trainer}", "data.path=x"])
        schema = OmegaConf.get_type(cfg.data)
        assert schema is {(True, False): InteractionData, (False, True): TextData}.get(
            ("source" in cfg.data, "text" in cfg.data), InteractionTextData
        )
        assert type(cfg.trainer.max_epochs) is int and type(cfg.seed) is int
        recipe = cfg.model.get("recipe", {})
        if "source" in cfg.data:
            assert type(cfg.data.max_len) is int and cfg.data.max_len == recipe.get("max_len", cfg.data.max_len)
    assert compose_config(["model=bert_intent"]).trainer.max_epochs == 6  # its recipe, through an interpolation


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=abc", "seed must be an integer, not 'abc'; pass e.g. seed="),
        ("eval.ks=[5,x]", "eval.ks must be a list of integers, not 'x' (item 1); pass e.g. eval.ks=["),
        ("train.resumable=maybe", "train.resumable must be true or false, not 'maybe'"),
        ("data.batch_size=x", "data.batch_size must be an integer, not 'x'; pass e.g. data.batch_size="),
        ("data.split.valid_ratio=a", "data.split.valid_ratio must be a number, not 'a'"),
        ("data.text.max_length=1.5", "data.text.max_length must be an integer, not 1.5"),
        ("trainer.max_epochs=abc", "trainer.max_epochs must be an integer, not 'abc'; pass e.g. trainer.max_epochs="),
        ("trainer.gradient_clip_val=x", "trainer.gradient_clip_val must be a number or null, not 'x'"),
        # a typed key fed a wrong value through its interpolation fails too, naming the typed key
        ("+model.recipe.max_epochs=abc", "trainer.max_epochs must be an integer, not 'abc' (from ${oc.select:"),
    ],
)
def test_a_value_of_the_wrong_type_fails_at_composition_in_one_line_naming_the_key(override, message):
    with pytest.raises(RecsysError) as error:
        compose_config([override])
    assert error.value.message.startswith(message)
    assert "\n" not in str(error.value)


def test_typed_keys_convert_override_text_and_keep_the_yaml_types():
    cfg = compose_config(["data=ml100k", "data.batch_size=32", "trainer=debug", "trainer.gradient_clip_val=1"])
    assert cfg.data.batch_size == 32 and type(cfg.data.batch_size) is int
    assert cfg.trainer.gradient_clip_val == 1.0 and type(cfg.trainer.gradient_clip_val) is float
    assert cfg.trainer.limit_train_batches == 2 and type(cfg.trainer.limit_train_batches) is int  # a count: untyped
    assert cfg.data.split.valid_ratio == 0.1 and cfg.data.preprocess.min_user_interactions == 0  # ml100k's own


@pytest.mark.parametrize(
    "key",
    # typed nodes, the untyped data.source under a typed one, and a key only trainer=ddp has (the default is cpu)
    ["eval.foo", "data.foo", "data.split.foo", "data.source.foo", "data.text.foo", "trainer.strategy"],
)
def test_typed_and_untyped_nodes_stay_strict_about_unknown_keys(key):
    with pytest.raises(RecsysError, match=rf"unknown config key '{key}'"):
        compose_config([f"{key}=1"])
