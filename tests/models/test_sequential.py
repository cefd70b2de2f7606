"""GRU4Rec, BERT4Rec, HSTU and the sampled softmax: properties of each model and training end to end."""

import pytest
import torch

from recsys_cli.checkpoint import build_module, load_checkpoint
from recsys_cli.config import compose_config
from recsys_cli.data import batch as keys
from recsys_cli.models.bert4rec import BERT4Rec
from recsys_cli.models.components import SampledSoftmax
from recsys_cli.models.gru4rec import GRU4Rec, right_align
from recsys_cli.models.hstu import HSTU
from recsys_cli.models.sasrec import SASRec
from recsys_cli.tasks import evaluate, train
from tests.conftest import TINY_DATA

SIZES = {
    "gru4rec": dict(embedding_size=16, hidden_size=16),
    "bert4rec": dict(hidden_size=16, inner_size=32, num_heads=1, num_layers=1),
    "hstu": dict(hidden_size=16, num_heads=2, num_layers=2),
}
CLASSES = {"gru4rec": GRU4Rec, "bert4rec": BERT4Rec, "hstu": HSTU}


def tiny_model(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return CLASSES[name](n_items=30, max_len=8, **{**SIZES[name], "dropout": 0.0, **kwargs}).eval()


def eval_batch(history: list[list[int]], times: list[list[int]] | None = None) -> dict[str, torch.Tensor]:
    history = torch.tensor(history)
    times = torch.tensor(times) if times is not None else (history > 0).cumsum(1) * (history > 0)
    return {keys.HISTORY: history, keys.TIMESTAMPS: times}


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_score_all_has_a_column_per_item_and_padding_changes_nothing(name):
    model = tiny_model(name)
    short = eval_batch([[0, 0, 0, 3, 4, 5], [0, 0, 0, 0, 7, 9]], [[0, 0, 0, 10, 50, 900], [0, 0, 0, 0, 5, 6]])
    padded = {key: torch.nn.functional.pad(value, (2, 0)) for key, value in short.items()}  # 2 more leading 0s
    mixed = eval_batch([[0, 0, 0, 3, 4, 5], [1, 2, 3, 4, 7, 9]], [[0, 0, 0, 10, 50, 900], [1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        scores = model.score_all(short)
        assert scores.shape == (2, 31) and torch.isfinite(scores).all()
        assert torch.allclose(scores, model.score_all(padded), atol=1e-5)
        # A row scores the same beside a longer history (whose batch keeps more columns) as alone.
        assert torch.allclose(scores[0], model.score_all(mixed)[0], atol=1e-5)
        candidates = torch.tensor([[4, 6, 30], [1, 2, 3]])
        assert torch.allclose(model.score(short, candidates), scores.gather(1, candidates), atol=1e-5)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_training_loss_ignores_extra_leading_padding(name):
    model = tiny_model(name)
    history = torch.tensor([[0, 0, 3, 4, 5], [0, 0, 0, 7, 9]])
    batch = {keys.HISTORY: history, keys.NEXT_ITEMS: torch.tensor([[0, 0, 4, 5, 6], [0, 0, 0, 9, 10]])}
    batch[keys.TIMESTAMPS] = (history > 0).cumsum(1) * (history > 0)
    padded = {key: torch.nn.functional.pad(value, (3, 0)) for key, value in batch.items()}
    torch.manual_seed(1)
    loss = model.loss(batch)
    torch.manual_seed(1)  # BERT4Rec's masking draws per column: the padded batch trims to the same shape
    assert torch.allclose(loss, model.loss(padded), atol=1e-5)


def test_gru4rec_right_align_keeps_order_and_moves_padding_last():
    history = torch.tensor([[0, 0, 3, 4], [1, 2, 3, 4], [0, 0, 0, 0]])
    aligned, times = right_align(history, history * 10)
    assert aligned.tolist() == [[3, 4, 0, 0], [1, 2, 3, 4], [0, 0, 0, 0]]
    assert times.tolist() == [[30, 40, 0, 0], [10, 20, 30, 40], [0, 0, 0, 0]]


@pytest.mark.parametrize("name", ["gru4rec", "hstu"])
def test_causal_models_ignore_later_items_at_earlier_positions(name):
    model = tiny_model(name)
    history = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8]])
    changed = history.clone()
    changed[0, -1] = 20
    times = torch.tensor([[0, 0, 1, 5, 9, 20, 30, 40]])
    with torch.no_grad():
        if name == "hstu":
            a, b = model.encode(history, times), model.encode(changed, times)
        else:
            a, b = model.encode(right_align(history)[0]), model.encode(right_align(changed)[0])
    real = slice(2, 7) if name == "hstu" else slice(0, 5)  # GRU outputs are right-aligned
    assert torch.allclose(a[:, real], b[:, real], atol=1e-6)
    assert not torch.allclose(a[:, -1], b[:, -1])


def test_hstu_time_bias_reads_timestamps():
    model = tiny_model("hstu")
    with torch.no_grad():  # learned biases start at zero: give every time bucket its own value
        for layer in model.layers:
            layer.time_bias.copy_(torch.linspace(-2, 2, len(layer.time_bias)))
        close = model.score_all(eval_batch([[0, 3, 4, 5]], [[0, 100, 101, 102]]))
        apart = model.score_all(eval_batch([[0, 3, 4, 5]], [[0, 100, 100_000, 10_000_000]]))
        untimed = tiny_model("hstu", num_time_buckets=0)
        untimed_close = untimed.score_all(eval_batch([[0, 3, 4, 5]], [[0, 100, 101, 102]]))
        untimed_apart = untimed.score_all(eval_batch([[0, 3, 4, 5]], [[0, 100, 100_000, 10_000_000]]))
    assert not torch.allclose(close, apart, atol=1e-4)
    assert torch.allclose(untimed_close, untimed_apart)


def test_bert4rec_masks_only_real_items_and_never_ranks_mask():
    model = tiny_model("bert4rec", mask_prob=0.5)
    sequence = torch.tensor([[0, 0, 0, 3, 4, 5, 6, 7, 8]] * 200)
    masked = model.mask_items(sequence)
    assert not masked[:, :3].any()  # padding is never masked
    assert masked.any(1).all()  # every window contributes
    assert 0.4 < masked[:, 3:].float().mean() < 0.65
    with torch.no_grad():
        scores = model.score_all(eval_batch([[0, 3, 4], [1, 2, 3]]))
    assert scores.shape == (2, model.n_items + 1)  # column n_items + 1 ([MASK]) does not exist


def test_bert4rec_next_item_windows_mask_one_item_and_drop_what_follows():
    torch.manual_seed(0)
    model = tiny_model("bert4rec", mask_prob=0.5, next_item_ratio=0.5)
    sequence = torch.tensor([[0, 0, 0, 3, 4, 5, 6, 7, 8]] * 400 + [[0, 0, 0, 0, 0, 0, 0, 0, 9]] * 100)
    everything = sequence > 0  # every real item masked: a next-item sample is a row with exactly one
    cut, masked = model.cut_for_next_item(sequence, everything)
    changed = masked.sum(1) == 1
    samples = cut[:400][changed[:400]]
    assert 0.35 < changed[:400].float().mean() < 0.65  # about half the windows become next-item samples
    assert torch.equal(masked[:400][~changed[:400]], everything[:400][~changed[:400]])  # the rest as they were
    position = masked[:400][changed[:400]].int().argmax(1)
    assert (position >= 4).all()  # at least one real item before the masked one
    columns = torch.arange(9)
    assert (samples[columns > position[:, None]] == 0).all()  # what follows it is gone
    kept = columns[None, :] <= position[:, None]
    assert torch.equal(samples[kept], sequence[:400][changed[:400]][kept])  # what precedes it is untouched
    assert set(position.tolist()) == {4, 5, 6, 7, 8}  # every position can be the cut
    assert torch.equal(cut[400:], sequence[400:]) and torch.equal(masked[400:], everything[400:])  # nothing before it
    model.train()
    loss = model.loss({keys.HISTORY: sequence[:8, :-1], keys.NEXT_ITEMS: sequence[:8, 1:]})
    assert torch.isfinite(loss)
    with pytest.raises(Exception, match=r"next_item_ratio=1\.5 must be between 0 and 1"):
        tiny_model("bert4rec", next_item_ratio=1.5)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_bert4rec_prefix_queries_see_only_the_items_before_them(num_layers):
    model = tiny_model("bert4rec", num_layers=num_layers, next_item_weight=1.0)
    window = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8, 9], [0, 0, 0, 0, 0, 0, 0, 2, 11]])
    with torch.no_grad():
        queries = model.encode_prefixes(window)
        changed = window.clone()
        changed[0, 6:] = torch.tensor([20, 21, 22])  # items 6.. differ: queries up to column 6 must not
        changed_queries = model.encode_prefixes(changed)
    assert torch.allclose(queries[0, :7], changed_queries[0, :7], atol=1e-6)
    assert not torch.allclose(queries[0, 7:], changed_queries[0, 7:], atol=1e-3)
    with torch.no_grad():  # queries from a later column only: the same outputs there
        assert torch.allclose(model.encode_prefixes(window, start=5), queries[:, 5:], atol=1e-6)
        rows = torch.rand(window.shape) < 0.3  # the masked-item pass computes the masked positions alone
        assert torch.allclose(model.encode(window, rows=rows), model.encode(window)[rows], atol=1e-6)
    if num_layers == 1:  # exactly ranking's [MASK] after each prefix
        for column in range(3, 9):
            batch = eval_batch([window[0, :column].tolist()])
            with torch.no_grad():
                assert torch.allclose(model.last_output(batch)[0], queries[0, column], atol=1e-5)
    model.train()
    history, next_items = window[:, :-1], window[:, 1:] * (window[:, :-1] > 0)
    loss = model.loss({keys.HISTORY: history, keys.NEXT_ITEMS: next_items})
    assert torch.isfinite(loss)
    loss.backward()
    with pytest.raises(Exception, match=r"next_item_weight=-1\.0 must be at least 0"):
        tiny_model("bert4rec", next_item_weight=-1.0)


