"""A decoder-only causal Transformer core for :class:`lmfix.model.LM` (``--model transformer``).

The PyTorch ``word_language_model`` example's ``TransformerModel`` has faults this core does not
copy: its ``--tied`` is ignored (here every embedding mode of the LSTM applies, the classifier
being the model's output table), ``--dropout`` reaches only its positional encoding (here it is
applied at each place listed below), it builds and discards a 6-layer decoder, and it scores each
35-token chunk with no preceding context (here :func:`lmfix.evaluation.mean_nll` scores a
sliding window, so every token sees a stated context).

    tokens (T, B) ⇒ input table × √d + positions ⇒ dropout
                  ⇒ nlayers × [x + drop(attn(LN(x))), x + drop(FF(LN(x)))]   (pre-LayerNorm)
                  ⇒ LN ⇒ features (T·B, d) for the model's classifier

- attention: causal, through ``torch.nn.functional.scaled_dot_product_attention`` (so a GPU
  gets its fused kernels), ``nhead`` heads of d / nhead, dropout on the attention weights;
- feed-forward: d → ``nhid`` → d with GELU, dropout after it (the residual branch);
- positions: sinusoidal as the example (computed, not stored: no parameter, no buffer), or
  learned (a ``context`` × d table, trained; ``context`` = the training bptt);
- pre-LayerNorm (each branch reads a normalized input, one LayerNorm before the classifier),
  as GPT-2 does, or post-LayerNorm (``norm="post"``: normalize after each residual sum, as the
  original Transformer and nn.Transformer's default); the two measured in docs/results.md.

A :class:`KVCache` holds the keys and values of the tokens seen so far, so generation reads each
new token once (the caller bounds the cache at ``context`` tokens: lmfix.inference).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

POSITIONS = ("sinusoidal", "learned")
NORMS = ("pre", "post")


def sinusoidal(length: int, dim: int, offset: int, device, dtype) -> torch.Tensor:
    """(length, dim) positions offset..offset+length-1, the example's sin/cos encoding."""
    pos = torch.arange(offset, offset + length, device=device, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32)
                    * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: dim // 2])
    return pe.to(dtype)


class KVCache:
    """Per layer, the keys and values (B, heads, L, head dim) of the L tokens seen so far."""

    def __init__(self, nlayers: int):
        self.layers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * nlayers

    def __len__(self) -> int:
        first = self.layers[0]
        return 0 if first is None else first[0].size(2)


class Block(nn.Module):
    def __init__(self, d: int, nhead: int, ff: int, dropout: float, norm: str = "pre"):
        super().__init__()
        self.nhead, self.dropout, self.pre = nhead, dropout, norm == "pre"
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Linear(ff, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None, layer: int) -> torch.Tensor:
        """x: (B, T, d)."""
        B, T, d = x.shape
        q, k, v = self.qkv(self.ln1(x) if self.pre else x).split(d, dim=2)
        q, k, v = (t.view(B, T, self.nhead, d // self.nhead).transpose(1, 2) for t in (q, k, v))
        past = 0
        if cache is not None:
            if cache.layers[layer] is not None:
                pk, pv = cache.layers[layer]
                past = pk.size(2)
                k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
            cache.layers[layer] = (k, v)
        drop = self.dropout if self.training else 0.0
        if past == 0:
            a = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
        else:  # new tokens see every cached one, and each other causally
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(past)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        a = self.drop(self.proj(a.transpose(1, 2).reshape(B, T, d)))
        if self.pre:  # GPT-2: each branch reads a normalized input
            x = x + a
            return x + self.drop(self.ff(self.ln2(x)))
        x = self.ln1(x + a)  # the original Transformer's (and nn.Transformer's default) order
        return self.ln2(x + self.drop(self.ff(x)))


class TransformerCore(nn.Module):
    """The blocks between the input table and the classifier (see the module docstring)."""

    def __init__(self, d: int, nhead: int, ff: int, nlayers: int, dropout: float,
                 positions: str, context: int, norm: str = "pre"):
        super().__init__()
        if d % nhead:
            raise ValueError(f"emsize {d} is not divisible by nhead {nhead}")
        if positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, not {positions!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, not {norm!r}")
        self.d, self.context, self.positions = d, context, positions
        self.pos = nn.Embedding(context, d) if positions == "learned" else None
        if self.pos is not None:
            nn.init.normal_(self.pos.weight, std=0.02)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d, nhead, ff, dropout, norm) for _ in range(nlayers))
        self.ln_f = nn.LayerNorm(d)

    def forward(self, emb: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """emb: (T, B, d) input-table rows ⇒ (T, B, d) features."""
        T = emb.size(0)
        offset = len(cache) if cache is not None else 0
        if offset + T > self.context and self.pos is not None:
            raise ValueError(f"{offset + T} positions, but learned positions stop at "
                             f"{self.context}")
        x = emb.transpose(0, 1) * math.sqrt(self.d)  # (B, T, d), scaled as the example
        if self.pos is not None:
            x = x + self.pos(torch.arange(offset, offset + T, device=x.device))
        else:
            x = x + sinusoidal(T, self.d, offset, x.device, x.dtype)
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        return self.ln_f(x).transpose(0, 1)
