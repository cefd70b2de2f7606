import pytest
import torch

from recsys_cli.models import probe


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 1, 2]).repeat(n // 8 + 1)[:n]  # imbalanced: 3/4 are class 0
    centres = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0]])
    return centres[labels] + torch.randn(n, 3, generator=generator), labels


def test_linear_probe_separates_classes_and_picks_l2_on_validation():
    x, y = _blobs(320, 0)
    vx, vy = _blobs(96, 1)
    logits_of, l2 = probe.linear_probe_classifier(x, y, vx, vy, n_classes=3, l2_grid=(1e-4, 10.0))
    tx, ty = _blobs(96, 2)
    assert (logits_of(tx).argmax(1) == ty).float().mean() > 0.95
    # a huge penalty shrinks the weights until the (unpenalised) bias says "class 0" for every text
    assert l2 == 1e-4


def test_ridge_recovers_a_linear_target():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(400, 5, generator=generator)
    w = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0])
    y = x @ w + 3.0
    predict, alpha = probe.ridge_regressor(x[:300], y[:300], x[300:], y[300:], alphas=(0.01, 1e4))
    assert alpha == 0.01
    assert torch.allclose(predict(x[300:]), y[300:], atol=0.05)


@pytest.mark.parametrize(
    ("name", "prompt"),
    [("card_arrival", "card arrival"), ("getExchangeRate", "get exchange rate"), ("Top-Up  failed", "top up failed")],
)
def test_label_prompt(name, prompt):
    assert probe.label_prompt(name) == prompt


def test_zero_shot_picks_the_most_similar_label_by_cosine():
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[10.0, 1.0], [0.1, 0.2], [-1.0, 0.0]])
    scores = probe.zero_shot_scores(texts, labels)
    assert scores.shape == (3, 2)
    assert scores.argmax(1).tolist() == [0, 1, 1]
    assert scores[0, 0] == pytest.approx(10 / (101**0.5))