def test_sampled_softmax_never_counts_the_positive_as_a_negative():
    # Three items and 64 shared negatives: each row's positive is drawn many times. If any of those
    # draws counted against it, a row whose positive logit towers over the others would still cost
    # about log(1 + draws); masked, it costs ~0.
    torch.manual_seed(0)
    item_weight = torch.eye(4) * 30
    hidden = item_weight[[1, 2, 3, 2]]
    targets = torch.tensor([1, 2, 3, 2])
    for sampling in ("uniform", "popularity"):
        loss = SampledSoftmax(n_items=3, num_negatives=64, sampling=sampling).train()(hidden, targets, item_weight)
        assert loss.item() < 1e-3, sampling
    wrong = SampledSoftmax(n_items=3, num_negatives=64)(hidden, torch.tensor([2, 3, 1, 1]), item_weight)
    assert wrong.item() > 10


def test_sampled_softmax_popularity_sampling_follows_training_frequency():
    sampler = SampledSoftmax(n_items=4, num_negatives=20_000, sampling="popularity").train()
    sampler(torch.zeros(100, 2), torch.tensor([1] * 96 + [2, 3, 4, 4]), torch.zeros(5, 2))
    negatives, log_q = sampler.draw(torch.device("cpu"))
    frequency = torch.bincount(negatives, minlength=5).float() / len(negatives)
    expected = torch.tensor([0, 97, 2, 2, 3]) / 104  # counts + 1 smoothing
    assert torch.allclose(frequency, expected, atol=0.01)
    assert torch.allclose(log_q[1:], torch.log(expected[1:] * 20_000))


