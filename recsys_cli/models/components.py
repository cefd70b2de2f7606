"""Architecture pieces shared by sequential models (plain ``nn.Module``s, no training logic)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def attention_mask(history: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """``[B, 1, L, L]`` bool, True where a query may attend to a key.

    Keys that are padding are hidden; with ``causal`` a position sees only itself and the past. Every
    position may see itself, so rows of padding never become all-masked (which would give NaN).
    """
    length = history.shape[1]
    real_key = (history > 0)[:, None, None, :]
    allowed = real_key
    if causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=history.device).tril()
    return allowed | torch.eye(length, dtype=torch.bool, device=history.device)


def trim_padding(history: torch.Tensor, *aligned: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Drop the leading columns that are padding in every row of a left-padded ``history [B, L]``.

    Attention never looks at padding keys, so the result is the same; the cost falls with the batch's
    longest history instead of ``max_len``. ``aligned`` tensors (e.g. next-item targets) are cut alike.
    """
    real = (history > 0).any(0)
    start = int(real.int().argmax()) if bool(real.any()) else history.shape[1] - 1
    return tuple(t[:, start:] for t in (history, *aligned))


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Dropout whose mask costs a fifth of ``F.dropout``'s on the CPU (identical elsewhere).

    On the CPU torch draws one Mersenne-Twister number per element for dropout's mask, which made masks
    21% of SASRec's training step at length 200. Here one 64-bit draw gives eight mask bytes, each kept when
    it is at least ``round(256 p)``: ``p`` is used to the nearest 1/256 (0.2 → 0.199), kept values are
    scaled by the exact inverse keep rate. Seeded by torch's generator like ``F.dropout``.
    """
    if not training or p <= 0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    threshold = min(255, round(p * 256))
    count = x.numel()
    draws = torch.randint(-(2**63), 2**63 - 1, ((count + 7) // 8,), dtype=torch.int64)
    keep = draws.view(torch.uint8)[:count].view(x.shape) >= threshold
    return _KeepScaled.apply(x, keep, 256 / (256 - threshold))


class _KeepScaled(torch.autograd.Function):
    """``x * keep * scale`` in one pass each way (``masked_fill`` then a multiply took two forward, two back:
    dropout's forward and backward on ``[64, 200, 256]`` 19.5 → 11 ms)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.addcmul(x.new_zeros(()), x, keep, value=scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        return torch.addcmul(grad.new_zeros(()), grad, keep, value=ctx.scale), None, None


class _Lookup(torch.autograd.Function):
    """``table[index]`` for a 1-D ``table``, whose gradient is summed with one ``scatter_add_`` pass: autograd's
    own (an accumulating ``index_put_``) took 91 ms for a ``[64, 200, 200]`` index into 128 entries on 2 CPU
    threads, ``scatter_add_`` 4 ms (HSTU's time-bucket bias: a quarter of its training step)."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.size = table.shape[0]
        return table[index]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (index,) = ctx.saved_tensors
        # summed in float64: millions of terms land in a few entries, and float32 sums drift
        out = grad.new_zeros(ctx.size, dtype=torch.float64)
        out.scatter_add_(0, index.reshape(-1), grad.reshape(-1).to(torch.float64))
        return out.to(torch.promote_types(grad.dtype, torch.float32)), None


def lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` (``table`` 1-D) with a fast gradient on the CPU (:class:`_Lookup`)."""
    return _Lookup.apply(table, index) if table.requires_grad else table[index]


class FastDropout(nn.Module):
    """``nn.Dropout`` with :func:`fast_dropout`'s cheaper mask on the CPU."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class SelfAttention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)
        self.dropout = dropout

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, tail: int = 0, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[B, L, H]`` → ``[B, L, H]``; with ``tail`` only the last ``tail`` positions' outputs, ``[B, tail, H]``;
        with ``rows`` (bool ``[B, L]``) only those positions' outputs, packed ``[N, H]`` in row-major order."""
        batch, length, hidden = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.num_heads, hidden // self.num_heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if tail:
            q, mask = q[:, :, -tail:], mask[:, :, -tail:]
        if self.training and self.dropout > 0 and x.device.type == "cpu":
            # Dropout on the attention weights with the cheaper mask: the product spelled out, as
            # scaled_dot_product_attention would compute it with dropout (its fused kernels have none).
            scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
            weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
            y = fast_dropout(weights, self.dropout) @ v
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
            )
        y = y.transpose(1, 2).reshape(batch, q.shape[2], hidden)
        return self.out(y if rows is None else y[rows])


