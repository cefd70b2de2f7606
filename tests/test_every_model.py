"""Every selectable model (each ``conf/model/*.yaml``, discovered) trains, evaluates and predicts end to end.

A new model is covered by adding its YAML: nothing here lists models. Each one trains a few debug steps on
the first tiny dataset its family reads — a table of shop queries with numeric labels (a class for intent
models, a number for rating models), else the tiny synthetic shop's interaction log — then its checkpoint is
evaluated again with the raw files deleted — the metrics must reproduce the training run's own test
metrics, since the tiny splits fit in the debug trainer's batches — and predicts for a file whose rows
carry what every family reads (a user, a history, a text). Each trains twice: the same seed must give the
same metrics.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from recsys_cli.config import compose_config, group_options
from recsys_cli.core.family import family_for
from recsys_cli.tasks import evaluate, predict, train
from tests.conftest import TINY_DATA


def tiny_datasets(folder) -> list[list[str]]:
    from recsys_cli.data.synthetic import generate_shop

    queries = generate_shop(n_users=120, n_categories=4).extra["queries"]
    labels = pd.factorize(queries["intent"], sort=True)[0] + 1
    table = folder / "queries.csv"
    pd.DataFrame({"text": queries["query"], "label": labels}).to_csv(table, index=False)
    return [["data=text_table", f"data.path={table}"], TINY_DATA]


@pytest.mark.parametrize("name", group_options("model"))
def test_model_trains_evaluates_and_predicts_from_its_checkpoint(name, workdir, tiny_encoder, tmp_path):
    run = [*workdir, "trainer=debug", "logger=none", f"model={name}", f"run.name={name}"]
    for data in tiny_datasets(tmp_path):
        cfg = compose_config([*run, *data])
        if family_for(cfg).reads(cfg.data):
            break
    overrides = [*run, *data]
    for key in ("encoder", "text_encoder"):  # no hub here: the tiny in-process encoder
        if key in cfg.model:
            overrides.append(f"model.{key}={tiny_encoder}")
    result = train.run(compose_config(overrides), overrides=overrides)

    test = result.metrics["test"]
    assert test and all(math.isfinite(value) for value in test.values())
    assert result.best_checkpoint.is_file()
    assert json.loads((result.run_dir / "metrics.json").read_text())["test"] == test
    # Same seed, same data, same config: identical metrics on the CPU, to the last bit.
    again = [*overrides, f"run.name={name}_again"]
    repeated = train.run(compose_config(again), overrides=again).metrics
    assert (repeated["valid"], repeated["test"]) == (result.metrics["valid"], test)

    for raw in tmp_path.glob("*.csv"):  # a checkpoint evaluates on its processed data: no raw file needed
        raw.unlink()
    evaluated = evaluate.run(result.best_checkpoint, output=tmp_path / "eval.json")
    assert evaluated.metrics["same_data_as_training"] is True
    assert evaluated.metrics["test"] == pytest.approx(test, rel=1e-5, abs=1e-6)

    requests = tmp_path / "requests.jsonl"
    pd.DataFrame(
        {"user_id": ["1", "2", "no such user"], "history": [[], ["1", "2"], ["3"]], "text": ["a gift", "x", ""]}
    ).to_json(requests, orient="records", lines=True)
    predicted = predict.run(result.best_checkpoint, tmp_path / "out.jsonl", input_path=requests, top_k=3)
    rows = pd.read_json(predicted.output, lines=True)
    assert list(rows["row"]) == [0, 1, 2]  # every request answered, in input order
