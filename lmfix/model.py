"""The language model: learned (tied or untied) or fixed word embeddings, or any split, around
an LSTM (the default), a GRU, an Elman RNN or a causal Transformer (``--model``).

Imports nothing from training. The embedding modes follow Hoffer, Hubara & Soudry (ICLR 2018):

- ``learned``: one V×d matrix is both the input embedding and the output classifier
  (weight tying, Press & Wolf 2017; Inan et al. 2017), uniform ±0.1 init as in the PyTorch example.
- ``learned-untied``: separate embedding and classifier (the paper's learned baseline).
- ``vectors`` with ``fix="both"``: a given V×d matrix, frozen, used as both input embedding
  and classifier. It is a *buffer*, so it never enters the optimizer, never gets a gradient
  and costs no gradient memory. The classifier is fixed "up to a global scale": a learned
  scalar multiplies the logits (the paper's temperature), and a learned bias is added.
  ``cosine=True`` adds the paper's image-classifier form: unit-norm rows and a unit-norm
  hidden state (it applies to a fixed classifier only; with a learned one it does nothing).

With given vectors (``vectors``), ``fix`` chooses which side keeps them frozen (``both``,
``input``, ``output``, ``none``; the other side learns, starting from the same vectors), and a
fixed tied table can get trainable parts: ``learn_top`` rows of the most frequent words, or a
rank ``delta_rank`` correction. Both sides are :class:`~lmfix.embedding_parts.EmbeddingTable` s
built from those parts; :mod:`lmfix.embedding_parts` has the table of layouts.

Tensor names (and so checkpoint keys) are those of the three original modes: ``encoder.weight``
(a learned input embedding), ``decoder_weight`` (a learned untied classifier), ``fixed_weight``
(the fixed vectors, a buffer), ``scale``, ``bias``; the parts add ``top_rows.ids``,
``top_rows.weight``, ``delta.A`` and ``delta.B``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .embedding_parts import EmbeddingTable, Layout, LowRankDelta, TopRows, layout
from .loss import linear_cross_entropy
from .transformer import KVCache, TransformerCore

EMBEDDING_MODES = ("learned", "learned-untied", "vectors")
MODELS = ("lstm", "gru", "rnn-tanh", "rnn-relu", "transformer")  # --model
_RNNS = {"lstm": (nn.LSTM, {}), "gru": (nn.GRU, {}),
         "rnn-tanh": (nn.RNN, {"nonlinearity": "tanh"}),
         "rnn-relu": (nn.RNN, {"nonlinearity": "relu"})}
DEFAULT_DIM = 200  # the PyTorch example's emsize = nhid


@dataclass
class ModelConfig:
    vocab_size: int
    emsize: int = DEFAULT_DIM
    nhid: int = DEFAULT_DIM
    nlayers: int = 2
    dropout: float = 0.2
    embedding: str = "learned"  # one of EMBEDDING_MODES; "vectors": built from given vectors
    cosine: bool = False
    # Initial value of the learned logit scale (fixed classifier). The paper's fixed_proj.py
    # starts the cosine form at 10; for unnormalized vectors 1 keeps the initial logits unchanged.
    scale_init: float | None = None
    fix: str | None = None  # vectors only, and always given there: both | input | output | none
    learn_top: int = 0  # fixed tied only: trainable rows of the most frequent words
    delta_rank: int = 0  # fixed tied only: rank of the trainable correction A·B
    model: str = "lstm"  # one of MODELS: the sequence model between the two tables
    nhead: int = 2  # transformer only: attention heads (the example's default)
    positions: str = "sinusoidal"  # transformer only: sinusoidal | learned
    context: int = 35  # transformer only: the positions it attends over (the training bptt)
    norm: str = "pre"  # transformer only: pre- or post-LayerNorm blocks

    def resolved_scale_init(self) -> float:
        if self.scale_init is not None:
            return self.scale_init
        return 10.0 if self.cosine else 1.0

    @property
    def layout(self) -> Layout:
        return layout(self.embedding, self.fix)


class LM(nn.Module):
    """The two tables (input embedding, classifier) around a sequence model: an LSTM, GRU or
    Elman RNN (``nn.LSTM``/``nn.GRU``/``nn.RNN``, one code path) or a causal Transformer
    (:mod:`lmfix.transformer`)."""

    def __init__(self, cfg: ModelConfig, fixed_weight: torch.Tensor | None = None,
                 top_ids: torch.Tensor | None = None):
        """``fixed_weight``: the V×d vectors (mode ``vectors`` only); ``top_ids``: the
        ``learn_top`` word ids whose rows train (most frequent first). To rebuild a model
        for ``load_state_dict``, zeros for ``fixed_weight`` and None for ``top_ids`` (ids
        0..K−1) will do: the checkpoint holds both."""
        super().__init__()
        if cfg.embedding not in EMBEDDING_MODES:
            raise ValueError(f"embedding must be one of {EMBEDDING_MODES}, not {cfg.embedding!r}")
        lay = cfg.layout  # ValueError for fix with a learned mode
        if (cfg.embedding == "vectors") != (fixed_weight is not None):
            raise ValueError("a fixed_weight is required for, and only for, embedding='vectors'")
        if (cfg.learn_top or cfg.delta_rank) and not (lay.tied and lay.input == "fixed"):
            raise ValueError("learn_top and delta_rank need a fixed tied embedding (fix both)")
        if top_ids is not None and not cfg.learn_top:
            raise ValueError("top_ids are for learn_top > 0 only")
        if cfg.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, not {cfg.model!r}")
        V, d = cfg.vocab_size, cfg.emsize
        self.cfg, self.layout = cfg, lay
        # The cosine form is the fixed classifier's; with a learned one it does nothing.
        self.cosine = cfg.cosine and lay.output_base == "fixed"
        self.drop = nn.Dropout(cfg.dropout)
        # The sequence model first: the LSTM's init then draws the random numbers it always did.
        self.rnn = self.core = None
        if cfg.model == "transformer":
            self.core = TransformerCore(d, cfg.nhead, cfg.nhid, cfg.nlayers, cfg.dropout,
                                        cfg.positions, cfg.context, cfg.norm)
        else:
            rnn, kw = _RNNS[cfg.model]
            self.rnn = rnn(d, cfg.nhid, cfg.nlayers,
                           dropout=cfg.dropout if cfg.nlayers > 1 else 0, **kw)
        core_dim = d if self.core is not None else cfg.nhid  # what the classifier reads
        # Built in the order of the original three modes, so that they draw the same random
        # numbers in the same order as before (their results stay bit for bit the same).
        self.scale = None
        vectors = None
        if fixed_weight is not None:
            if tuple(fixed_weight.shape) != (V, d):
                raise ValueError(f"fixed weight is {tuple(fixed_weight.shape)}, expected {(V, d)}")
            vectors = fixed_weight.detach().float().clone()
            if self.cosine:
                vectors = F.normalize(vectors, dim=1)
        if lay.has_fixed:
            self.register_buffer("fixed_weight", vectors)
        if lay.output_base == "fixed":
            self.scale = nn.Parameter(torch.tensor(float(cfg.resolved_scale_init())))
        if lay.input == "learned":
            self.encoder = nn.Embedding(V, d)
            nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
            if vectors is not None:  # after the uniform init, which keeps the RNG in step
                with torch.no_grad():
                    self.encoder.weight.copy_(vectors)
        out_dim = d
        if lay.output == "learned":
            if vectors is None:  # untied, the classifier reads the core's output directly
                out_dim = core_dim
                self.decoder_weight = nn.Parameter(torch.empty(V, out_dim).uniform_(-0.1, 0.1))
            else:
                self.decoder_weight = nn.Parameter(vectors.clone())
        # The classifier needs input of its row size: project when the RNN's nhid differs.
        self.proj = nn.Linear(core_dim, out_dim) if out_dim != core_dim else None
        self.bias = nn.Parameter(torch.zeros(V))
        self.delta = LowRankDelta(V, d, cfg.delta_rank) if cfg.delta_rank else None
        self.top_rows = None
        if cfg.learn_top:
            top_ids = torch.arange(cfg.learn_top) if top_ids is None else \
                torch.as_tensor(top_ids, dtype=torch.long)
            if top_ids.numel() != cfg.learn_top:
                raise ValueError(f"{top_ids.numel()} top_ids for learn_top {cfg.learn_top}")
            self.top_rows = TopRows(top_ids, vectors[top_ids], V)

    # --- the two tables -------------------------------------------------------------------

    def _parts(self) -> list[nn.Module]:
        # The correction first, then the trained rows replace theirs whole.
        return [p for p in (self.delta, self.top_rows) if p is not None]

    def _table(self, base: str, learned: torch.Tensor) -> EmbeddingTable:
        if base == "fixed":
            return EmbeddingTable(self.fixed_weight, self._parts())
        return EmbeddingTable(learned)

    @property
    def input_table(self) -> EmbeddingTable:
        return self._table(self.layout.input, self.encoder.weight
                           if self.layout.input == "learned" else None)

    @property
    def output_table(self) -> EmbeddingTable:
        if self.layout.tied:
            return self.input_table
        return self._table(self.layout.output, self.decoder_weight
                           if self.layout.output == "learned" else None)

    @property
    def output_weight(self) -> torch.Tensor:
        return self.output_table.weight()

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.input_table.embed(tokens)

    # --- the model ------------------------------------------------------------------------

    @property
    def carries_state(self) -> bool:
        """An RNN carries its hidden state from one chunk to the next; the Transformer sees
        the tokens of its window only (lmfix.evaluation scores it by a sliding window)."""
        return self.rnn is not None

    def init_hidden(self, bsz: int) -> tuple:
        """The state carried into the first chunk: (h, c) for an LSTM, (h,) for a GRU or RNN,
        () for the Transformer (nothing is carried between chunks)."""
        if self.rnn is None:
            return ()
        p = next(self.parameters())
        shape = (self.cfg.nlayers, bsz, self.cfg.nhid)
        n = 2 if self.cfg.model == "lstm" else 1
        return tuple(p.new_zeros(shape) for _ in range(n))

    def forward(self, tokens: torch.Tensor, hidden, cache: KVCache | None = None):
        """(T, B) token ids → (T·B, d_out) features for the classifier, and the new hidden.
        ``cache``: the Transformer's keys and values of earlier tokens (generation), extended
        in place."""
        emb = self.drop(self.embed(tokens))
        if self.core is not None:
            out = self.core(emb, cache)
        elif self.cfg.model == "lstm":
            out, hidden = self.rnn(emb, hidden)
            out = self.drop(out)
        else:
            out, h = self.rnn(emb, hidden[0])
            out, hidden = self.drop(out), (h,)
        out = out.reshape(-1, out.size(-1))
        if self.proj is not None:
            out = self.proj(out)
        if self.cosine:
            out = F.normalize(out, dim=-1)
        return out, hidden

    def loss(self, features: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"):
        """Cross-entropy of the classifier without materializing all T·B×V logits."""
        targets = targets.long()  # ids may be stored as int32 (the corpus id cache)
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


def count_params(model: LM) -> dict[str, int]:
    """Parameter counts, each tensor counted once (so a tied matrix once, not twice).

    ``trainable``: elements of parameters the optimizer updates; ``fixed``: frozen parameters
    and floating-point buffers (the fixed vectors; integer buffers such as ``top_rows.ids``
    are indices, not weights); ``total`` their sum. ``embedding_trainable`` /
    ``embedding_fixed`` split the same way what the input and output tables are made of
    (bases and parts; not the logit scale, bias, LSTM or projection).
    """
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    fixed = frozen + sum(b.numel() for b in model.buffers() if b.is_floating_point())
    tables = {id(t): t for table in (model.input_table, model.output_table)
              for t in table.tensors()}.values()
    emb_trainable = sum(t.numel() for t in tables if t.requires_grad)
    emb_fixed = sum(t.numel() for t in tables if not t.requires_grad)
    return {"trainable": trainable, "fixed": fixed, "total": trainable + fixed,
            "embedding_trainable": emb_trainable, "embedding_fixed": emb_fixed}
