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


@pytest.mark.parametrize("loss", ["ce", "bce", "gbce"])
def test_sasrec_learns_a_deterministic_successor_rule(loss):
    # item i is always followed by i + 1: after training, the top item after [.., i] must be i + 1.
    torch.manual_seed(0)
    model = tiny_sasrec(loss=loss, num_layers=1, n_items=12, num_negatives=8).train()
    sequences = np.concatenate([np.arange(s, s + 9) % 12 + 1 for s in range(12)])
    starts, ends = np.arange(12) * 9, np.arange(1, 13) * 9
    windows = torch.from_numpy(training_windows(sequences, starts, ends, 8))
    batch = {keys.HISTORY: windows[:, :-1], keys.NEXT_ITEMS: windows[:, 1:]}
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    first = None
    for _ in range(300 if loss == "gbce" else 150):  # a few shared negatives: more steps
        optimizer.zero_grad()
        value = model.loss(batch)
        first = first if first is not None else value.item()
        value.backward()
        optimizer.step()
    assert value.item() < first / (1.5 if loss == "gbce" else 3)  # gBCE's mean spreads over 1 + K logits
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


def test_gbce_matches_its_formula_and_leaves_a_negative_equal_to_the_positive_out():
    from recsys_cli.models.components import gbce_loss

    torch.manual_seed(0)
    hidden, table = torch.randn(3, 4), torch.randn(11, 4)  # 10 items
    targets, negatives = torch.tensor([1, 5, 7]), torch.tensor([5, 2, 9])
    alpha, t = 3 / 9, 0.75
    beta = alpha * (t * (1 - 1 / alpha) + 1 / alpha)
    positive = (hidden * table[targets]).sum(-1)
    negative = hidden @ table[negatives].T
    negative_cost = torch.nn.functional.softplus(negative)
    negative_cost[1, 0] = 0  # row 1's positive (5) was drawn as a negative: not counted against it
    expected = (beta * torch.nn.functional.softplus(-positive).sum() + negative_cost.sum()) / (3 * 4)
    assert torch.allclose(gbce_loss(hidden, targets, table, negatives, t), expected)
    # t = 0 is plain binary cross-entropy (beta = 1)
    plain = (torch.nn.functional.softplus(-positive).sum() + negative_cost.sum()) / 12
    assert torch.allclose(gbce_loss(hidden, targets, table, negatives, 0.0), plain)


def test_gbce_t_out_of_range_is_a_user_error():
    from recsys_cli.errors import RecsysError

    with pytest.raises(RecsysError, match=r"model\.gbce_t=1\.5 must lie between 0 and 1"):
        tiny_sasrec(loss="gbce", gbce_t=1.5)


