"""The item representation (ID, text, fused) and the text-aware SASRec built on it."""

from __future__ import annotations

import pytest
import torch

from recsys_cli.errors import RecsysError
from recsys_cli.models.intent_sasrec import IntentSASRec
from recsys_cli.models.item_repr import FUSIONS, ItemRepresentation, TextAdaptor
from recsys_cli.models.sasrec import SASRec


def text_features(n_items: int = 10, dim: int = 12, seed: int = 0) -> torch.Tensor:
    features = torch.randn(n_items + 1, dim, generator=torch.Generator().manual_seed(seed))
    features[0] = 0
    return features


@pytest.mark.parametrize("fusion", FUSIONS)
def test_every_fusion_gives_a_table_with_a_zero_padding_row(fusion):
    items = ItemRepresentation(10, 8, fusion=fusion, text_features=text_features())
    table = items()
    assert table.shape == (11, 8)
    assert torch.all(table[0] == 0)
    assert torch.isfinite(table).all()
    table.sum().backward()  # every part is trainable end to end
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in items.parameters())


def test_text_fusion_scores_items_by_their_text_alone():
    # Two items with the same text get the same vector; an item's vector moves only with its text.
    features = text_features()
    features[5] = features[3]
    items = ItemRepresentation(10, 8, fusion="text", text_features=features).eval()
    table = items()
    assert torch.allclose(table[5], table[3])
    assert not torch.allclose(table[4], table[3])
    assert items.id_embedding is None


def test_the_text_features_are_standardised_so_any_encoder_scale_trains_alike():
    small = ItemRepresentation(10, 8, fusion="text", text_features=text_features()).eval()
    torch.manual_seed(0)
    large = ItemRepresentation(10, 8, fusion="text", text_features=text_features() * 100 + 7).eval()
    large.adaptor.load_state_dict(small.adaptor.state_dict())
    assert torch.allclose(small(), large(), atol=1e-4)


def test_moe_adaptor_mixes_experts_and_linear_is_one_expert():
    x = torch.randn(6, 12)
    moe = TextAdaptor(12, 8, kind="moe", n_experts=4, dropout=0.0)
    assert moe(x).shape == (6, 8)
    # Gate starts uniform: the output is the mean of the experts' whitened linear maps.
    experts = [(x - moe.whiten[e]) @ moe.weight[e] for e in range(4)]
    assert torch.allclose(moe(x), torch.stack(experts).mean(0), atol=1e-5)
    assert TextAdaptor(12, 8, kind="linear").weight.shape == (1, 12, 8)


def test_bad_settings_are_user_errors():
    with pytest.raises(RecsysError, match=r"model\.fusion"):
        ItemRepresentation(10, 8, fusion="sum", text_features=text_features())
    with pytest.raises(RecsysError, match=r"model\.adaptor"):
        TextAdaptor(12, 8, kind="mlp")
    with pytest.raises(RecsysError, match="fusion=id"):
        ItemRepresentation(10, 8, fusion="add", text_features=None)


def test_fusion_id_is_sasrec():
    # With fusion=id the text-aware model is SASRec: same parameters, same scores for the same weights.
    torch.manual_seed(0)
    sasrec = SASRec(n_items=10, max_len=6, hidden_size=8, num_heads=1, inner_size=16, num_layers=1).eval()
    model = IntentSASRec(n_items=10, max_len=6, fusion="id", hidden_size=8, num_heads=1, inner_size=16, num_layers=1)
    state = {k.replace("item_embedding.", "items.id_embedding."): v for k, v in sasrec.state_dict().items()}
    model.load_state_dict(state, strict=False)
    model.eval()
    batch = {"history": torch.tensor([[0, 0, 1, 2, 3, 4], [0, 0, 0, 0, 5, 9]])}
    assert torch.allclose(model.score_all(batch), sasrec.score_all(batch), atol=1e-5)


