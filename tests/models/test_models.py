import numpy as np
import pytest
import torch

from recsys_cli.data import batch as keys
from recsys_cli.data.datamodule import training_windows
from recsys_cli.models.components import attention_mask, sample_negatives
from recsys_cli.models.pop import Pop
from recsys_cli.models.sasrec import SASRec


def tiny_sasrec(**kwargs):
    torch.manual_seed(0)
    params = dict(n_items=30, max_len=8, hidden_size=16, num_layers=2, num_heads=2, inner_size=32, dropout=0.0)
    params.update(kwargs)
    return SASRec(**params).eval()


def test_sasrec_is_causal_future_items_do_not_change_past_outputs():
    model = tiny_sasrec()
    history = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8]])
    changed = history.clone()
    changed[0, -1] = 20
    with torch.no_grad():
        a, b = model.encode(history), model.encode(changed)
    assert torch.allclose(a[:, :-1], b[:, :-1], atol=1e-6)
    assert not torch.allclose(a[:, -1], b[:, -1])


def test_sasrec_outputs_are_finite_with_padding_and_ignore_padded_items():
    model = tiny_sasrec()
    history = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1, 2, 3]])
    with torch.no_grad():
        scores = model.score_all({keys.HISTORY: history})
    assert scores.shape == (2, 31) and torch.isfinite(scores).all()


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_sasrec_learns_a_deterministic_successor_rule(loss):
    # item i is always followed by i + 1: after training, the top item after [.., i] must be i + 1.
    torch.manual_seed(0)
    model = tiny_sasrec(loss=loss, num_layers=1, n_items=12).train()
    sequences = np.concatenate([np.arange(s, s + 9) % 12 + 1 for s in range(12)])
    starts, ends = np.arange(12) * 9, np.arange(1, 13) * 9
    windows = torch.from_numpy(training_windows(sequences, starts, ends, 8))
    batch = {keys.HISTORY: windows[:, :-1], keys.NEXT_ITEMS: windows[:, 1:]}
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    first = None
    for _ in range(150):
        optimizer.zero_grad()
        value = model.loss(batch)
        first = first if first is not None else value.item()
        value.backward()
        optimizer.step()
    assert value.item() < first / 3
    model.eval()
    with torch.no_grad():
        scores = model.score_all({keys.HISTORY: windows[:, 1:]})
    scores[:, 0] = -torch.inf
    expected = windows[:, -1] % 12 + 1
    assert (scores.argmax(1) == expected).float().mean() > 0.9


def test_pop_ranks_by_training_counts():
    model = Pop(n_items=5, max_len=4)
    model.item_counts.zero_()
    model.loss(
        {keys.HISTORY: torch.zeros(2, 4, dtype=torch.long), keys.NEXT_ITEMS: torch.tensor([[0, 2, 2, 5], [0, 0, 2, 3]])}
    )
    scores = model.score_all({keys.HISTORY: torch.zeros(3, 4, dtype=torch.long)})
    assert scores.shape == (3, 6)
    assert scores[0, 1:].tolist() == [0, 3, 1, 0, 1]


def test_attention_mask_hides_padding_and_future_but_keeps_the_diagonal():
    mask = attention_mask(torch.tensor([[0, 4, 5]]))[0, 0]
    assert mask.tolist() == [[True, False, False], [False, True, False], [False, True, True]]


def test_sampled_negatives_never_hit_the_positive_and_cover_the_catalogue():
    positives = torch.randint(1, 11, (5000,))
    negatives = sample_negatives(positives, n_items=10, num=3)
    assert (negatives != positives.unsqueeze(-1)).all()
    assert negatives.min() >= 1 and negatives.max() <= 10 and len(negatives.unique()) == 10


def test_sasrec_trimming_shared_padding_changes_nothing():
    # A batch whose histories are all short is trimmed of its leading padding; scores and losses must be
    # those of the untrimmed computation (positions count from the latest item).
    model = tiny_sasrec()
    history = torch.tensor([[0, 0, 0, 0, 0, 3, 4, 5], [0, 0, 0, 0, 0, 0, 7, 9]])
    with torch.no_grad():
        trimmed = model.score_all({keys.HISTORY: history})
        full = model.encode(history)[:, -1] @ model.item_embedding.weight.T
        next_items = torch.tensor([[0, 0, 0, 0, 0, 4, 5, 6], [0, 0, 0, 0, 0, 0, 9, 10]])
        loss = model.loss({keys.HISTORY: history, keys.NEXT_ITEMS: next_items})
        hidden = model.encode(history)[next_items > 0]
        logits = hidden @ model.item_embedding.weight.T
        logits[:, 0] = -torch.inf
        expected = torch.nn.functional.cross_entropy(logits, next_items[next_items > 0])
    assert torch.allclose(trimmed, full, atol=1e-5)
    assert torch.allclose(loss, expected, atol=1e-5)
