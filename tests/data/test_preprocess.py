import numpy as np
import pandas as pd
import pytest

from recsys_cli.data.base import SourceData
from recsys_cli.data.datamodule import eval_set
from recsys_cli.data.preprocess import (
    TEST,
    TRAIN,
    VALID,
    PreprocessConfig,
    fingerprint,
    kcore,
    prepare,
    preprocess,
)
from recsys_cli.data.sources import TableSource
from recsys_cli.errors import RecsysError


def frame(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"])


def test_cleaning_counts_each_reason():
    raw = frame(
        [
            ["u1", "a", 1, 5],
            ["u1", "a", 1, 5],  # exact duplicate
            ["u1", "b", 2, 1],  # below threshold
            [None, "c", 3, 5],  # missing user
            ["u1", "c", 4, 4],
            ["u1", "d", 5, 4],
            ["u2", "a", 1, 5],
            ["u2", "c", 2, 5],
            ["u2", "d", 3, 5],
        ]
    )
    inter, _items, _users, stats = preprocess(SourceData(raw), PreprocessConfig(rating_threshold=4))
    assert stats["dropped"]["exact duplicate"] == 1
    assert stats["dropped"]["below rating threshold"] == 1
    assert stats["dropped"]["missing id or time"] == 1
    assert len(inter) == 6
    assert stats["counts"] == {"users": 2, "items": 3, "interactions": 6, "density": 1.0}


def test_ids_are_contiguous_with_zero_for_padding_and_maps_round_trip():
    raw = frame([["b", "z", 2, 1], ["a", "y", 1, 1], ["b", "x", 1, 1], ["a", "z", 3, 1]])
    inter, items, users, _ = preprocess(SourceData(raw), PreprocessConfig())
    assert sorted(inter["item_idx"].unique()) == [1, 2, 3]
    assert sorted(inter["user_idx"].unique()) == [1, 2]
    lookup_item = dict(zip(items["item_idx"], items["item_id"]))
    lookup_user = dict(zip(users["user_idx"], users["user_id"]))
    back = {(lookup_user[u], lookup_item[i], t) for u, i, t in inter[["user_idx", "item_idx", "timestamp"]].to_numpy()}
    assert back == {("b", "z", 2), ("a", "y", 1), ("b", "x", 1), ("a", "z", 3)}


def test_sort_is_chronological_and_stable_on_ties():
    raw = frame([["u", "c", 5, 1], ["u", "a", 1, 1], ["u", "b", 1, 1], ["u", "d", 0, 1]])
    inter, items, _, _ = preprocess(SourceData(raw), PreprocessConfig())
    names = dict(zip(items["item_idx"], items["item_id"]))
    assert [names[i] for i in inter["item_idx"]] == ["d", "a", "b", "c"]  # a before b: input order kept


def test_kcore_is_iterative():
    # Dropping item 2 (1 event) leaves user 1 with 1 event, which must then go too.
    users = np.array([0, 0, 1, 1, 1, 2, 2, 2])
    items = np.array([0, 2, 0, 1, 3, 0, 1, 3])
    keep = kcore(users, items, min_user=2, min_item=2)
    assert keep.tolist() == [False, False, True, True, True, True, True, True]


def test_leave_one_out_split_holds_out_last_two_events():
    raw = frame([["u1", str(i), i, 1] for i in range(5)] + [["u2", "0", 1, 1], ["u2", "1", 2, 1]])
    inter, _, _, stats = preprocess(SourceData(raw), PreprocessConfig())
    u1 = inter[inter["user_idx"] == 1]
    assert u1["split"].tolist() == [TRAIN, TRAIN, TRAIN, VALID, TEST]
    assert (inter[inter["user_idx"] == 2]["split"] == TRAIN).all()  # too short to hold out
    assert stats["splits"] == {"train": 5, "valid": 1, "test": 1}


def test_temporal_split_cuts_the_global_timeline():
    raw = frame([[f"u{i % 3}", str(i % 7), i, 1] for i in range(100)])
    inter, _, _, _ = preprocess(SourceData(raw), PreprocessConfig(split="temporal", valid_ratio=0.2, test_ratio=0.1))
    by_split = inter.groupby("split")["timestamp"]
    assert by_split.max()[TRAIN] < by_split.min()[VALID] and by_split.max()[VALID] < by_split.min()[TEST]
    assert inter["split"].value_counts().to_dict() == {TRAIN: 70, VALID: 20, TEST: 10}


def test_iso_dates_are_accepted_and_garbage_is_a_user_error():
    raw = frame([["u", "a", "2024-01-01", 1], ["u", "b", "2024-01-02T10:00:00", 1]])
    inter, _, _, _ = preprocess(SourceData(raw), PreprocessConfig())
    assert inter["timestamp"].diff().iloc[1] == 86400 + 36000
    bad = frame([["u", "a", "yesterday", 1]])
    with pytest.raises(RecsysError, match="non-numeric"):
        preprocess(SourceData(bad), PreprocessConfig())


def test_item_vocabulary_fixes_indices_and_drops_unknown_items():
    raw = frame([["u", "b", 1, 1], ["u", "new", 2, 1], ["u", "a", 3, 1]])
    inter, items, _, stats = preprocess(SourceData(raw), PreprocessConfig(), item_vocab=["a", "b", "c"])
    assert items["item_id"].tolist() == ["a", "b", "c"]
    assert inter["item_idx"].tolist() == [2, 1]
    assert stats["dropped"]["item not in vocabulary"] == 1


def test_filtering_everything_is_a_user_error():
    raw = frame([["u", "a", 1, 1]])
    with pytest.raises(RecsysError, match="no interactions left"):
        preprocess(SourceData(raw), PreprocessConfig(min_user_interactions=5))


def test_prepare_writes_once_and_reuses(tmp_path):
    csv = tmp_path / "events.csv"
    pd.DataFrame({"u": ["1", "1", "1", "2", "2", "2"], "i": list("abcabc"), "t": range(6)}).to_csv(csv, index=False)
    source = TableSource(str(csv), columns={"user": "u", "item": "i", "time": "t"})
    first, reused = prepare("events", source, PreprocessConfig(), tmp_path / "data")
    assert not reused and (first.path / "meta.json").exists()
    second, reused = prepare("events", source, PreprocessConfig(), tmp_path / "data")
    assert reused and second.path == first.path
    third, reused = prepare("events", source, PreprocessConfig(min_user_interactions=2), tmp_path / "data")
    assert not reused and third.path != first.path  # config change → new fingerprint
    assert not [p for p in (tmp_path / "data" / "processed").iterdir() if p.name.startswith(".")]


def random_events(n_users=200, per_user=50):
    rng = np.random.default_rng(7)
    users = np.repeat([f"u{i}" for i in range(n_users)], per_user)
    items = rng.integers(0, 500, len(users)).astype(str)
    return frame(np.column_stack([users, items, np.arange(len(users)), np.ones(len(users))]))


def test_random_split_ratios_hold_and_the_seed_decides():
    raw = random_events()
    config = PreprocessConfig(split="random", valid_ratio=0.2, test_ratio=0.1, split_seed=3)
    inter, _, _, stats = preprocess(SourceData(raw), config)
    # Every kept event is in exactly one split (one label per row, each row once).
    assert set(inter["split"].unique()) == {TRAIN, VALID, TEST}
    assert sum(stats["splits"].values()) == len(inter) == stats["counts"]["interactions"]
    assert not inter.duplicated(["user_idx", "item_idx", "timestamp"]).any()
    shares = inter["split"].value_counts(normalize=True)
    assert abs(shares[TEST] - 0.1) < 0.01 and abs(shares[VALID] - 0.2) < 0.015  # 10,000 events
    # Not a per-user time cut: held-out events are spread over each user's timeline.
    position = inter.groupby("user_idx").cumcount()
    assert position[inter["split"] == TEST].mean() == pytest.approx(24.5, abs=2)

    same, _, _, _ = preprocess(SourceData(raw), config)
    assert same["split"].tolist() == inter["split"].tolist()
    other, _, _, _ = preprocess(SourceData(raw), PreprocessConfig(split="random", valid_ratio=0.2, test_ratio=0.1))
    assert (other["split"] != inter["split"]).mean() > 0.3


def test_random_split_keeps_a_training_event_per_user_and_evaluates_on_the_rest():
    # Ratios that send most events to valid/test: every user still keeps a training event.
    raw = random_events(n_users=300, per_user=3)
    inter, _, _, _ = preprocess(SourceData(raw), PreprocessConfig(split="random", valid_ratio=0.45, test_ratio=0.45))
    assert (inter.groupby("user_idx")["split"].min() == TRAIN).all()

    users, items = inter["user_idx"].to_numpy(), inter["item_idx"].to_numpy()
    split = inter["split"].to_numpy()
    test = eval_set(users, items, split, TEST, max_len=10)
    held_out = np.flatnonzero(np.bincount(users[split == TEST]))
    assert test.users.tolist() == held_out.tolist()  # every user with a test event is evaluated
    # History for test = the user's train and valid events, in time order; targets = the test events.
    row = 0
    mine = inter[inter["user_idx"] == test.users[row]]
    expected = mine.loc[mine["split"] < TEST, "item_idx"].tolist()
    history = test.history[row].tolist()
    assert history[len(history) - len(expected) :] == expected and set(history[: -len(expected)]) <= {0}
    batch_targets = test.target_items[test.target_indptr[row] : test.target_indptr[row + 1]]
    assert batch_targets.tolist() == mine.loc[mine["split"] == TEST, "item_idx"].tolist()


def test_split_kind_and_ratios_are_validated():
    with pytest.raises(RecsysError, match="leave_one_out, temporal or random"):
        PreprocessConfig(split="shuffle")
    with pytest.raises(RecsysError, match="random split ratios"):
        PreprocessConfig(split="random", valid_ratio=0.6, test_ratio=0.5)


def test_split_seed_only_changes_the_fingerprint_of_a_random_split():
    assert fingerprint("src", PreprocessConfig(), None) == fingerprint("src", PreprocessConfig(split_seed=1), None)
    random = PreprocessConfig(split="random")
    assert fingerprint("src", random, None) != fingerprint("src", PreprocessConfig(split="random", split_seed=1), None)


def test_train_on_a_seqtxt_file_end_to_end(tmp_path, workdir):
    import json

    from typer.testing import CliRunner

    from recsys_cli.cli import app
    from tests.conftest import TINY_MODEL

    rng = np.random.default_rng(0)
    # 60 users walking a ring of 30 items: the next item is the current one + 1, a planted sequence.
    starts = rng.integers(0, 30, 60)
    lines = [f"user{u} item{(start + step) % 30}" for u, start in enumerate(starts) for step in range(12)]
    path = tmp_path / "ring.txt"
    path.write_text("\n".join(lines) + "\n")
    args = ["train", *workdir, "data=seqtxt", f"data.path={path}", "data.max_len=10", "model=sasrec", *TINY_MODEL]
    result = CliRunner().invoke(app, [*args, "trainer=debug", "logger=none", "run.name=seqtxt"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "runs" / "seqtxt" / "metrics.json").read_text())
    assert metrics["protocol"]["split"] == "leave_one_out" and metrics["protocol"]["items"] == 30
    assert metrics["protocol"]["users"] == 60 and 0 <= metrics["test"]["test/ndcg@10"] <= 1
