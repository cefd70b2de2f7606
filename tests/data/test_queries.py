"""What users say, read from the data: one query per event, and which events open a session."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from recsys_cli.data import batch as keys
from recsys_cli.data.datamodule import SequenceDataModule
from recsys_cli.data.preprocess import Processed
from recsys_cli.data.queries import event_queries, session_starts


def sessions() -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    interactions = pd.DataFrame(
        {
            "user_idx": [1, 1, 1, 1, 2, 2, 2],
            "item_idx": [1, 2, 3, 4, 5, 6, 7],
            "timestamp": [1, 2, 3, 4, 1, 2, 3],
            "session_id": [10, 10, 11, 11, 20, 21, 21],
            "split": [0, 0, 1, 2, 0, 1, 2],
        }
    )
    queries = pd.DataFrame({"session_id": [10, 11, 20, 21], "query": ["pens", "a stapler", "pens", ""]})
    return interactions, {"queries": queries}


def test_session_queries_become_one_index_per_event():
    interactions, extra = sessions()
    texts, index = event_queries(interactions, extra)
    assert texts[0] == "" and sorted(texts[1:]) == ["a stapler", "pens"]
    assert [texts[i] for i in index] == ["pens", "pens", "a stapler", "a stapler", "pens", "", ""]
    assert session_starts(interactions).tolist() == [True, False, True, False, True, True, False]


def test_a_query_column_is_read_as_it_is_and_data_without_queries_has_none():
    frame = pd.DataFrame({"user_idx": [1, 1], "query": ["red pen", None]})
    texts, index = event_queries(frame, {})
    assert [texts[i] for i in index] == ["red pen", ""]
    assert event_queries(frame.drop(columns="query"), {}) is None
    assert session_starts(frame) is None


def test_batches_carry_the_query_each_event_answers():
    interactions, extra = sessions()
    processed = Processed(
        path=None, interactions=interactions, items=pd.DataFrame(), users=pd.DataFrame(), meta={"counts": {"items": 7}}
    )
    texts, index = event_queries(interactions, extra)
    table = torch.arange(len(texts), dtype=torch.float32).unsqueeze(1).repeat(1, 2)  # row i = [i, i]
    starts = session_starts(interactions)
    datamodule = SequenceDataModule(
        processed, max_len=3, event_queries=index, query_table=table, event_groups={"new_session": starts}
    )
    datamodule.setup()
    train = datamodule._train.__getitems__(list(range(len(datamodule._train))))
    assert train[keys.QUERIES].shape == (*train[keys.HISTORY].shape[:1], 4, 2)  # [B, L + 1, Dq]
    # Each column holds the query of the window's event there (user 1's training events: 1, 2 in session 10).
    user1 = (train[keys.HISTORY] == 1).any(1).nonzero()[0, 0]
    pens = texts.index("pens")
    assert train[keys.QUERIES][user1, -2:, 0].tolist() == [pens, pens]
    test = datamodule._eval[2].__getitems__([0, 1])
    assert test[keys.QUERIES].shape == (2, 4, 2)
    # The last column is the target's query: user 1's test event (item 4) answers "a stapler"; user 2's none.
    assert test[keys.QUERIES][:, -1, 0].tolist() == [texts.index("a stapler"), 0]
    valid = datamodule._eval[1].__getitems__([0, 1])
    assert valid[keys.SEGMENT_PREFIX + "new_session"].tolist() == [True, True]
    assert test[keys.SEGMENT_PREFIX + "new_session"].tolist() == [False, False]


def test_history_free_evaluation_keeps_only_the_target_and_its_query():
    interactions, extra = sessions()
    processed = Processed(
        path=None, interactions=interactions, items=pd.DataFrame(), users=pd.DataFrame(), meta={"counts": {"items": 7}}
    )
    texts, index = event_queries(interactions, extra)
    table = torch.arange(len(texts), dtype=torch.float32).unsqueeze(1)
    datamodule = SequenceDataModule(processed, max_len=3, event_queries=index, query_table=table, history_free=True)
    datamodule.setup()
    test = datamodule._eval[2].__getitems__([0, 1])
    assert np.all(test[keys.HISTORY].numpy() == 0) and len(test[keys.SEEN_ITEMS]) == 0
    assert test[keys.QUERIES][0, -1, 0] == texts.index("a stapler")


def test_reviews_give_each_event_the_users_latest_earlier_review_never_its_own():
    from recsys_cli.data.queries import next_queries

    frame = pd.DataFrame({"user_idx": [1, 1, 1, 2, 2, 3], "review": ["great pen", "", "ink ran out", "ok", "meh", ""]})
    texts, index = event_queries(frame, {})
    assert [texts[i] for i in index] == ["", "great pen", "great pen", "", "ok", ""]
    assert [texts[i] for i in next_queries(frame, 3)] == ["", "ink ran out", "meh", ""]
    assert next_queries(frame.assign(query="x"), 3) is None  # a query column is what users say then