def test_sasrec_and_hstu_train_with_sampled_softmax_on_a_successor_rule():
    # item i is always followed by i + 1; sampled softmax (uniform and popularity) must learn it.
    sequences = torch.arange(12).unsqueeze(1) + torch.arange(9).unsqueeze(0)
    windows = sequences % 12 + 1
    batch = {keys.HISTORY: windows[:, :-1], keys.NEXT_ITEMS: windows[:, 1:]}
    for model_class, sampling in ((SASRec, "uniform"), (HSTU, "popularity")):
        torch.manual_seed(0)
        model = model_class(
            n_items=12,
            max_len=8,
            hidden_size=16,
            num_layers=1,
            num_heads=1,
            dropout=0.0,
            loss="sampled",
            num_negatives=6,
            sampling=sampling,
        )
        optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
        for _ in range(150):
            optimizer.zero_grad()
            model.loss(batch).backward()
            optimizer.step()
        with torch.no_grad():
            scores = model.eval().score_all({keys.HISTORY: windows[:, 1:]})
        scores[:, 0] = -torch.inf
        assert (scores.argmax(1) == windows[:, -1] % 12 + 1).float().mean() > 0.9, model_class.__name__


def test_unknown_losses_and_samplings_are_user_errors():
    from recsys_cli.errors import RecsysError

    with pytest.raises(RecsysError, match=r"unknown HSTU loss 'bce'; set model\.loss to one of: ce, sampled, gbce"):
        HSTU(n_items=5, max_len=3, loss="bce")
    with pytest.raises(RecsysError, match="unknown negative sampling 'zipf'"):
        SASRec(n_items=5, max_len=3, loss="sampled", sampling="zipf")
    with pytest.raises(RecsysError, match="mask_prob"):
        BERT4Rec(n_items=5, max_len=3, mask_prob=1.0)


