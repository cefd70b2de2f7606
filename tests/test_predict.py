"""Batch predict against a row-by-row reference: length-sorted batches must not change any ranking."""

import json

import numpy as np
import torch

from recsys_cli.checkpoint import KEY, build_module, load_checkpoint
from recsys_cli.config import compose_config
from recsys_cli.data import batch as keys
from recsys_cli.tasks import predict, train
from tests.conftest import TINY_MODEL


def test_all_users_match_one_by_one_scoring_in_input_order(tiny, tmp_path):
    result = train.run(compose_config([*tiny, *TINY_MODEL, "data.max_len=8", "run.name=p"]))
    out = tmp_path / "recs.jsonl"
    # batch_size 7: several chunks of length-sorted batches
    done = predict.run(result.best_checkpoint, out, all_users=True, top_k=4, batch_size=7)
    rows = [json.loads(line) for line in out.read_text().splitlines()]

    checkpoint = load_checkpoint(result.best_checkpoint, kind="recommender")
    data = checkpoint[KEY]["data"]
    model = build_module(checkpoint)
    indptr, items = data["history_indptr"].numpy(), data["history_items"].numpy().astype(np.int64)
    assert done.rows == len(rows) == len(data["user_ids"]) - 1
    assert len(set(np.diff(indptr)[1:].clip(max=8))) > 1  # histories of several lengths
    for user in range(1, len(data["user_ids"])):
        seen = items[indptr[user] : indptr[user + 1]]
        history = torch.zeros(1, 8, dtype=torch.long)
        recent = torch.from_numpy(seen[-8:])
        history[0, 8 - len(recent) :] = recent
        with torch.no_grad():
            scores = model.score_all({keys.HISTORY: history})[0]
        scores[0] = -torch.inf
        scores[torch.from_numpy(seen)] = -torch.inf
        expected = [data["item_ids"][i] for i in torch.topk(scores, 4).indices.tolist()]
        row = rows[user - 1]
        assert row["user_id"] == data["user_ids"][user]
        assert row["item_ids"] == expected
