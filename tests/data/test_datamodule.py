import numpy as np
import pytest
import torch

from recsys_cli.data import batch as keys
from recsys_cli.data.datamodule import (
    LengthGroupedSampler,
    WindowDataset,
    csr_rows,
    eval_set,
    last_window,
    padded_rows,
    training_windows,
)
from recsys_cli.data.preprocess import TEST, TRAIN, VALID


def _targets_with_context(items, starts, ends, max_len, stride):
    """(target item, history length it is predicted from) for every target position of every window."""
    dataset = WindowDataset(training_windows(items, starts, ends, max_len, stride), stride)
    batch = dataset.__getitems__(list(range(len(dataset))))
    history, next_items = batch[keys.HISTORY].numpy(), batch[keys.NEXT_ITEMS].numpy()
    rows, cols = np.nonzero(next_items)
    context = np.array([(history[r, : c + 1] > 0).sum() for r, c in zip(rows, cols)])
    return next_items[rows, cols], context


def test_last_window_left_pads_and_keeps_order():
    flat = np.array([1, 2, 3, 4, 5, 6])
    out = last_window(flat, np.array([0, 3]), np.array([3, 6]), 4)
    assert out.tolist() == [[0, 1, 2, 3], [0, 4, 5, 6]]


def test_training_windows_make_every_event_but_the_first_a_target_once():
    items = np.arange(1, 24)  # user A: 1..10 (10 events), user B: 11..23 (13 events)
    starts, ends = np.array([0, 10]), np.array([10, 23])
    windows = training_windows(items, starts, ends, max_len=4)
    batch = WindowDataset(windows).__getitems__(list(range(len(windows))))
    targets = batch[keys.NEXT_ITEMS][batch[keys.NEXT_ITEMS] > 0]
    assert sorted(targets.tolist()) == [i for i in range(2, 24) if i != 11]
    # inputs precede targets inside each window
    assert ((windows[:, 1:] == 0) | (windows[:, 1:] == windows[:, :-1] + 1) | (windows[:, :-1] == 0)).all()
    assert last_window(items, starts, ends, 3).tolist() == [[8, 9, 10], [21, 22, 23]]


@pytest.mark.parametrize("stride", [None, 3, 1])
def test_every_event_but_the_first_is_a_target_exactly_once(stride):
    # Two users with 11 and 3 events; item ids are unique so targets can be counted.
    items = np.arange(1, 15)
    starts, ends = np.array([0, 11]), np.array([11, 14])
    targets, context = _targets_with_context(items, starts, ends, max_len=4, stride=stride)
    expected = [*range(2, 12), 13, 14]  # first event of each user (1 and 12) is never a target
    assert sorted(targets.tolist()) == expected
    # Each target sees min(position in its user's sequence, at least max_len - stride) items of history.
    position = np.where(targets <= 11, targets - 1, targets - 12)
    floor = 4 - (4 if stride is None else stride)
    assert (context >= np.minimum(position, max(floor, 1))).all()
    assert (context == np.minimum(position, context.max())).sum() > 0


def test_shorter_stride_gives_more_history_per_target():
    items = np.arange(1, 101)
    starts, ends = np.array([0]), np.array([100])
    _, full = _targets_with_context(items, starts, ends, max_len=20, stride=None)
    _, half = _targets_with_context(items, starts, ends, max_len=20, stride=10)
    assert half.mean() > full.mean()
    assert half[half < 10].size == 9  # only the first targets of the user have under max_len - stride items


def test_length_grouped_sampler_is_a_seeded_permutation_of_similar_length_batches():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 51, 1000)
    sampler = LengthGroupedSampler(lengths, batch_size=10, seed=3, group_batches=100)
    order = list(sampler)
    assert sorted(order) == list(range(1000))
    assert order == list(LengthGroupedSampler(lengths, batch_size=10, seed=3, group_batches=100))
    sampler.set_epoch(1)
    assert list(sampler) != order
    batches = np.array(order).reshape(100, 10)
    spread = np.ptp(lengths[batches], axis=1).mean()
    random_spread = np.ptp(lengths[rng.permutation(1000).reshape(100, 10)], axis=1).mean()
    assert spread < random_spread / 5


def test_csr_and_padded_rows():
    indptr, values = np.array([0, 2, 2, 5]), np.array([7, 8, 1, 2, 3])
    rows, vals = csr_rows(indptr, values, np.array([2, 0]))
    assert rows.tolist() == [0, 0, 0, 1, 1] and vals.tolist() == [1, 2, 3, 7, 8]
    assert padded_rows(indptr, values, np.array([1, 2])).tolist() == [[0, 0, 0], [1, 2, 3]]


def test_eval_sets_hold_out_the_right_events():
    users = np.array([1, 1, 1, 1, 2, 2, 2])
    items = np.array([5, 6, 7, 8, 1, 2, 3])
    split = np.array([TRAIN, TRAIN, VALID, TEST, TRAIN, VALID, TEST])
    valid = eval_set(users, items, split, VALID, max_len=3).__getitems__([0, 1])
    assert valid[keys.HISTORY].tolist() == [[0, 5, 6], [0, 0, 1]]
    assert valid[keys.TARGETS].tolist() == [[7], [2]]
    test = eval_set(users, items, split, TEST, max_len=3).__getitems__([0, 1])
    assert test[keys.HISTORY].tolist() == [[5, 6, 7], [0, 1, 2]]  # the validation event is history for test
    assert test[keys.TARGETS].tolist() == [[8], [3]]
    assert torch.equal(test[keys.SEEN_ROWS], torch.tensor([0, 0, 0, 1, 1]))
    assert test[keys.SEEN_ITEMS].tolist() == [5, 6, 7, 1, 2]


def test_batches_carry_users_and_event_times_aligned_with_history():
    import pandas as pd

    from recsys_cli.data.datamodule import SequenceDataModule
    from recsys_cli.data.preprocess import Processed

    # user 1: items 5..9 at times 10..50; user 2: items 1..4 at times 100..400
    interactions = pd.DataFrame(
        {
            "user_idx": [1, 1, 1, 1, 1, 2, 2, 2, 2],
            "item_idx": [5, 6, 7, 8, 9, 1, 2, 3, 4],
            "timestamp": [10, 20, 30, 40, 50, 100, 200, 300, 400],
            "split": [TRAIN, TRAIN, TRAIN, VALID, TEST, TRAIN, TRAIN, VALID, TEST],
        }
    )
    meta = {"counts": {"items": 9, "users": 2}}
    processed = Processed(path=None, interactions=interactions, items=None, users=None, meta=meta)
    module = SequenceDataModule(processed, max_len=4, group_by_length=False)
    module.setup()
    train = module._train.__getitems__(list(range(len(module._train))))
    history, times, users = train[keys.HISTORY], train[keys.TIMESTAMPS], train[keys.USERS]
    assert sorted(users.tolist()) == [1, 2]
    for row in range(len(users)):
        real = history[row] > 0
        expected = (history[row][real] - 4) * 10 if users[row] == 1 else history[row][real] * 100
        assert times[row][real].tolist() == expected.tolist() and (times[row][~real] == 0).all()
    test = module._eval[TEST].__getitems__([0, 1])
    assert test[keys.TIMESTAMPS].tolist() == [[10, 20, 30, 40], [0, 100, 200, 300]]