SIGNAL_DATA = [*TINY_DATA, "data.source.n_users=150", "logger=none", "trainer.enable_progress_bar=false"]
SIGNAL_RUNS = {  # small models with a high learning rate: a few seconds each on the tiny shop
    "gru4rec": ["model.embedding_size=32", "model.hidden_size=32", "model.dropout=0.1", "trainer.max_epochs=15"],
    "bert4rec": [
        *("model.hidden_size=32", "model.inner_size=64", "model.num_heads=1", "model.num_layers=1"),
        *("model.mask_prob=0.4", "model.dropout=0.1", "model.lr_decay=null", "data.window_stride=null"),
        "trainer.max_epochs=30",  # masked and every-prefix next-item training (the defaults), constant lr
        "train.patience=30",  # on this tiny shop BERT4Rec can sit on a plateau for 10 epochs before it learns
    ],
    "hstu": ["model.hidden_size=16", "model.num_layers=1", "trainer.max_epochs=6"],
}


@pytest.fixture(scope="module")
def signal_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], float]:
    """Overrides for the tiny shop (processed once, shared) and popularity's test NDCG@10 on it."""
    data_dir = tmp_path_factory.mktemp("signal_data")
    common = [f"paths.data_dir={data_dir}", *SIGNAL_DATA]
    pop = train.run(compose_config([*common, f"paths.runs_dir={data_dir / 'runs'}", "model=pop"]))
    return common, pop.metrics["test"]["test/ndcg@10"]


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_model_beats_popularity_through_train_and_its_checkpoint_round_trips(name, signal_data, tmp_path):
    common, pop_ndcg = signal_data
    overrides = [*common, f"paths.runs_dir={tmp_path}", f"model={name}", "model.lr=0.01", *SIGNAL_RUNS[name]]
    result = train.run(compose_config(overrides))
    ndcg = result.metrics["test"]["test/ndcg@10"]
    assert ndcg > 1.5 * pop_ndcg, (ndcg, pop_ndcg)
    # The checkpoint alone rebuilds the model: `recsys eval` reproduces the metrics train reported.
    again = evaluate.run(result.best_checkpoint, output=tmp_path / "eval.json").metrics
    assert again["test"]["test/ndcg@10"] == pytest.approx(ndcg, abs=1e-6)
    module = build_module(load_checkpoint(result.best_checkpoint, kind="recommender"))
    assert type(module) is CLASSES[name] and not module.training


def test_sasrec_attention_dropout_is_its_own_setting():
    import torch.nn.functional as F

    from recsys_cli.models.sasrec import SASRec

    follows = SASRec(n_items=30, max_len=8, hidden_size=16, num_heads=2, inner_size=32, dropout=0.3)
    assert all(block.attention.dropout == 0.3 for block in follows.blocks)  # null: as dropout
    fused = SASRec(n_items=30, max_len=8, hidden_size=16, num_heads=2, inner_size=32, dropout=0.3, attn_dropout=0.0)
    assert all(block.attention.dropout == 0.0 for block in fused.blocks)
    assert all(block.dropout.p == 0.3 for block in fused.blocks)  # the hidden states keep theirs
    # without attention dropout, training runs the fused kernel, and it gives what the spelled-out product gives
    attention = fused.blocks[0].attention.train()
    x = torch.randn(3, 8, 16)
    mask = torch.ones(3, 1, 8, 8, dtype=torch.bool).tril()
    calls = []
    original = F.scaled_dot_product_attention
    try:
        F.scaled_dot_product_attention = lambda *a, **k: calls.append(1) or original(*a, **k)
        fused_out = attention(x, mask)
    finally:
        F.scaled_dot_product_attention = original
    assert calls
    attention.dropout = 1e-9  # the spelled-out path (a dropout too small to drop anything)
    assert torch.allclose(attention(x, mask), fused_out, atol=1e-5)