class TransformerBlock(nn.Module):
    """Pre-norm transformer layer: x + Attn(LN(x)), then x + FFN(LN(x)) with GELU."""

    def __init__(
        self, hidden_size: int, num_heads: int, inner_size: int, dropout: float, attn_dropout: float | None = None
    ) -> None:
        """``attn_dropout``: dropout on the attention weights (None: ``dropout``); 0 lets the CPU run attention
        as one fused kernel (``scaled_dot_product_attention``)."""
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size)
        self.attention = SelfAttention(hidden_size, num_heads, dropout if attn_dropout is None else attn_dropout)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.ffn = nn.Sequential(
            nn.Linear(hidden_size, inner_size), nn.GELU(), FastDropout(dropout), nn.Linear(inner_size, hidden_size)
        )
        self.dropout = FastDropout(dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, tail: int = 0, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """With ``tail`` the block computes the last ``tail`` positions alone (keys and values still see all).
        With ``rows`` (bool ``[B, L]``) it computes those positions alone after attention (projection and
        feed-forward) and returns them packed, ``[N, H]``."""
        attended = self.dropout(self.attention(self.norm1(x), mask, tail=tail, rows=rows))
        x = (x[:, -tail:] if tail else x if rows is None else x[rows]) + attended
        return x + self.dropout(self.ffn(self.norm2(x)))


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT-style initialisation (truncated normal weights, zero biases)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            module.weight.data[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def sample_negatives(positives: torch.Tensor, n_items: int, num: int = 1) -> torch.Tensor:
    """Uniform negatives from items 1..n_items that never equal the positive (``[*, num]``)."""
    draw = torch.randint(1, n_items, (*positives.shape, num), device=positives.device)
    return draw + (draw >= positives.unsqueeze(-1)).long()


# Logit entries per chunk of the fused cross-entropy: ~1M floats (4 MB, a core's L2 cache and a half) was
# fastest: SASRec's loss at 8,000 positions x 3,497 items, width 64, forward and backward: 174 ms at 18 rows a
# block, 94 ms at 74, 81 ms at 299, 97 ms at 1,199 (Intel Xeon with AMX, 2 threads, 2 MiB L2 per core).
CE_CHUNK_ENTRIES = 1 << 20


class ChunkedSoftmaxCE(torch.autograd.Function):
    """Mean cross-entropy of ``targets`` over the logits ``hidden @ table.T`` (column 0, padding, excluded).

    The logits exist a ``[chunk, items]`` block at a time: each block's loss and its gradient with respect to
    ``hidden`` and ``table`` (softmax minus one-hot) are computed in the forward pass and the block is
    dropped, so the full ``[positions, items]`` matrix is never materialised nor walked three times (forward,
    softmax, backward). Each block is walked once by elementwise work: one row-wise softmax (rows fit the
    cache), whose target entries give the loss (``-log p``; a row whose target's probability underflows gets
    its exact ``log-sum-exp - logit``). Backward only scales the stored gradients. Under autocast the block
    products run in bf16 (the softmax in float32).
    """

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, table: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        n = hidden.shape[0]
        chunk = max(1, CE_CHUNK_ENTRIES // table.shape[0])
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_table = torch.zeros_like(table) if ctx.needs_input_grad[1] else None
        exact = torch.promote_types(hidden.dtype, torch.float32)  # the softmax's precision (bf16 inputs: fp32)
        floor = torch.finfo(exact).tiny * 2**24  # below it -log p loses precision: recompute from the logits
        total = torch.zeros((), dtype=exact, device=hidden.device)
        rows = torch.arange(min(chunk, n), device=hidden.device)
        for begin in range(0, n, chunk):
            h, t = hidden[begin : begin + chunk], targets[begin : begin + chunk]
            r = rows[: len(t)]
            logits = (h @ table.T).to(exact)
            logits[:, 0] = -torch.inf
            grad = torch.softmax(logits, dim=1)
            picked = grad[r, t]
            low = picked < floor
            if bool(low.any()):
                exact_rows = torch.logsumexp(logits[low], dim=1) - logits[low, t[low]]
                total += exact_rows.sum() - picked[~low].log().sum()
            else:
                total -= picked.log().sum()
            if grad_hidden is None and grad_table is None:
                continue
            grad[r, t] -= 1.0
            grad = grad.to(hidden.dtype)
            if grad_hidden is not None:
                grad_hidden[begin : begin + chunk] = grad @ table
            if grad_table is not None and grad.dtype == grad_table.dtype == h.dtype:
                # in place (no [items, width] temporary per block), spelled as addmm's out= form, which
                # torch's flop counter counts (it misses addmm_)
                torch.addmm(grad_table, grad.T, h, out=grad_table)
            elif grad_table is not None:
                grad_table += grad.T @ h
        ctx.save_for_backward(grad_hidden, grad_table)
        ctx.n = n
        return total / n

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_hidden, grad_table = ctx.saved_tensors
        scale = grad_output / ctx.n
        return (
            None if grad_hidden is None else grad_hidden * scale,
            None if grad_table is None else grad_table * scale,
            None,
        )


def full_softmax_loss(hidden: torch.Tensor, targets: torch.Tensor, item_weight: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``targets [N]`` over every item: logits ``hidden [N, H] @ item_weight.T`` (row 0 = padding).

    Computed by :class:`ChunkedSoftmaxCE` (the same value and gradients, a block of logits at a time).
    """
    if hidden.shape[0] == 0:
        return (hidden.sum() + item_weight.sum()) * 0.0
    return ChunkedSoftmaxCE.apply(hidden, item_weight, targets)


SAMPLINGS = ("uniform", "popularity")


class SampledSoftmax(nn.Module):
    """Sampled-softmax cross-entropy with ``num_negatives`` negatives shared by every row of a batch.

    For catalogues too large for a full softmax (Jean et al. 2015, arXiv:1412.2007): each row's
    positive competes with one set of sampled items, so the cost is ``N x num_negatives`` instead of
    ``N x n_items``. A sampled negative that equals a row's positive is masked out of that row (never
    counted against it). ``sampling="popularity"`` draws items by their frequency among the training
    targets seen so far (counted online, +1 smoothing, as the streaming estimate of Yi et al. 2019,
    "Sampling-bias-corrected neural modeling"), and every logit is corrected by ``-log Q(item)`` so
    the loss still estimates the full softmax (logQ correction); uniform sampling needs no correction.
    """

    def __init__(self, n_items: int, num_negatives: int = 256, sampling: str = "uniform") -> None:
        super().__init__()
        if sampling not in SAMPLINGS:
            from recsys_cli.errors import RecsysError

            raise RecsysError(
                f"unknown negative sampling '{sampling}'; set model.sampling to one of: {', '.join(SAMPLINGS)}."
            )
        if num_negatives < 1:
            from recsys_cli.errors import RecsysError

            raise RecsysError(f"model.num_negatives={num_negatives} must be at least 1; e.g. model.num_negatives=256.")
        self.n_items = n_items
        self.num_negatives = num_negatives
        self.sampling = sampling
        # Not saved with the weights: a statistic of training, rebuilt in the first batches.
        self.register_buffer("target_counts", torch.ones(n_items + 1), persistent=False)

    def draw(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``num_negatives`` item ids (1..n_items) and, for popularity sampling, log Q of every item ``[n + 1]``."""
        if self.sampling == "uniform":
            return torch.randint(1, self.n_items + 1, (self.num_negatives,), device=device), None
        weights = self.target_counts.clone()
        weights[0] = 0
        probabilities = weights / weights.sum()
        negatives = torch.multinomial(probabilities, self.num_negatives, replacement=True)
        return negatives, torch.log(probabilities * self.num_negatives).clamp(min=-1e4)

    def forward(self, hidden: torch.Tensor, targets: torch.Tensor, item_weight: torch.Tensor) -> torch.Tensor:
        """Mean loss of ``targets [N]`` given ``hidden [N, H]`` and the item embedding table ``[n + 1, H]``."""
        if self.training and self.sampling == "popularity":
            self.target_counts += torch.bincount(targets, minlength=self.n_items + 1).to(self.target_counts.dtype)
        negatives, log_q = self.draw(hidden.device)
        positive = (hidden * item_weight[targets]).sum(-1, keepdim=True)
        negative = hidden @ item_weight[negatives].T
        if log_q is not None:
            positive = positive - log_q[targets].unsqueeze(-1)
            negative = negative - log_q[negatives]
        negative = negative.masked_fill(negatives.unsqueeze(0) == targets.unsqueeze(-1), -torch.inf)
        logits = torch.cat([positive, negative], dim=1)
        return F.cross_entropy(logits, torch.zeros_like(targets))


def gbce_loss(
    hidden: torch.Tensor, targets: torch.Tensor, item_weight: torch.Tensor, negatives: torch.Tensor, t: float
) -> torch.Tensor:
    """gBCE (Petrov & Macdonald 2023, gSASRec, arXiv:2308.07192): binary cross-entropy whose positive term is
    raised to the power ``beta``, which undoes the overconfidence that sampling negatives teaches.

    ``negatives [K]`` are shared by every row (a sampled negative equal to a row's positive is left out of
    that row); with sampling rate ``alpha = K / (n_items - 1)`` and calibration ``t`` in [0, 1],
    ``beta = alpha (t (1 - 1/alpha) + 1/alpha)``: ``t = 0`` is plain BCE, ``t = 1`` calibrates the scores to
    the full softmax. Mean over the ``1 + K`` logits of every row, as the authors' code.
    """
    n_items = item_weight.shape[0] - 1
    alpha = negatives.numel() / max(1, n_items - 1)
    beta = alpha * (t * (1 - 1 / alpha) + 1 / alpha)
    positive = (hidden * item_weight[targets]).sum(-1)
    negative = hidden @ item_weight[negatives].T
    keep = negatives.unsqueeze(0) != targets.unsqueeze(-1)
    total = beta * F.softplus(-positive).sum() + (F.softplus(negative) * keep).sum()
    return total / (positive.numel() * (1 + negatives.numel()))


NEXT_ITEM_LOSSES = ("ce", "bce", "sampled", "gbce")


class NextItemLoss(nn.Module):
    """The training loss of a next-item model that scores by dot product with the item table.

    ``ce``: full-softmax cross-entropy over every item; ``bce``: binary cross-entropy against one uniform
    negative per target (SASRec's paper, Kang & McAuley 2018); ``sampled``: :class:`SampledSoftmax`;
    ``gbce``: :func:`gbce_loss` over ``num_negatives`` uniform negatives shared by the batch, calibration
    ``gbce_t``. ``allowed`` narrows the choice for a model; an unknown name is a user error naming ``model``.
    """

    def __init__(
        self,
        kind: str,
        n_items: int,
        num_negatives: int = 256,
        sampling: str = "uniform",
        model: str = "model",
        allowed: tuple[str, ...] = NEXT_ITEM_LOSSES,
        gbce_t: float = 0.75,
    ) -> None:
        super().__init__()
        if kind not in allowed:
            from recsys_cli.errors import RecsysError

            raise RecsysError(f"unknown {model} loss '{kind}'; set model.loss to one of: {', '.join(allowed)}.")
        if kind == "gbce" and not 0.0 <= gbce_t <= 1.0:
            from recsys_cli.errors import RecsysError

            raise RecsysError(f"model.gbce_t={gbce_t} must lie between 0 and 1; e.g. model.gbce_t=0.75.")
        self.kind = kind
        self.n_items = n_items
        self.num_negatives = num_negatives
        self.gbce_t = gbce_t
        self.sampled = SampledSoftmax(n_items, num_negatives, sampling) if kind == "sampled" else None

    def forward(self, hidden: torch.Tensor, targets: torch.Tensor, item_weight: torch.Tensor) -> torch.Tensor:
        """Mean loss of ``targets [N]`` predicted from ``hidden [N, H]`` against ``item_weight [n + 1, H]``."""
        if self.kind == "ce":
            return full_softmax_loss(hidden, targets, item_weight)
        if self.sampled is not None:
            return self.sampled(hidden, targets, item_weight)
        if self.kind == "gbce":
            count = min(self.num_negatives, self.n_items)
            negatives = torch.randint(1, self.n_items + 1, (count,), device=hidden.device)
            return gbce_loss(hidden, targets, item_weight, negatives, self.gbce_t)
        negatives = sample_negatives(targets, self.n_items).squeeze(-1)
        positive = (hidden * item_weight[targets]).sum(-1)
        negative = (hidden * item_weight[negatives]).sum(-1)
        return F.binary_cross_entropy_with_logits(
            positive, torch.ones_like(positive)
        ) + F.binary_cross_entropy_with_logits(negative, torch.zeros_like(negative))
