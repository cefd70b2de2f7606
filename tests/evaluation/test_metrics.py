import math

import torch

from recsys_cli.data import batch as keys
from recsys_cli.evaluation.metrics import hit_matrix, ranking_metrics, top_k
from recsys_cli.evaluation.protocol import evaluate_batch


def test_single_target_metrics_match_hand_computation():
    # user 0: target ranked 2nd; user 1: target ranked 5th; user 2: not in top 5
    topk = torch.tensor([[7, 3, 9, 1, 2], [1, 2, 4, 6, 8], [1, 2, 3, 4, 5]])
    targets = torch.tensor([[3], [8], [9]])
    m = ranking_metrics(hit_matrix(topk, targets), (targets > 0).sum(1), [1, 3, 5])
    assert m["hr@1"].tolist() == [0, 0, 0]
    assert m["hr@3"].tolist() == [1, 0, 0]
    assert m["hr@5"].tolist() == [1, 1, 0]
    assert torch.allclose(m["ndcg@5"], torch.tensor([1 / math.log2(3), 1 / math.log2(6), 0.0]))
    assert torch.allclose(m["mrr@5"], torch.tensor([0.5, 0.2, 0.0]))
    assert torch.allclose(m["mrr@3"], torch.tensor([0.5, 0.0, 0.0]))
    assert torch.allclose(m["precision@5"], torch.tensor([0.2, 0.2, 0.0]))
    assert torch.allclose(m["recall@5"], torch.tensor([1.0, 1.0, 0.0]))


def test_multi_target_metrics_use_ideal_dcg_of_available_hits():
    topk = torch.tensor([[5, 1, 6, 2]])
    targets = torch.tensor([[1, 2, 3, 0]])  # three targets, padded; hits at ranks 2 and 4
    m = ranking_metrics(hit_matrix(topk, targets), (targets > 0).sum(1), [2, 4])
    dcg4 = 1 / math.log2(3) + 1 / math.log2(5)
    idcg4 = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert math.isclose(m["ndcg@4"].item(), dcg4 / idcg4, rel_tol=1e-6)
    idcg2 = 1 + 1 / math.log2(3)
    assert math.isclose(m["ndcg@2"].item(), (1 / math.log2(3)) / idcg2, rel_tol=1e-6)
    assert math.isclose(m["recall@4"].item(), 2 / 3, rel_tol=1e-6)
    assert math.isclose(m["precision@4"].item(), 0.5, rel_tol=1e-6)
    assert m["mrr@4"].item() == 0.5
    assert m["hr@2"].item() == 1.0


def test_padding_in_targets_never_counts_as_hit():
    topk = torch.tensor([[0, 4]])  # even if padding were ranked it must not match padded targets
    targets = torch.tensor([[4, 0]])
    hits = hit_matrix(topk, targets)
    assert hits.tolist() == [[False, True]]


def test_protocol_masks_padding_and_optionally_history():
    scores = torch.tensor([[9.0, 8.0, 7.0, 1.0, 0.5]])  # item 0 is padding and must never be ranked
    batch = {
        keys.TARGETS: torch.tensor([[3]]),
        keys.SEEN_ROWS: torch.tensor([0, 0]),
        keys.SEEN_ITEMS: torch.tensor([1, 2]),
    }
    unmasked = evaluate_batch(scores, batch, [1, 3], mask_history=False)
    assert unmasked["hr@3"].item() == 1.0 and unmasked["hr@1"].item() == 0.0  # ranking 1, 2, 3
    masked = evaluate_batch(scores, batch, [1, 3], mask_history=True)
    assert masked["hr@1"].item() == 1.0  # items 1 and 2 were seen, so item 3 comes first
    assert top_k(scores, 2).tolist() == [[0, 1]]
