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


class SelfAttention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """``[B, L, H]`` → ``[B, L, H]``; with ``last_only`` only the last position's output, ``[B, 1, H]``."""
        batch, length, hidden = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.num_heads, hidden // self.num_heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if last_only:
            q, mask = q[:, :, -1:], mask[:, :, -1:]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(batch, q.shape[2], hidden))


class TransformerBlock(nn.Module):
    """Pre-norm transformer layer: x + Attn(LN(x)), then x + FFN(LN(x)) with GELU."""

    def __init__(self, hidden_size: int, num_heads: int, inner_size: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size)
        self.attention = SelfAttention(hidden_size, num_heads, dropout)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.ffn = nn.Sequential(
            nn.Linear(hidden_size, inner_size), nn.GELU(), nn.Dropout(dropout), nn.Linear(inner_size, hidden_size)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """With ``last_only`` the block computes the last position alone (keys and values still see all)."""
        attended = self.dropout(self.attention(self.norm1(x), mask, last_only=last_only))
        x = (x[:, -1:] if last_only else x) + attended
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
