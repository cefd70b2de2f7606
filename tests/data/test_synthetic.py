"""Tests for the synthetic shop: reproducibility, schema, and the structure it plants."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys_cli.data.base import SourceData
from recsys_cli.data.synthetic import CATEGORY_TEMPLATES, QUERY_TEMPLATES, generate_shop
from recsys_cli.errors import RecsysError

SMALL = {"n_users": 300, "n_categories": 6, "items_per_category": 20}


@pytest.fixture(scope="module")
def shop() -> SourceData:
    """The default-size world, as the toolkit ships it."""
    return generate_shop()


def _leave_last_out_hit_rates(interactions: pd.DataFrame, k: int = 10) -> tuple[float, float]:
    """HR@k on each user's last item of a most-frequent-successor and a global-popularity predictor.

    Both predictors are fitted on the training prefix (everything but each user's last interaction).
    """
    user = interactions["user_id"].to_numpy()
    item = interactions["item_id"].to_numpy()
    is_last = np.append(user[1:] != user[:-1], True)
    has_previous = np.insert(user[1:] == user[:-1], 0, False)

    # Consecutive pairs inside the training prefix: the target of a pair must not be a held-out row.
    train_pair = has_previous & ~is_last
    pairs = pd.DataFrame({"previous": np.roll(item, 1)[train_pair], "target": item[train_pair]})
    successor_counts = pairs.value_counts().rename("count").reset_index()
    successor_counts = successor_counts.sort_values(["previous", "count", "target"], ascending=[True, False, True])
    successor_counts["rank"] = successor_counts.groupby("previous").cumcount()

    held_out = pd.DataFrame(
        {
            "previous": np.roll(item, 1)[is_last & has_previous],
            "target": item[is_last & has_previous],
        }
    )
    ranked = held_out.merge(successor_counts, on=["previous", "target"], how="left")
    successor_hr = float((ranked["rank"] < k).mean())

    top_popular = pd.Series(item[~is_last]).value_counts().index[:k]
    popularity_hr = float(held_out["target"].isin(top_popular).mean())
    return successor_hr, popularity_hr


def test_same_seed_gives_identical_tables() -> None:
    first, second = generate_shop(**SMALL, seed=3), generate_shop(**SMALL, seed=3)
    pd.testing.assert_frame_equal(first.interactions, second.interactions)
    pd.testing.assert_frame_equal(first.items, second.items)
    pd.testing.assert_frame_equal(first.extra["queries"], second.extra["queries"])


def test_different_seeds_give_different_tables() -> None:
    first, second = generate_shop(**SMALL, seed=3), generate_shop(**SMALL, seed=4)
    assert not first.interactions.equals(second.interactions)
    assert not first.items.equals(second.items)
    assert not first.extra["queries"]["query"].equals(second.extra["queries"]["query"])


def test_columns_and_dtypes(shop: SourceData) -> None:
    interactions, items, queries = shop.interactions, shop.items, shop.extra["queries"]
    assert list(interactions.columns) == [
        "user_id",
        "item_id",
        "timestamp",
        "session_id",
        "intent",
    ]
    assert list(items.columns) == ["item_id", "title", "text", "category"]
    assert list(queries.columns) == [
        "session_id",
        "user_id",
        "timestamp",
        "query",
        "intent",
    ]
    assert shop.users is None
    for frame, string_columns in [
        (interactions, ["user_id", "item_id", "intent"]),
        (items, ["item_id", "title", "text", "category"]),
        (queries, ["user_id", "query", "intent"]),
    ]:
        for column in string_columns:
            assert pd.api.types.is_string_dtype(frame[column]), column
    for frame, int_columns in [
        (interactions, ["timestamp", "session_id"]),
        (queries, ["timestamp", "session_id"]),
    ]:
        for column in int_columns:
            assert frame[column].dtype == np.int64, column
    assert interactions["user_id"].str.fullmatch(r"u\d{5}").all()
    assert items["item_id"].str.fullmatch(r"i\d{4}").all()


def test_default_sizes(shop: SourceData) -> None:
    assert shop.interactions["user_id"].nunique() == 2000
    assert len(shop.items) == 12 * 40
    assert shop.items["category"].nunique() == 12
    # 3-8 sessions of 2-6 items: about 5.5 * 4 clicks per user.
    assert 30_000 < len(shop.interactions) < 60_000


def test_items_are_unique_and_complete(shop: SourceData) -> None:
    items = shop.items
    assert items["item_id"].is_unique
    assert items["title"].is_unique
    assert items["text"].str.endswith(".").all()
    assert shop.interactions["item_id"].isin(items["item_id"]).all()


def test_interaction_intent_is_item_category(shop: SourceData) -> None:
    category = shop.interactions["item_id"].map(shop.items.set_index("item_id")["category"])
    assert (category == shop.interactions["intent"]).all()


def test_sorted_by_user_then_strictly_increasing_time(shop: SourceData) -> None:
    interactions = shop.interactions
    user = interactions["user_id"].to_numpy()
    time = interactions["timestamp"].to_numpy()
    assert (user[1:] >= user[:-1]).all()
    same_user = user[1:] == user[:-1]
    assert (time[1:][same_user] > time[:-1][same_user]).all()


def test_sessions_are_contiguous_and_users_interleave(shop: SourceData) -> None:
    interactions = shop.interactions
    session = interactions["session_id"].to_numpy()
    # Session ids are globally unique and each session is one contiguous block of one user.
    assert (np.diff(session) >= 0).all()
    assert (interactions.groupby("session_id")["user_id"].nunique() == 1).all()
    assert (interactions.groupby("session_id")["intent"].nunique() == 1).all()
    # A global time cut at the median leaves many users with history on both sides.
    cut = interactions["timestamp"].median()
    span = interactions.groupby("user_id")["timestamp"].agg(["min", "max"])
    assert ((span["min"] < cut) & (span["max"] > cut)).mean() > 0.05
    assert (span["min"] > cut).mean() > 0.2


def test_one_query_per_session_just_before_it(shop: SourceData) -> None:
    queries, interactions = shop.extra["queries"], shop.interactions
    assert queries["session_id"].is_unique
    assert set(queries["session_id"]) == set(interactions["session_id"])
    first_click = interactions.groupby("session_id").agg(
        first_time=("timestamp", "min"),
        user_id=("user_id", "first"),
        intent=("intent", "first"),
    )
    joined = queries.merge(first_click, on="session_id", suffixes=("", "_session"))
    lead = joined["first_time"] - joined["timestamp"]
    assert lead.between(1, 60).all()
    assert (joined["user_id"] == joined["user_id_session"]).all()
    assert (joined["intent"] == joined["intent_session"]).all()


def test_query_labels_and_variety(shop: SourceData) -> None:
    queries = shop.extra["queries"]
    categories = set(shop.items["category"])
    assert set(queries["intent"]) == categories
    distinct_per_intent = queries.groupby("intent")["query"].nunique()
    assert (distinct_per_intent >= 50).all()
    assert len(QUERY_TEMPLATES) >= 8
    assert not queries["query"].str.contains(r"[{}]").any()


def test_follow_ups_plant_sequential_signal(shop: SourceData) -> None:
    successor_hr, popularity_hr = _leave_last_out_hit_rates(shop.interactions)
    print(f"HR@10 successor={successor_hr:.3f} popularity={popularity_hr:.3f}")
    assert successor_hr >= 2 * popularity_hr
    assert successor_hr > 0.5


def test_follow_prob_controls_the_signal() -> None:
    # HR@3 so the category's popular items alone cannot fill the list.
    strong, _ = _leave_last_out_hit_rates(generate_shop(**SMALL, follow_prob=0.9).interactions, k=3)
    none, _ = _leave_last_out_hit_rates(generate_shop(**SMALL, follow_prob=0.0).interactions, k=3)
    assert strong > none + 0.2


def test_all_templates_can_be_used() -> None:
    assert len(CATEGORY_TEMPLATES) >= 16
    full = generate_shop(n_users=50, n_categories=len(CATEGORY_TEMPLATES), items_per_category=90)
    # More items than brand x adjective x noun combinations fall back to numbered variants.
    assert full.items["title"].is_unique
    assert full.items["category"].nunique() == len(CATEGORY_TEMPLATES)


@pytest.mark.parametrize(
    "override",
    [
        {"n_categories": len(CATEGORY_TEMPLATES) + 1},
        {"n_categories": 0},
        {"n_users": 0},
        {"items_per_category": 2},
        {"sessions_per_user": (4, 2)},
        {"session_length": (0, 3)},
        {"follow_prob": 1.5},
    ],
)
def test_invalid_arguments_raise_user_errors(override: dict) -> None:
    with pytest.raises(RecsysError):
        generate_shop(**override)
