"""The evaluation protocol, as a Lightning callback: full or sampled ranking, beyond-accuracy metrics.

Models only score: their ``validation_step``/``test_step`` return ``[B, n_items + 1]`` scores. This
callback owns everything else: the padding column and (optionally) the user's history are masked,
items are ranked, metrics are computed per user, gathered across processes (each user counted once)
and logged as ``val/ndcg@10``, ``test/hr@20``, ... so that early stopping and checkpointing can
monitor them.

- Full ranking (default): every item is ranked.
- Sampled ranking: each user's targets are ranked among ``num_negatives`` sampled items
  (:mod:`recsys_cli.evaluation.sampling`: never the user's history or targets, the same for a user in
  every round), scored by the model's ``score(batch, candidates)``. Ties are pessimistic: a target
  tied with a negative ranks below it, so a model that scores everything alike earns nothing.
- Beyond accuracy, under either ranking: catalogue coverage, novelty and average recommendation
  popularity of the full-ranking top-K lists (:mod:`recsys_cli.evaluation.metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from recsys_cli.data import batch as keys
from recsys_cli.errors import RecsysError
from recsys_cli.evaluation.base import SplitEvaluator
from recsys_cli.evaluation.metrics import hit_matrix, list_metrics, ranking_metrics, recommended_items, top_k
from recsys_cli.evaluation.sampling import SAMPLERS, sample_negatives

STAGE_PREFIX = {"validate": "val", "test": "test"}
RANKINGS = ("full", "sampled")
SAMPLED_WARNING = (
    "sampled metrics can rank models differently from full ranking (Krichene & Rendle 2020, "
    '"On Sampled Metrics for Item Recommendation", KDD); compare models under full ranking'
)


def mask_scores(scores: torch.Tensor, batch: dict[str, torch.Tensor], mask_history: bool) -> torch.Tensor:
    """Never rank padding; with ``mask_history``, never rank items the user already interacted with."""
    scores = scores.clone()
    scores[:, 0] = -torch.inf
    if mask_history:
        scores[batch[keys.SEEN_ROWS], batch[keys.SEEN_ITEMS]] = -torch.inf
    return scores


def evaluate_batch(
    scores: torch.Tensor, batch: dict[str, torch.Tensor], ks: list[int], mask_history: bool
) -> dict[str, torch.Tensor]:
    """Per-user metrics of one batch under full ranking."""
    ranked = top_k(mask_scores(scores, batch, mask_history), max(ks))
    targets = batch[keys.TARGETS]
    return ranking_metrics(hit_matrix(ranked, targets), (targets > 0).sum(1), ks)


def distinct_targets(targets: torch.Tensor) -> torch.Tensor:
    """Targets with repeats of an item within a row replaced by padding, so a candidate list holds it once."""
    earlier = torch.ones(targets.shape[1], targets.shape[1], dtype=torch.bool, device=targets.device).tril(-1)
    repeated = ((targets.unsqueeze(2) == targets.unsqueeze(1)) & earlier).any(2)
    return targets.masked_fill(repeated, 0)


def forbidden_items(batch: dict[str, torch.Tensor], n_items: int) -> torch.Tensor:
    """``[B, n_items + 1]`` bool: padding, every item of the user's history and the user's targets."""
    targets = batch[keys.TARGETS]
    forbidden = torch.zeros(targets.shape[0], n_items + 1, dtype=torch.bool, device=targets.device)
    forbidden[:, 0] = True
    forbidden[batch[keys.SEEN_ROWS], batch[keys.SEEN_ITEMS]] = True
    return forbidden.scatter_(1, targets, True)


def candidate_lists(negatives: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[B, N + T]`` candidates: negatives first, so a stable sort puts a tied target below them."""
    return torch.cat([negatives, distinct_targets(targets)], dim=1)