def test_step_schedule_warms_up_then_decays_to_zero():
    from recsys_cli.models.base import StepSchedule

    cosine = StepSchedule("cosine", warmup=4, total=14)
    assert [cosine(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert cosine(4) == 1.0 and abs(cosine(9) - 0.5) < 1e-9 and cosine(14) == 0.0 and cosine(20) == 0.0
    linear = StepSchedule("linear", warmup=0, total=10)
    assert [round(linear(s), 2) for s in (0, 5, 10)] == [1.0, 0.5, 0.0]
    assert StepSchedule("constant", warmup=2, total=10)(7) == 1.0


def test_unknown_schedules_and_plateau_with_warmup_are_user_errors():
    from recsys_cli.errors import RecsysError

    with pytest.raises(RecsysError, match=r"unknown model\.lr_schedule 'step'"):
        tiny_sasrec(lr_schedule="step")
    with pytest.raises(RecsysError, match=r"model\.lr_decay \(decay on a plateau\) cannot be combined"):
        tiny_sasrec(lr_decay=0.5, warmup_epochs=1)
    with pytest.raises(RecsysError, match="warmup_epochs=-1 must be 0 or more"):
        tiny_sasrec(warmup_epochs=-1)


@pytest.mark.parametrize("rows", [1, 7, 300])
def test_chunked_cross_entropy_gives_the_loss_and_gradients_of_the_full_softmax(rows, monkeypatch):
    from recsys_cli.models import components

    monkeypatch.setattr(components, "CE_CHUNK_ENTRIES", 40 * 11)  # chunks of 40 rows: several, and a ragged last
    torch.manual_seed(0)
    hidden = torch.randn(rows, 6, dtype=torch.float64, requires_grad=True)
    table = torch.randn(11, 6, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(1, 11, (rows,))
    (components.full_softmax_loss(hidden, targets, table) * 3).backward()
    mine = hidden.grad.clone(), table.grad.clone()
    hidden.grad = table.grad = None
    logits = hidden @ table.T
    logits = torch.cat([torch.full_like(logits[:, :1], -torch.inf), logits[:, 1:]], dim=1)
    expected = torch.nn.functional.cross_entropy(logits, targets) * 3
    expected.backward()
    assert torch.allclose(components.full_softmax_loss(hidden, targets, table), expected / 3)
    assert torch.allclose(mine[0], hidden.grad) and torch.allclose(mine[1], table.grad)


def test_chunked_cross_entropy_stays_exact_when_the_targets_probability_underflows():
    from recsys_cli.models import components

    # float32 logits 200 apart: the target's softmax probability is 0 in float32; the loss must stay finite
    hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], requires_grad=True)
    table = torch.tensor([[0.0, 0.0], [200.0, 0.0], [0.0, 200.0], [-200.0, 0.0]], requires_grad=True)
    targets = torch.tensor([3, 2, 1])
    loss = components.full_softmax_loss(hidden, targets, table)
    logits = (hidden @ table.T).double()
    logits[:, 0] = -torch.inf
    expected = torch.nn.functional.cross_entropy(logits, targets)
    assert torch.isfinite(loss) and abs(loss.item() - expected.item()) < 1e-3 * expected.item()
    loss.backward()
    assert torch.isfinite(hidden.grad).all() and torch.isfinite(table.grad).all()


@pytest.mark.parametrize("limit", [[], ["trainer.max_time=00:00:30:00"]])  # time to spare: the planned decay
def test_warmup_and_cosine_schedule_run_through_train_and_are_logged(workdir, limit):
    # 120 users / batch 64 = 2 steps per epoch, 3 epochs: warm-up over epoch 1, then cosine to 0 at step 6.
    import pandas as pd

    from recsys_cli.config import compose_config
    from recsys_cli.tasks import train
    from tests.conftest import TINY_DATA, TINY_MODEL

    overrides = [*workdir, *TINY_DATA, *TINY_MODEL, "model=sasrec", "trainer.max_epochs=3", "logger=csv"]
    overrides += ["model.lr=0.01", "model.warmup_epochs=1", "model.lr_schedule=cosine", "train.patience=10", *limit]
    result = train.run(compose_config(overrides))
    log = pd.read_csv(result.run_dir / "logs" / "metrics.csv")
    lrs = log["train/lr"].dropna().tolist()
    assert lrs == pytest.approx([0.01, 0.005, 0.0], abs=1e-9)  # after steps 2, 4 and 6
    seconds = log["time/elapsed_s"].dropna().tolist()
    assert len(seconds) == 3 and seconds == sorted(seconds) and seconds[0] > 0


def test_a_decaying_schedule_ends_with_the_last_epoch_that_fits_in_the_time_limit():
    from recsys_cli.models.base import StepSchedule

    schedule = StepSchedule("cosine", warmup=10, total=1000)  # 10 steps per epoch, 100 epochs planned
    schedule.fit_in_time(step=10, steps_per_epoch=10, seconds_per_epoch=30.0, seconds_left=95.0)
    assert schedule.total == 40 and schedule(40) == 0.0  # three more epochs fit in 95 s
    schedule.fit_in_time(step=20, steps_per_epoch=10, seconds_per_epoch=10.0, seconds_left=10_000.0)
    assert schedule.total == 1000  # never past the planned end (trainer.max_epochs)
    schedule.fit_in_time(step=30, steps_per_epoch=10, seconds_per_epoch=30.0, seconds_left=-5.0)
    assert schedule.total == 31 and schedule(31) == 0.0


def test_dropout_auto_follows_the_training_datas_density(workdir):
    from recsys_cli.config import compose_config
    from recsys_cli.data.spec import DataSpec
    from recsys_cli.errors import RecsysError
    from recsys_cli.models.hstu import HSTU
    from recsys_cli.tasks import train
    from tests.conftest import TINY_DATA, TINY_MODEL

    dense = DataSpec(n_users=10, n_items=20, max_len=5, item_counts=torch.tensor([0] + [5] * 20))  # 50%
    sparse = DataSpec(n_users=1000, n_items=2000, max_len=5, item_counts=torch.tensor([0] + [3] * 2000))  # 0.3%
    for cls in (SASRec, HSTU):
        assert cls.data_arguments(dense, {"dropout": "auto"})["dropout"] == 0.2
        assert cls.data_arguments(sparse, {"dropout": "auto"})["dropout"] == 0.5
        assert "dropout" not in cls.data_arguments(sparse, {"dropout": 0.1})  # a number is the user's choice
    assert SASRec.data_arguments(DataSpec(n_items=20, max_len=5), {"dropout": "auto"})["dropout"] == 0.2
    with pytest.raises(RecsysError, match=r"model\.dropout=high"):
        SASRec.data_arguments(sparse, {"dropout": "high"})
    # Through train: the config keeps "auto", the checkpoint the number the model trained with.
    overrides = [*workdir, *TINY_DATA, *TINY_MODEL, "model=sasrec", "trainer=debug", "logger=none"]
    result = train.run(compose_config(overrides))
    assert "dropout: auto" in (result.run_dir / "config.yaml").read_text()
    checkpoint = torch.load(result.best_checkpoint, map_location="cpu", weights_only=False)
    assert checkpoint["hyper_parameters"]["dropout"] in (0.2, 0.5)


def test_lookup_gives_the_values_and_gradient_of_indexing():
    from recsys_cli.models.components import lookup

    torch.manual_seed(0)
    table = torch.randn(7, dtype=torch.float64, requires_grad=True)
    index = torch.randint(0, 7, (3, 5, 5))
    weights = torch.randn(3, 5, 5, dtype=torch.float64)
    (lookup(table, index) * weights).sum().backward()
    mine = table.grad.clone()
    table.grad = None
    (table[index] * weights).sum().backward()
    assert torch.equal(lookup(table, index), table[index]) and torch.allclose(mine, table.grad)
    assert torch.equal(lookup(table.detach(), index), table.detach()[index])