def top_two_after_learning_1_then_2(model) -> list[int]:
    """Train ``model`` on "after 3, 1 comes 2" only; the two items it then ranks first after 3, 1."""
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    batch = {"history": torch.tensor([[0, 0, 3, 1]] * 8), "next_items": torch.tensor([[0, 0, 1, 2]] * 8)}
    for _ in range(100):
        optimizer.zero_grad()
        model.loss(batch).backward()
        optimizer.step()
    scores = model.eval().score_all({"history": torch.tensor([[0, 0, 3, 1]])})[0]
    return ((scores[1:].argsort(descending=True) + 1)[:2]).tolist()


def test_text_aware_sasrec_learns_to_rank_an_item_by_its_text():
    # Items 1..10: item i+5 has the same text as item i. Trained on "after 1 comes 2" only, the text-only
    # model ranks item 7 (text of 2) high after item 1 too; the ID-only one has no reason to.
    features = text_features(10, 16)
    features[6:11] = features[1:6]
    torch.manual_seed(0)
    model = IntentSASRec(
        n_items=10,
        max_len=4,
        item_text=features,
        fusion="text",
        hidden_size=16,
        num_heads=1,
        inner_size=32,
        num_layers=1,
        dropout=0.0,
        text_dropout=0.0,
    )
    assert set(top_two_after_learning_1_then_2(model)) == {2, 7}


def query_model(conditioning: str = "both", **overrides) -> IntentSASRec:
    torch.manual_seed(0)
    settings = dict(hidden_size=16, num_heads=1, inner_size=32, num_layers=1, dropout=0.0, text_dropout=0.0)
    stats = torch.stack([torch.zeros(4), torch.ones(4)])
    return IntentSASRec(
        n_items=8,
        max_len=4,
        fusion="id",
        query_conditioning=conditioning,
        query_size=4,
        query_stats=stats,
        **{**settings, **overrides},
    )


def test_the_start_token_opens_every_history_and_makes_the_first_item_a_target():
    model = query_model()
    history = torch.tensor([[0, 0, 3, 4], [5, 6, 7, 8], [0, 0, 0, 0]])
    next_items = torch.tensor([[0, 0, 4, 2], [6, 7, 8, 1], [0, 0, 0, 0]])
    extended, targets = model._with_start(history, next_items)
    start = model.n_items + 1
    assert extended.tolist() == [[0, 0, start, 3, 4], [start, 5, 6, 7, 8], [0, 0, 0, 0, start]]
    # A padded row holds the user's whole history: its first item is the start token's target; a full
    # row (a window cut from a longer history) keeps its first item as input only.
    assert targets.tolist() == [[0, 0, 3, 4, 2], [0, 6, 7, 8, 1], [0, 0, 0, 0, 0]]


@pytest.mark.parametrize("conditioning", ["input", "output", "both"])
def test_a_query_alone_ranks_items_and_the_query_changes_the_ranking(conditioning):
    # Two "intents": query A leads to item 1, query B to item 2, whatever the history (users' first events
    # included: the start token learns them). After training, a user with no history is ranked by the query.
    model = query_model(conditioning)
    a, b = torch.tensor([1.0, 0, 0, 0]), torch.tensor([0, 1.0, 0, 0])
    history = torch.tensor([[0, 0, 3, 5]] * 4 + [[0, 0, 0, 1], [0, 0, 0, 2]])
    queries = torch.zeros(6, 5, 4)
    queries[:2, -2:], queries[2:4, -2:] = a, b  # the queries of the last history item and of the target
    queries[4, -2], queries[5, -2] = a, b  # a first event answering A (item 1) or B (item 2)
    next_items = torch.tensor([[0, 0, 5, 1]] * 2 + [[0, 0, 5, 2]] * 2 + [[0, 0, 0, 0]] * 2)
    batch = {"history": history, "next_items": next_items, "queries": queries}
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        optimizer.zero_grad()
        model.loss(batch).backward()
        optimizer.step()
    model.eval()
    empty = torch.zeros(2, 4, dtype=torch.long)
    only_query = torch.zeros(2, 5, 4)
    only_query[0, -1], only_query[1, -1] = a, b
    scores = model.score_all({"history": empty, "queries": only_query})
    assert scores.shape == (2, 9)
    assert scores[0, 1:].argmax() + 1 == 1 and scores[1, 1:].argmax() + 1 == 2