def sampled_metrics(
    candidate_scores: torch.Tensor, candidates: torch.Tensor, n_negatives: int, ks: list[int]
) -> dict[str, torch.Tensor]:
    """Per-user metrics of targets ranked among their candidates (:func:`candidate_lists` order).

    Padding candidates (0) are never ranked above a real one and never hit; ties are pessimistic.
    """
    scores = candidate_scores.float().masked_fill(candidates == 0, -torch.inf)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, : max(ks)]
    targets = candidates[:, n_negatives:]
    hits = hit_matrix(candidates.gather(1, order), targets)
    return ranking_metrics(hits, (targets > 0).sum(1), ks)


@dataclass
class Protocol:
    """What a reported number means; written beside every metrics table and into metrics.json."""

    split: str
    ranking: str = "full"
    mask_history: bool = False
    max_len: int = 50
    filters: str = ""
    num_negatives: int | None = None  # sampled ranking only
    negatives: str | None = None  # sampled ranking only: uniform or popularity
    negative_seed: int | None = None  # sampled ranking only

    def describe(self) -> str:
        masking = "history masked" if self.mask_history else "history not masked"
        if self.ranking == "sampled":
            ranking = (
                f"sampled ranking: targets among {self.num_negatives} {self.negatives} negatives per user "
                f"(never history or target items, seed {self.negative_seed}, ties count against the target); "
                f"coverage/novelty/ARP on full top-K lists, {masking}"
            )
        else:
            ranking = f"full ranking over all items, {masking}"
        return f"{self.split} split, {ranking}, max length {self.max_len}, {self.filters}"

    @property
    def warning(self) -> str | None:
        return SAMPLED_WARNING if self.ranking == "sampled" else None


def _uses_default_score(pl_module: pl.LightningModule) -> bool:
    from recsys_cli.models.base import Recommender

    return getattr(type(pl_module), "score", None) is Recommender.score


