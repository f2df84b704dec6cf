"""Use a trained run: perplexity on any text, sampled continuations, the input embedding.

``lmfix evaluate`` and ``lmfix generate`` (:mod:`lmfix.inference_cli`) are thin wrappers
over this module::

    >>> import lmfix
    >>> m = lmfix.load("runs/quick/runs/learned", device="cpu")     # doctest: +SKIP
    >>> m.evaluate("test")["splits"]["test"]["ppl"]                 # doctest: +SKIP
    >>> m.perplexity(open("notes.txt", encoding="utf-8"))["ppl"]     # doctest: +SKIP
    >>> print(m.generate("The king", words=30, seed=1)[0])           # doctest: +SKIP
    >>> m.embedding().most_similar("king")                          # doctest: +SKIP

Text is tokenized the way the run was trained (its saved vocab.txt or tokenizer.model, which
must be the very file config.json records the sha256 of) and scored as training tested it
(:mod:`lmfix.evaluation`: :func:`lmfix.data.batchify` with the run's eval batch size, its
bptt). So a split of the run's own corpus, evaluated with the run's settings, reproduces
summary.json. Words the run's vocabulary lacks become ``<unk>`` and are counted. Only a
finished run's best model (best.pt) is used, read with ``weights_only=True``. This module
imports the model, never the training code (as nanoGPT's ``sample.py``).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import IO, Iterable, Iterator, Union

import torch

from . import evaluation, flags
from .checkpoint import load_checkpoint
from .data import SPLITS, RawText, batchify, count_chars, count_words, read_text, text_lines
from .device import pick_device
from .errors import LmfixError, first_line
from .evaluation import ppl
from .memory import available_bytes, format_bytes
from .model import LM, ModelConfig
from .transformer import KVCache
from .rundir import BEST, CONFIG, RunDir
from .tokenizer import Tokenizer, describe, load_tokenizer
from .vocab import EOS, UNK

TextLike = Union[str, bytes, IO, Iterable[str]]
# Generation's ranges. Any T > 0 works: it divides the logits after their maximum is
# subtracted, so every value is ≤ 0 and the likeliest token's is exactly 0 (see _sample).
TEMPERATURE = flags.positive_finite_float
WORDS = flags.int_in(1, 10_000_000, name="words")  # a longer text streams for days
SAMPLES = flags.int_in(1, 100_000, name="samples")  # and each sample holds V logits


def load(run_dir: str | Path, device: str | torch.device = "cpu") -> LanguageModel:
    """The best model of the finished run in ``run_dir``, in eval mode on ``device``."""
    run = RunDir(run_dir)
    config = _finished_run_config(run)
    tokenizer = load_tokenizer(config["tokenizer"], run.path, config["tokenizer_sha256"])
    model = _best_model(run, config, len(tokenizer.vocab))
    return LanguageModel(model, tokenizer, config, run.read_summary(), run.path).to(device)


class LanguageModel:
    """A trained run's model and tokenizer. Build one with :func:`load`.

    Attributes: ``model`` (:class:`~lmfix.model.LM`, eval mode), ``tokenizer``, ``vocab``,
    ``config`` (config.json as a dict), ``summary`` (summary.json, or None), ``run_dir``.
    """

    def __init__(self, model: LM, tokenizer: Tokenizer, config: dict,
                 summary: dict | None = None, run_dir: str | Path | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config
        self.summary = summary
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._raw_cache: dict[str, RawText] = {}

    def __repr__(self) -> str:
        c = self.model.cfg
        return (f"LanguageModel({str(self.run_dir)!r}: {c.embedding} embedding, "
                f"{describe(self.tokenizer.identity())}, vocabulary {len(self.vocab)}, "
                f"emsize {c.emsize}, nhid {c.nhid}, {c.nlayers} layers, on {self.device})")

    # -- basics --------------------------------------------------------------------------------

    @property
    def vocab(self):
        return self.tokenizer.vocab

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def train_config(self) -> dict:
        return self.config.get("train") or {}

    def to(self, device: str | torch.device) -> LanguageModel:
        """Move the model to ``device`` ("cpu", "cuda", "cuda:1", "auto"); returns self."""
        self.model.to(_device(device))
        return self

    # -- perplexity ----------------------------------------------------------------------------

    def perplexity(self, text: TextLike, batch_size: int | None = None,
                   max_tokens: int | None = None, *, name: str = "the text") -> dict:
        """Perplexity of ``text``: a str (split into lines), a list of lines, or an open file.

        Read like a corpus split (:func:`lmfix.data.text_lines`): one ``<eos>`` per line, a
        leading byte-order mark dropped, lines of bounded length. ``batch_size`` defaults to
        the run's eval batch size; ``max_tokens`` (the first N tokens) to all of them. Returns
        ppl, loss (mean NLL, nats), tokens (evaluated targets), words, word_ppl, bpc, unk /
        unk_pct (words missing from the run's vocabulary, now ``<unk>``, among the evaluated
        tokens) and a ``warning`` (or None); ``name`` is what messages call the text.
        """
        return self._score(text_lines(text), batch_size, max_tokens, name)

    def evaluate(self, split: str = "test", data: str | None = None,
                 batch_size: int | None = None, max_tokens: int | None = None) -> dict:
        """Evaluate corpus splits as training tested them (``lmfix evaluate``).

        ``split``: valid, test, train or all; ``data``: a directory or ``hub:CONFIG``
        (default: the run's own corpus); ``batch_size`` and ``max_tokens`` default to the
        run's eval batch size and max_eval_tokens, so the run's own valid/test reproduce
        summary.json. Returns {"data", "corpus" (how the corpus compares with the run's),
        "splits": {name: perplexity dict, plus summary_ppl where comparable}}.
        """
        if split not in (*SPLITS, "all"):
            raise LmfixError(f"split {split!r}: use valid, test, train or all")
        spec = data or self.recorded_data()
        if spec is None:
            raise LmfixError(f"{self.run_dir}: config.json records no corpus; pass --data")
        raw = self._read_corpus(spec)
        check = self.compare_corpus(raw)
        names = ("valid", "test", "train") if split == "all" else (split,)
        bsz = batch_size or self.train_config.get("eval_batch_size", 10)
        limit = max_tokens if max_tokens is not None else self.train_config.get("max_eval_tokens")
        results = {}
        for name in names:
            res = self._score(raw.lines[name], bsz, limit, f"the {name} split of {spec}")
            res["summary_ppl"] = self._summary_ppl(name, check, bsz, limit)
            results[name] = res
        return {"data": spec, "corpus": check, "splits": results}

    def recorded_data(self) -> str | None:
        """The run's corpus: where config.json says it was read from (resolved), else the
        ``--data`` it was given."""
        source = (self.config.get("corpus") or {}).get("source")
        given = self.train_config.get("data")
        if source and (source.startswith("hub:") or Path(source).is_dir()):
            return source
        return given or source

    def compare_corpus(self, raw: RawText) -> dict:
        """How a corpus compares with the run's: the same training text (sha256)? For
        word-level runs, the same vocabulary, and how many of its words the run lacks."""
        want = (self.config.get("corpus") or {}).get("train_sha256")
        return {"name": raw.name, "source": raw.source, "train_sha256": raw.train_sha256,
                "same_train_text": want is not None and raw.train_sha256 == want,
                **self.tokenizer.compare_vocab(raw.lines["train"])}

    def _summary_ppl(self, split: str, check: dict, bsz: int, limit: int | None) -> float | None:
        """summary.json's figure for this split, when this evaluation is the same one."""
        t = self.train_config
        same = (check["same_train_text"] and check.get("vocab_identical", True)
                and bsz == t.get("eval_batch_size") and limit == t.get("max_eval_tokens"))
        key = {"valid": "val_ppl", "test": "test_ppl"}.get(split)
        if not (same and key and self.summary):
            return None
        return self.summary.get(key)

    def _read_corpus(self, spec: str) -> RawText:
        if spec not in self._raw_cache:
            self._raw_cache[spec] = read_text(spec)
        return self._raw_cache[spec]

    @torch.no_grad()
    def _score(self, lines: list[str], batch_size: int | None, max_tokens: int | None,
               what: str) -> dict:
        bsz = _checked(flags.positive_int, "batch_size", batch_size) \
            or self.train_config.get("eval_batch_size", 10)
        limit = _checked(flags.positive_int, "max_tokens", max_tokens)
        if not lines or all(not line.split() for line in lines):
            raise LmfixError(f"{what} is empty (no words)")
        ids, _ = self.tokenizer.encode(lines)
        text_tokens = ids.numel()
        if limit:
            ids = ids[:limit]
        if ids.numel() // bsz < 2:
            raise LmfixError(f"{what}: {ids.numel()} tokens are too few to evaluate with a batch "
                             f"size of {bsz} (at least {2 * bsz} are needed; try a smaller "
                             "--batch-size)")
        bptt = self.train_config.get("bptt", 35)
        data = batchify(ids, bsz).to(self.device)
        loss, ntok = evaluation.mean_nll(self.model, data, bptt)
        level = evaluation.word_level(loss, data, self.tokenizer, count_words(lines),
                                      count_chars(lines))
        unk = self.tokenizer.count_unknown(lines, ids.numel())
        return {"ppl": ppl(loss), "loss": loss, "tokens": ntok, **level,
                "unk": unk, "unk_pct": 100.0 * unk / max(ids.numel(), 1),
                "text_tokens": text_tokens, "lines": len(lines), "batch_size": bsz,
                "bptt": bptt, "max_tokens": limit,
                "context": evaluation.context_of(self.model, bptt),
                "warning": evaluation.unk_warning(unk, ids.numel(), what)}

    # -- generation ----------------------------------------------------------------------------

    def encode_prompt(self, prompt: str = "") -> tuple[list[int], list[str]]:
        """The ids the LSTM reads before generating: ``<eos>`` (a line start, as every line
        follows one in training), then the prompt's tokens, an ``<eos>`` at each line break;
        and the prompt's words the vocabulary lacks (they become ``<unk>``)."""
        eos = self.vocab.index[EOS]
        text = "".join(text_lines(prompt)) if prompt else ""
        if not text.split():
            return [eos], []
        parts = text.split("\n")
        ids, _ = self.tokenizer.encode(parts)
        ids = [eos] + ids.tolist()[:-1]  # no <eos> after the last part: it is continued
        words = [w for p in parts for w in p.split()]
        unknown = self.tokenizer.unknown_words(words)
        if unknown and len(unknown) == len(words):
            raise LmfixError(f"every word of the prompt is missing from the run's vocabulary "
                             f"({' '.join(unknown[:8])}{' ...' if len(unknown) > 8 else ''}"
                             f" would all be {UNK}); use words of its training text")
        return ids, unknown

    def generate(self, prompt: str = "", words: int = 50, temperature: float = 1.0,
                 top_k: int | None = None, seed: int | None = None,
                 samples: int = 1) -> list[str]:
        """``samples`` continuations of ``prompt``, sampled as one batch; each string is the
        prompt (as the run tokenizes it: unknown words show as ``<unk>``) plus its
        continuation. :meth:`stream` gives the same text as it is produced.

        ``words``: word-level runs generate that many tokens (``<eos>``, a line break,
        counts as one); SentencePiece runs generate pieces until that many words are complete
        (a word starts at a "▁" piece or an ``<eos>``). ``temperature`` divides the logits;
        ``top_k`` samples among the k likeliest tokens only (1: greedy, the same text for any
        seed). The same ``seed`` gives the same text (on the same device).
        """
        texts = [""] * _checked(SAMPLES, "samples", samples)
        for b, text in self.stream(prompt, words, temperature, top_k, seed, samples):
            texts[b] += text
        return texts

    def stream(self, prompt: str = "", words: int = 50, temperature: float = 1.0,
               top_k: int | None = None, seed: int | None = None,
               samples: int = 1) -> Iterator[tuple[int, str]]:
        """(sample, text) pieces of :meth:`generate`'s texts, in the order they are produced:
        each sample's pieces joined are its text. The arguments are checked at once."""
        words = _checked(WORDS, "words", words)
        samples = _checked(SAMPLES, "samples", samples)
        temperature = _checked(TEMPERATURE, "temperature", temperature)
        top_k = _checked(flags.positive_int, "top_k", top_k)
        seed = _checked(flags.seed, "seed", seed)
        if words is None or samples is None or temperature is None:
            raise LmfixError("words, samples and temperature need values")
        self._check_fits(samples)
        prompt_ids, _ = self.encode_prompt(prompt)
        return self._stream(prompt_ids, words, temperature, top_k, seed, samples)

    @torch.no_grad()
    def _stream(self, prompt_ids: list[int], words: int, temperature: float,
                top_k: int | None, seed: int | None, samples: int) -> Iterator[tuple[int, str]]:
        dev, model, tok = self.device, self.model.eval(), self.tokenizer
        gen = torch.Generator(device=dev)
        if seed is None:
            gen.seed()
        else:
            gen.manual_seed(seed)
        streams = [tok.text_stream() for _ in range(samples)]
        for b, s in enumerate(streams):  # the prompt as the run reads it (<unk> shown)
            text = "".join(s.feed(i) for i in prompt_ids[1:])
            if text:
                yield b, text
        x = torch.tensor(prompt_ids, device=dev).unsqueeze(1).expand(-1, samples).contiguous()
        reader = _Reader(model, samples)
        last = reader.read(x)
        count, done, prev = [0] * samples, [False] * samples, [prompt_ids[-1]] * samples
        # A SentencePiece model that never starts a word still ends: at most ~20 pieces a word.
        for _ in range(20 * words + 50):
            nxt = _sample(model.logits(last), temperature, top_k, gen)
            for b, token in enumerate(nxt.tolist()):
                if done[b]:
                    continue
                starts = tok.starts_word(prev[b], token)
                prev[b] = token
                if starts and count[b] == words:  # word N + 1 begins: word N is complete
                    done[b] = True
                    continue
                count[b] += starts
                if text := streams[b].feed(token):
                    yield b, text
            if all(done):
                break
            last = reader.read(nxt.view(1, samples))
        for b, s in enumerate(streams):
            if text := s.end():
                yield b, text

    def _check_fits(self, samples: int) -> None:
        """Each sample holds its V logits a few times over in float32 while it is sampled
        (logits, shifted, probabilities, multinomial's noise: ~16 bytes a vocabulary entry,
        with the LSTM state besides): refuse what memory cannot hold before allocating it."""
        need = samples * (len(self.vocab) * 16 + self.model.cfg.nlayers * self.model.cfg.nhid * 8)
        free = available_bytes(self.device)
        if free is not None and need > 0.9 * free:
            raise LmfixError(f"--samples {samples}: sampling them at once needs about "
                             f"{format_bytes(need)} for the {len(self.vocab):,}-token vocabulary "
                             f"but only {format_bytes(free)} is available; use fewer samples")

    # -- embedding -----------------------------------------------------------------------------

    def embedding(self):
        """The V×d input embedding as gensim ``KeyedVectors`` (keys: the run's vocabulary), as
        the model uses it: learned, fixed (after ``--embedding-norm`` and, with ``--cosine``,
        unit rows), or fixed plus its trained parts (``--learn-top``, ``--delta-rank``)."""
        import numpy as np
        from gensim.models import KeyedVectors
        weight = self.model.input_table.weight()  # any mode: fixed, learned, or both combined
        vectors = weight.detach().float().cpu().numpy().astype(np.float32)
        kv = KeyedVectors(vector_size=vectors.shape[1], count=0, dtype=np.float32)
        kv.add_vectors(list(self.vocab.words), vectors)
        return kv


# ---------------------------------------------------------------------------------------------
# Helpers


class _Reader:
    """Feeds tokens to the model and returns the features of the last one, each token read
    once: an RNN carries its hidden state; the Transformer keeps a cache of keys and values,
    bounded by the window it was trained on (``context``, the training bptt): when full, it is
    rebuilt from the last context / 2 tokens, so a token always sees at least that many
    before it and generation costs O(context) per token, never O(n²)."""

    def __init__(self, model, samples: int):
        self.model, self.samples = model, samples
        self.hidden = model.init_hidden(samples)
        self.window = None if model.carries_state else model.cfg.context
        self.cache = None if model.carries_state else KVCache(model.cfg.nlayers)
        self.seen = None  # the Transformer's last `window` tokens (rows), to rebuild from

    def read(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.window is None:
            feats, self.hidden = self.model(tokens, self.hidden)
            return feats.view(tokens.size(0), self.samples, -1)[-1]
        self.seen = tokens if self.seen is None else torch.cat([self.seen, tokens])
        self.seen = self.seen[-self.window:]
        if not len(self.cache):  # a prompt: its last `window` tokens
            tokens = self.seen
        elif len(self.cache) + tokens.size(0) > self.window:  # full: keep the last half
            self.cache = KVCache(self.model.cfg.nlayers)
            tokens = self.seen[-max(1, self.window // 2):]
        feats, _ = self.model(tokens, (), cache=self.cache)
        return feats.view(tokens.size(0), self.samples, -1)[-1]


GREEDY_BELOW = 1e-30  # a smaller T leaves every other token a float32 weight of exactly 0


def _sample(logits: torch.Tensor, temperature: float, top_k: int | None,
            gen: torch.Generator) -> torch.Tensor:
    if top_k == 1 or temperature < GREEDY_BELOW:
        # (below ~1.4e-45 T itself is 0 in float32, and 0 / 0 made the NaNs multinomial
        # refused: found by tests/test_inference_fuzz.py)
        return logits.argmax(-1)
    # The maximum subtracted first, as softmax does inside: (logits - max) / T is ≤ 0, and 0
    # for the likeliest token, for any T > 0 (at worst -inf elsewhere: greedy), where
    # logits / 1e-40 overflowed to inf and inf - inf made the NaNs multinomial refused.
    z = logits.float()
    z = (z - z.max(dim=-1, keepdim=True).values) / temperature
    if top_k is not None and top_k < z.size(-1):
        kth = torch.topk(z, top_k, dim=-1).values[:, -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    probs = torch.softmax(z, dim=-1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(1)


def _checked(rng: flags.Range, name: str, value):
    """``value`` (None allowed: "default") if in ``rng``, else a one-line LmfixError."""
    if value is None:
        return None
    why = rng.error(value)
    if why:
        raise LmfixError(f"{name}: {why}")
    return value


def _device(device: str | torch.device) -> torch.device:
    return device if isinstance(device, torch.device) else pick_device(str(device))


def _finished_run_config(run: RunDir) -> dict:
    """config.json of the finished run in ``run``; otherwise an error saying what is there."""
    if not run.path.exists():
        raise LmfixError(f"run directory {run.path} does not exist")
    if not run.path.is_dir():
        raise LmfixError(f"{run.path} is not a run directory (a run directory holds "
                         "config.json and best.pt)")
    if not (run / CONFIG).is_file():
        raise LmfixError(f"{run.path} holds no lmfix run (no config.json); {_contents(run.path)}")
    config = run.read_config()
    status = run.status()
    if not run.finished:
        why = {None: "it has no readable status.json",
               "running": "its status is running (still training, or killed before it could "
                          "say so)",
               "interrupted": f"it was interrupted; continue it with: lmfix train --resume "
                              f"{run.path}",
               "failed": f"it failed ({first_line(Exception(status.error or '?'))})",
               "finished": "its summary.json is missing"}
        raise LmfixError(f"{run.path} holds no finished run: {why[status.state]}; only a "
                         "finished run's best model is used")
    for key in ("model", "tokenizer"):
        if not isinstance(config.get(key), dict):
            raise LmfixError(f"{run / CONFIG} records no {key} configuration")
    if not isinstance(config.get("tokenizer_sha256"), str):
        raise LmfixError(f"{run / CONFIG} records no tokenizer_sha256: it was made by an "
                         "older lmfix; train it again")
    return config


def _contents(directory: Path) -> str:
    """What a directory that is not a run holds, in a few words."""
    runs = sorted(str(p.parent.relative_to(directory))
                  for pattern in ("*/config.json", "*/*/config.json")
                  for p in directory.glob(pattern))
    if runs:
        shown = ", ".join(runs[:6]) + (f" and {len(runs) - 6} more" if len(runs) > 6 else "")
        return f"it holds runs in subdirectories: {shown} (pass one of them)"
    try:
        entries = sorted(p.name + ("/" if p.is_dir() else "") for p in directory.iterdir())
    except OSError as e:
        return f"cannot list it ({e.strerror or e})"
    if not entries:
        return "it is empty"
    more = f" and {len(entries) - 8} more" if len(entries) > 8 else ""
    return "it contains " + ", ".join(entries[:8]) + more


def _best_model(run: RunDir, config: dict, vocab_size: int) -> LM:
    known = {f.name for f in fields(ModelConfig)}
    try:
        mcfg = ModelConfig(**{k: v for k, v in config["model"].items() if k in known})
        if mcfg.vocab_size != vocab_size:
            raise ValueError(f"the model has {mcfg.vocab_size} words, the run's tokenizer "
                             f"{vocab_size}")
        fixed = torch.zeros(mcfg.vocab_size, mcfg.emsize) if mcfg.embedding == "vectors" else None
        with torch.random.fork_rng(devices=[]):  # leave the caller's RNG alone
            model = LM(mcfg, fixed)
    except (TypeError, ValueError) as e:
        raise LmfixError(f"{run / CONFIG}: cannot rebuild the model ({first_line(e)})") from None
    path = run / BEST
    if not path.is_file():
        raise LmfixError(f"{run.path} has no {BEST} (the best model); {_contents(run.path)}")
    state = load_checkpoint(path, map_location="cpu")
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, TypeError) as e:
        raise LmfixError(f"{path} does not match the model in config.json "
                         f"({first_line(e)})") from None
    return model.eval()
