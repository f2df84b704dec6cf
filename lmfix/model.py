"""The LSTM language model: learned (tied or untied) or fixed word embeddings.

Imports nothing from training. The embedding modes follow Hoffer, Hubara & Soudry (ICLR 2018):

- ``learned``: one V×d matrix is both the input embedding and the output classifier
  (weight tying, Press & Wolf 2017; Inan et al. 2017), uniform ±0.1 init as in the PyTorch example.
- ``learned-untied``: separate embedding and classifier (the paper's learned baseline).
- ``fixed``: a given V×d matrix, frozen, used as both input embedding and classifier. It is a
  *buffer*, so it never enters the optimizer, never gets a gradient and costs no gradient
  memory. The classifier is fixed "up to a global scale": a learned scalar multiplies the
  logits (the paper's temperature), and a learned bias is added. ``cosine=True`` adds the
  paper's image-classifier form: unit-norm rows and a unit-norm hidden state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .loss import linear_cross_entropy

EMBEDDING_MODES = ("learned", "learned-untied", "fixed")
DEFAULT_DIM = 200  # the PyTorch example's emsize = nhid


@dataclass
class ModelConfig:
    vocab_size: int
    emsize: int = DEFAULT_DIM
    nhid: int = DEFAULT_DIM
    nlayers: int = 2
    dropout: float = 0.2
    embedding: str = "learned"  # one of EMBEDDING_MODES
    cosine: bool = False
    # Initial value of the learned logit scale (fixed mode). The paper's fixed_proj.py starts
    # the cosine form at 10; for unnormalized vectors 1 keeps the initial logits unchanged.
    scale_init: float | None = None

    def resolved_scale_init(self) -> float:
        if self.scale_init is not None:
            return self.scale_init
        return 10.0 if self.cosine else 1.0


class LSTMLM(nn.Module):
    def __init__(self, cfg: ModelConfig, fixed_weight: torch.Tensor | None = None):
        super().__init__()
        if cfg.embedding not in EMBEDDING_MODES:
            raise ValueError(f"embedding must be one of {EMBEDDING_MODES}, not {cfg.embedding!r}")
        if (cfg.embedding == "fixed") != (fixed_weight is not None):
            raise ValueError("a fixed_weight is required for, and only for, embedding='fixed'")
        V, d = cfg.vocab_size, cfg.emsize
        self.cfg = cfg
        self.drop = nn.Dropout(cfg.dropout)
        self.rnn = nn.LSTM(d, cfg.nhid, cfg.nlayers, dropout=cfg.dropout if cfg.nlayers > 1 else 0)
        self.scale = None
        if cfg.embedding == "fixed":
            if tuple(fixed_weight.shape) != (V, d):
                raise ValueError(f"fixed weight is {tuple(fixed_weight.shape)}, expected {(V, d)}")
            w = fixed_weight.detach().float().clone()
            if cfg.cosine:
                w = F.normalize(w, dim=1)
            self.register_buffer("fixed_weight", w)
            self.scale = nn.Parameter(torch.tensor(float(cfg.resolved_scale_init())))
        else:
            self.encoder = nn.Embedding(V, d)
            nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        if cfg.embedding == "learned-untied":
            # Untied, the classifier reads the LSTM output directly, as in the example.
            self.decoder_weight = nn.Parameter(torch.empty(V, cfg.nhid).uniform_(-0.1, 0.1))
        out_dim = cfg.nhid if cfg.embedding == "learned-untied" else d
        # Tying needs the classifier input to have the embedding size: project when nhid != d.
        self.proj = nn.Linear(cfg.nhid, d) if out_dim != cfg.nhid else None
        self.bias = nn.Parameter(torch.zeros(V))

    @property
    def output_weight(self) -> torch.Tensor:
        if self.cfg.embedding == "fixed":
            return self.fixed_weight
        if self.cfg.embedding == "learned-untied":
            return self.decoder_weight
        return self.encoder.weight

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.cfg.embedding == "fixed":
            return F.embedding(tokens, self.fixed_weight)
        return self.encoder(tokens)

    def init_hidden(self, bsz: int) -> tuple[torch.Tensor, torch.Tensor]:
        p = next(self.parameters())
        shape = (self.cfg.nlayers, bsz, self.cfg.nhid)
        return p.new_zeros(shape), p.new_zeros(shape)

    def forward(self, tokens: torch.Tensor, hidden):
        """(T, B) token ids → (T·B, d_out) features for the classifier, and the new hidden."""
        emb = self.drop(self.embed(tokens))
        out, hidden = self.rnn(emb, hidden)
        out = self.drop(out).reshape(-1, out.size(-1))
        if self.proj is not None:
            out = self.proj(out)
        if self.cfg.cosine and self.cfg.embedding == "fixed":
            out = F.normalize(out, dim=-1)
        return out, hidden

    def loss(self, features: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"):
        """Cross-entropy of the classifier without materializing all T·B×V logits."""
        if torch.is_autocast_enabled(features.device.type):
            # Mixed precision: autocast runs the plain form's matmul in bfloat16 and its
            # softmax in float32, which on a GPU beats the float32 fused path.
            return F.cross_entropy(self.logits(features), targets, reduction=reduction)
        return linear_cross_entropy(features.float(), self.output_weight, targets,
                                    bias=self.bias, scale=self.scale, reduction=reduction)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        z = features @ self.output_weight.t()
        if self.scale is not None:
            z = z * self.scale
        return z + self.bias


def normalize_vectors(matrix: torch.Tensor, mode: str) -> torch.Tensor:
    """Scale a fixed embedding before use.

    ``raw`` keeps it; ``unit`` makes every row unit-norm; ``mean-unit`` divides by the mean row
    norm (keeps relative norms, which carry word frequency in word2vec/PMI vectors, while
    putting the logits on the scale a ±0.1-initialized learned embedding starts from).
    """
    if mode == "raw":
        return matrix
    norms = matrix.norm(dim=1, keepdim=True)
    if mode == "unit":
        return matrix / norms.clamp_min(1e-12)
    if mode == "mean-unit":
        return matrix / norms.mean().clamp_min(1e-12)
    raise ValueError(f"unknown normalization {mode!r} (raw, unit, mean-unit)")


def count_params(model: LSTMLM) -> dict[str, int]:
    """Trainable parameters (tied weights counted once) and fixed buffers the model needs."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    fixed = frozen + sum(b.numel() for b in model.buffers())
    emb_trainable = 0
    if model.cfg.embedding == "learned":
        emb_trainable = model.encoder.weight.numel()
    elif model.cfg.embedding == "learned-untied":
        emb_trainable = model.encoder.weight.numel() + model.decoder_weight.numel()
    return {"trainable": trainable, "fixed": fixed, "total": trainable + fixed,
            "embedding_trainable": emb_trainable,
            "embedding_fixed": model.fixed_weight.numel() if model.cfg.embedding == "fixed" else 0}