class RankingEvaluator(SplitEvaluator):
    """Computes and logs ranking and beyond-accuracy metrics for validation and test.

    ``item_popularity`` (training counts ``[n_items + 1]``) feeds novelty, ARP and the popularity
    sampler; ``per_user[split]`` keeps the last round's per-user values (with ``user``, the user index).
    Every metric goes to the trainer's loggers; only ``log_keys`` (default: all) also go through
    ``LightningModule.log`` for callbacks (early stopping, checkpoints, lr decay) to read: one such call
    costs about 0.2 ms, and 30 of them per round were a tenth of a BPR epoch on ML-100K.

    ``segments``: named sets of items (``[n_items + 1]`` bool); for each, the accuracy metrics over every
    user's targets in the set (``<split>/<name>/ndcg@10``, ...; users without such targets are left out,
    and ``<split>/<name>/users`` counts the rest), ranked by the same full list, and ranked among the
    set's items only (``<split>/<name>_within/...``, as a baseline that knows the set). ``segment_baselines``:
    ``{name: (segment, scores [n_items + 1])}``, a fixed ranking measured on that segment alike (e.g.
    new items by popularity, :mod:`recsys_cli.evaluation.cold_start`). Batches may name groups of users
    (``segment:<name>``, bool per row): their metrics are reported alike, as ``<split>/<name>/...``.
    """

    def __init__(
        self,
        ks: list[int],
        mask_history: bool = False,
        item_popularity: Any = None,
        ranking: str = "full",
        num_negatives: int = 100,
        negatives: str = "uniform",
        negative_seed: int = 0,
        log_keys: list[str] | None = None,
        segments: dict[str, Any] | None = None,
        segment_baselines: dict[str, tuple[str, Any]] | None = None,
    ) -> None:
        if ranking not in RANKINGS:
            raise RecsysError(f"eval.ranking={ranking} is unknown; choose one of {', '.join(RANKINGS)}")
        if ranking == "sampled":
            if negatives not in SAMPLERS:
                raise RecsysError(f"eval.negatives={negatives} is unknown; choose one of {', '.join(SAMPLERS)}")
            if int(num_negatives) < 1:
                raise RecsysError(f"eval.num_negatives={num_negatives} must be at least 1, e.g. eval.num_negatives=100")
            if negatives == "popularity" and item_popularity is None:
                raise ValueError("popularity negatives need item_popularity (training counts)")
        self.ks = sorted(int(k) for k in ks)
        self.mask_history = mask_history
        self.popularity = None if item_popularity is None else torch.as_tensor(item_popularity).double()
        self.ranking = ranking
        self.num_negatives = int(num_negatives)
        self.negatives = negatives
        self.negative_seed = int(negative_seed)
        self.log_keys = None if log_keys is None else set(log_keys)
        self.segments = {name: torch.as_tensor(mask, dtype=torch.bool) for name, mask in (segments or {}).items()}
        self.segment_baselines = {
            name: (segment, torch.as_tensor(scores, dtype=torch.float32))
            for name, (segment, scores) in (segment_baselines or {}).items()
        }
        if self.segments and ranking != "full":
            raise RecsysError("cold-start items are evaluated by full ranking; set eval.ranking=full.")
        self.results: dict[str, dict[str, float]] = {}
        self.per_user: dict[str, dict[str, torch.Tensor]] = {}
        self._chunks: dict[str, list[torch.Tensor]] = {}
        self._recommended: torch.Tensor | None = None

    def _start(self) -> None:
        self._chunks = {}
        self._recommended = None

    def _batch(self, pl_module: pl.LightningModule, scores: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        scores = scores.float()
        n_items = scores.shape[1] - 1
        if self.popularity is not None:
            if self.popularity.shape[0] != n_items + 1:
                raise ValueError(
                    f"item_popularity has {self.popularity.shape[0]} entries for {n_items + 1} score columns"
                )
            self.popularity = self.popularity.to(scores.device)  # a no-op after the first batch
        values, ranked = torch.topk(mask_scores(scores, batch, self.mask_history), min(max(self.ks), n_items + 1))
        listed = torch.isfinite(values)  # a list runs short when the masked history leaves fewer than K items
        targets = batch[keys.TARGETS]
        if self.ranking == "full":
            metrics = ranking_metrics(hit_matrix(ranked, targets), (targets > 0).sum(1), self.ks)
        else:
            metrics = self._sampled(pl_module, scores, batch, n_items)
        if self.popularity is not None:
            metrics.update(list_metrics(ranked, listed, self.popularity, self.ks))
        if self.segments:
            metrics.update(self._segment_metrics(ranked, scores, batch))
        for key, rows in batch.items():  # groups of users the data names (e.g. targets that open a session)
            if key.startswith(keys.SEGMENT_PREFIX) and self.ranking == "full":
                group_targets = torch.where(rows.unsqueeze(1), targets, torch.zeros_like(targets))
                metrics.update(self._on_segment(key.removeprefix(keys.SEGMENT_PREFIX), ranked, group_targets))
        recommended = recommended_items(ranked, listed, n_items, self.ks)
        self._recommended = recommended if self._recommended is None else self._recommended | recommended
        metrics["user"] = batch[keys.USERS]
        for name, values in metrics.items():
            self._chunks.setdefault(name, []).append(values.detach())

    def _segment_metrics(
        self, ranked: torch.Tensor, scores: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Per-user metrics of each segment's targets (NaN for users with none), and of the fixed baselines."""
        targets = batch[keys.TARGETS]
        out: dict[str, torch.Tensor] = {}
        segment_targets = {}
        for name, mask in self.segments.items():
            mask = mask.to(targets.device)
            kept = torch.where(mask[targets], targets, torch.zeros_like(targets))
            segment_targets[name] = kept
            out.update(self._on_segment(name, ranked, kept))
            # The same targets ranked among the segment's items only, as the fixed baselines rank them.
            within = mask_scores(scores.masked_fill(~mask, -torch.inf), batch, self.mask_history)
            within_ranked = torch.topk(within, min(max(self.ks), scores.shape[1])).indices
            out.update(self._on_segment(f"{name}_within", within_ranked, kept))
        for name, (segment, fixed) in self.segment_baselines.items():
            masked = mask_scores(fixed.to(scores.device).expand(scores.shape[0], -1), batch, self.mask_history)
            baseline_ranked = torch.topk(masked, min(max(self.ks), scores.shape[1])).indices
            out.update(self._on_segment(name, baseline_ranked, segment_targets[segment]))
        return out

    def _on_segment(self, name: str, ranked: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        counts = (targets > 0).sum(1)
        values = ranking_metrics(hit_matrix(ranked, targets), counts, self.ks)
        missing = counts == 0
        return {f"{name}/{metric}": value.masked_fill(missing, torch.nan) for metric, value in values.items()}

    def _sampled(
        self, pl_module: pl.LightningModule, scores: torch.Tensor, batch: dict[str, torch.Tensor], n_items: int
    ) -> dict[str, torch.Tensor]:
        counts = self.popularity if self.negatives == "popularity" else None
        negatives = sample_negatives(
            batch[keys.USERS], forbidden_items(batch, n_items), self.num_negatives, self.negative_seed, counts
        )
        candidates = candidate_lists(negatives, batch[keys.TARGETS])
        if _uses_default_score(pl_module):  # the default score() gathers from score_all(): reuse its output
            candidate_scores = scores.gather(1, candidates)
        else:
            candidate_scores = pl_module.score(batch, candidates)
        return sampled_metrics(candidate_scores, candidates, self.num_negatives, self.ks)

    def _end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prefix: str) -> None:
        if trainer.sanity_checking or not self._chunks:
            return
        per_user = {name: torch.cat(chunks) for name, chunks in self._chunks.items()}
        users = per_user.pop("user").long()
        names = list(per_user)
        stacked = torch.stack([per_user[name].double() for name in names])  # [metrics, users]
        recommended = self._recommended
        if trainer.world_size > 1:
            # Each rank scored a shard; the distributed sampler pads shards to equal size with repeated
            # users. Gather every shard and count each user once, so DDP gives single-process numbers.
            device = pl_module.device
            gathered = trainer.strategy.all_gather(stacked.to(device)).cpu()
            stacked = gathered.permute(1, 0, 2).reshape(stacked.shape[0], -1)
            users = trainer.strategy.all_gather(users.to(device)).cpu().reshape(-1)
            _, first = np.unique(users.numpy(), return_index=True)
            stacked, users = stacked[:, torch.from_numpy(first)], users[torch.from_numpy(first)]
            # Coverage is a set: the union of every rank's recommended items (repeated users add nothing).
            recommended = trainer.strategy.all_gather(recommended.to(device).float()).amax(0) > 0
        means = {}
        for i, name in enumerate(names):
            if "/" in name:  # a segment's metric: over the users with targets in it (none: not reported)
                present = ~torch.isnan(stacked[i])
                if present.any():
                    means[f"{prefix}/{name.split('/')[0]}/users"] = float(present.sum())
                    means[f"{prefix}/{name}"] = stacked[i][present].mean().item()
            else:
                means[f"{prefix}/{name}"] = stacked[i].mean().item()
        n_items = recommended.shape[1] - 1
        for row, k in enumerate(self.ks):
            means[f"{prefix}/coverage@{k}"] = recommended[row].sum().item() / max(1, n_items)
        for logger in trainer.loggers:
            logger.log_metrics({**means, "epoch": trainer.current_epoch}, step=trainer.global_step)
        watched = means if self.log_keys is None else {k: v for k, v in means.items() if k in self.log_keys}
        pl_module.log_dict(watched, sync_dist=False, logger=False)
        self.results[prefix] = means
        self.per_user[prefix] = {"user": users.cpu(), **{name: stacked[i].cpu() for i, name in enumerate(names)}}
        self._chunks = {}
        self._recommended = None