def test_without_queries_in_the_data_the_model_is_the_text_aware_sasrec():
    model = IntentSASRec(
        n_items=8,
        max_len=4,
        fusion="id",
        query_conditioning="both",
        query_size=0,
        hidden_size=8,
        num_heads=1,
        inner_size=16,
        num_layers=1,
    )
    assert model.conditioning == "none" and model.query_encoder_name is None
    assert model.position_embedding.num_embeddings == 4


def test_query_dropout_hides_queries_in_training_only():
    model = query_model("input", query_dropout=1.0)
    batch = {"history": torch.tensor([[0, 0, 3, 5]]), "next_items": torch.tensor([[0, 0, 5, 1]])}
    with_queries = {**batch, "queries": torch.ones(1, 5, 4)}
    torch.manual_seed(0)
    hidden_all = model.loss(with_queries)
    torch.manual_seed(0)
    assert torch.allclose(hidden_all, model.loss(batch))  # every query hidden: as if there were none
    model.eval()
    scored = {"history": batch["history"], "queries": torch.ones(1, 5, 4)}
    assert not torch.allclose(model.score_all(scored), model.score_all({"history": batch["history"]}))


@pytest.mark.parametrize("name", ["gru4rec", "hstu"])
def test_other_sequence_models_read_item_text_through_the_same_representation(name):
    # The text-sharing task of test_text_aware_sasrec_learns_to_rank_an_item_by_its_text, for GRU4Rec and HSTU:
    # trained on "after 1 comes 2", the text-only model ranks item 7 (text of 2) with it; fusion=id keeps the
    # plain ID embedding (checkpoints of ID-only models keep their names).
    from recsys_cli.models.gru4rec import GRU4Rec
    from recsys_cli.models.hstu import HSTU

    features = text_features(10, 16)
    features[6:11] = features[1:6]
    cls, sizes = (
        (GRU4Rec, {"embedding_size": 16, "hidden_size": 16}) if name == "gru4rec" else (HSTU, {"hidden_size": 16})
    )
    plain = cls(n_items=10, max_len=4, **sizes)
    assert "item_embedding.weight" in plain.state_dict() and plain.items is None
    torch.manual_seed(0)
    model = cls(n_items=10, max_len=4, item_text=features, fusion="text", dropout=0.0, text_dropout=0.0, **sizes)
    assert "item_text" not in model.hparams and model.hparams["fusion"] == "text"  # tensors stay out of hparams
    assert set(top_two_after_learning_1_then_2(model)) == {2, 7}


def test_fast_dropout_keeps_the_rate_scales_the_kept_and_follows_the_seed():
    import torch

    from recsys_cli.models.components import fast_dropout

    x = torch.ones(1000, 1000)
    torch.manual_seed(0)
    y = fast_dropout(x, 0.2)
    kept = y != 0
    assert abs(kept.float().mean().item() - (1 - 51 / 256)) < 0.002  # 0.2 to the nearest 1/256
    assert torch.allclose(y[kept], torch.full_like(y[kept], 256 / 205))  # expectation unchanged
    torch.manual_seed(0)
    assert torch.equal(fast_dropout(x, 0.2), y)  # seeded by torch's generator
    assert fast_dropout(x, 0.2, training=False) is x and fast_dropout(x, 0.0) is x
    x.requires_grad_(True)
    out = fast_dropout(x, 0.5)
    out.sum().backward()
    assert set(x.grad.unique().tolist()) <= {0.0, 2.0}
    assert torch.equal(x.grad != 0, out != 0)  # the gradient flows exactly where values were kept
