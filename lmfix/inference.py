"""Use a trained run: perplexity on any text, sampled continuations, the input embedding.

``lmfix evaluate`` and ``lmfix generate`` (:mod:`lmfix.inference_cli`) are thin wrappers
over this module::

    >>> import lmfix
    >>> m = lmfix.load("runs/quick/runs/learned", device="cpu")     # doctest: +SKIP
    >>> m.evaluate("test")["splits"]["test"]["ppl"]                 # doctest: +SKIP
    >>> m.perplexity(open("notes.txt", encoding="utf-8"))["ppl"]     # doctest: +SKIP
    >>> print(m.generate("The king", words=30, seed=1)[0])           # doctest: +SKIP
    >>> m.embedding().most_similar("king")                          # doctest: +SKIP

Text is tokenized the way the run was trained (its saved vocab.txt or tokenizer.model) and
scored on the path training used to test it: :func:`lmfix.data.batchify` with the run's eval
batch size, :func:`lmfix.train.evaluate` with its bptt. So a split of the run's own corpus,
evaluated with the run's settings, reproduces summary.json. Words the run's vocabulary lacks
become ``<unk>`` and are counted. Only a finished run's best model (best.pt) is used, read with
``weights_only=True``.
"""

from __future__ import annotations

import io
import math
from dataclasses import fields
from pathlib import Path
from typing import IO, Iterable, Union

import torch

from . import flags, rundir
from .checkpoint import load_checkpoint
from .data import SPLITS, RawText, batchify, count_chars, count_words, read_text
from .errors import LmfixError, first_line
from .fsutil import read_json
from .metrics import bits_per_char, ppl, word_ppl
from .model import LSTMLM, ModelConfig
from .tokenizer import (VOCAB_FILE, Tokenizer, WordTokenizer, describe, kind_of,
                        load_tokenizer)
from .train import evaluate as evaluate_loss
from .train import pick_device
from .vocab import EOS, UNK, build_vocab

UNK_WARN_PCT = 5.0  # above this share of <unk>-replaced tokens, results carry a warning
TextLike = Union[str, bytes, IO, Iterable[str]]


def load(run_dir: str | Path, device: str | torch.device = "cpu",
         data: str | None = None) -> LanguageModel:
    """The best model of the finished run in ``run_dir``, in eval mode on ``device``.

    ``data`` (a directory or ``hub:CONFIG``) is only needed for a word-level run saved before
    runs kept their vocabulary (no vocab.txt) whose recorded corpus has moved: the vocabulary
    is rebuilt from the training split, which must be the very text the run was trained on
    (its sha256 is checked against config.json).
    """
    run_dir = Path(run_dir)
    config = _finished_run_config(run_dir)
    device = _device(device)
    raw_cache: dict[str, RawText] = {}
    tokenizer = _run_tokenizer(run_dir, config, data, raw_cache)
    model = _best_model(run_dir, config, len(tokenizer.vocab))
    summary = read_json(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else None
    lm = LanguageModel(model, tokenizer, config, summary, run_dir)
    lm._raw_cache = raw_cache
    return lm.to(device)


class LanguageModel:
    """A trained run's model and tokenizer. Build one with :func:`load`.

    Attributes: ``model`` (:class:`~lmfix.model.LSTMLM`, eval mode), ``tokenizer``, ``vocab``,
    ``config`` (config.json as a dict), ``summary`` (summary.json, or None), ``run_dir``.
    """

    def __init__(self, model: LSTMLM, tokenizer: Tokenizer, config: dict,
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

        Read like a corpus split: one ``<eos>`` per line, a leading byte-order mark dropped.
        ``batch_size`` defaults to the run's eval batch size; ``max_tokens`` (the first N
        tokens) to all of them. Returns ppl, loss (mean NLL, nats), tokens (evaluated
        targets), words, word_ppl, bpc, unk / unk_pct (words missing from the run's
        vocabulary, now ``<unk>``, among the evaluated tokens) and a ``warning`` (or None);
        ``name`` is what messages call the text.
        """
        return self._score(as_lines(text), batch_size, max_tokens, name)

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
        out = {"name": raw.name, "source": raw.source, "train_sha256": raw.train_sha256,
               "same_train_text": want is not None and raw.train_sha256 == want}
        if isinstance(self.tokenizer, WordTokenizer):
            words = build_vocab(raw.lines["train"]).words
            index = self.vocab.index
            missing = [w for w in words if w not in index]
            out.update(vocab_identical=words == self.vocab.words, vocab_size=len(words),
                       vocab_missing=len(missing), vocab_missing_examples=missing[:5])
        return out

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
        loss, ntok = evaluate_loss(self.model, data, bptt)
        # Word ppl and bpc exactly as training's summary computes them (train._word_level):
        # the NLL of the evaluated targets over the words starting among them, and the
        # text's characters per word applied to those words.
        targets = data[1:]
        words = self.tokenizer.count_words(targets.t())
        chars = count_chars(lines) * words / max(count_words(lines), 1)
        unk = self._oov_tokens(lines, ids.numel())
        res = {"ppl": ppl(loss), "loss": loss, "tokens": ntok, "words": words,
               "word_ppl": word_ppl(loss, ntok, words) if words else None,
               "bpc": bits_per_char(loss, ntok, chars) if chars else None,
               "unk": unk, "unk_pct": 100.0 * unk / max(ids.numel(), 1),
               "text_tokens": text_tokens, "lines": len(lines), "batch_size": bsz,
               "bptt": bptt, "max_tokens": limit, "warning": None}
        if res["unk_pct"] > UNK_WARN_PCT:
            res["warning"] = (f"{res['unk_pct']:.1f}% of the tokens of {what} are words missing "
                              f"from the run's vocabulary, scored as {UNK}; a perplexity over "
                              f"many {UNK}s means little")
        return res

    def _oov_tokens(self, lines: list[str], limit: int) -> int:
        """Words of the first ``limit`` tokens that the vocabulary lacks (word-level runs;
        SentencePiece's byte fallback never meets an unknown word)."""
        if not isinstance(self.tokenizer, WordTokenizer):
            return 0
        index, n, seen = self.vocab.index, 0, 0
        for line in lines:
            for w in line.split():
                if seen >= limit:
                    return n
                seen += 1
                n += w not in index
            seen += 1  # the line's <eos>
        return n

    # -- generation ----------------------------------------------------------------------------

    def encode_prompt(self, prompt: str = "") -> tuple[list[int], list[str]]:
        """The ids the LSTM reads before generating: ``<eos>`` (a line start, as every line
        follows one in training), then the prompt's tokens, an ``<eos>`` at each line break;
        and the prompt's words the vocabulary lacks (they become ``<unk>``)."""
        eos = self.vocab.index[EOS]
        text = "".join(as_lines(prompt)) if prompt else ""
        if not text.split():
            return [eos], []
        parts = text.split("\n")
        ids, _ = self.tokenizer.encode(parts)
        ids = [eos] + ids.tolist()[:-1]  # no <eos> after the last part: it is continued
        unknown: list[str] = []
        if isinstance(self.tokenizer, WordTokenizer):
            words = [w for p in parts for w in p.split()]
            unknown = [w for w in words if w not in self.vocab.index]
            if len(unknown) == len(words):
                raise LmfixError(f"every word of the prompt is missing from the run's vocabulary "
                                 f"({' '.join(unknown[:8])}{' ...' if len(unknown) > 8 else ''}"
                                 f" would all be {UNK}); use words of its training text")
        return ids, unknown

    @torch.no_grad()
    def generate(self, prompt: str = "", words: int = 50, temperature: float = 1.0,
                 top_k: int | None = None, seed: int | None = None,
                 samples: int = 1) -> list[str]:
        """``samples`` continuations of ``prompt``, sampled as one batch; each string is the
        prompt (as the run tokenizes it: unknown words show as ``<unk>``) plus its
        continuation.

        ``words``: word-level runs generate that many tokens (``<eos>``, a line break,
        counts as one); SentencePiece runs generate pieces until that many words are complete
        (a word starts at a "▁" piece or an ``<eos>``). ``temperature`` divides the logits;
        ``top_k`` samples among the k likeliest tokens only (1: greedy, the same text for any
        seed). The same ``seed`` gives the same text (on the same device).
        """
        words = _checked(flags.positive_int, "words", words)
        samples = _checked(flags.positive_int, "samples", samples)
        temperature = _checked(flags.positive_finite_float, "temperature", temperature)
        top_k = _checked(flags.positive_int, "top_k", top_k)
        seed = _checked(flags.seed, "seed", seed)
        if words is None or samples is None or temperature is None:
            raise LmfixError("words, samples and temperature need values")
        prompt_ids, _ = self.encode_prompt(prompt)
        dev, model = self.device, self.model.eval()
        gen = torch.Generator(device=dev)
        if seed is None:
            gen.seed()
        else:
            gen.manual_seed(seed)
        x = torch.tensor(prompt_ids, device=dev).unsqueeze(1).expand(-1, samples).contiguous()
        feats, hidden = model(x, model.init_hidden(samples))
        last = feats.view(len(prompt_ids), samples, -1)[-1]
        stop = _WordCounter(self.tokenizer, words, samples, prompt_ids[-1])
        out: list[list[int]] = [[] for _ in range(samples)]
        while True:
            nxt = _sample(model.logits(last), temperature, top_k, gen)
            for b, token in enumerate(nxt.tolist()):
                if stop.take(b, token):
                    out[b].append(token)
            if stop.all_done():
                break
            feats, hidden = model(nxt.view(1, samples), hidden)
            last = feats
        return [self.tokenizer.decode(prompt_ids[1:] + ids) for ids in out]

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


class _WordCounter:
    """When each sample of a batch has generated enough (see LanguageModel.generate)."""

    def __init__(self, tokenizer: Tokenizer, words: int, samples: int, last_prompt_id: int):
        self.words, self.kind = words, tokenizer.kind
        self.count = [0] * samples
        self.done = [False] * samples
        self.steps = 0
        if self.kind != "word":
            from .subword import WORD_START
            pieces = tokenizer.vocab.words
            self.starts = {i for i, p in enumerate(pieces) if p.startswith(WORD_START)}
            self.bare = pieces.index(WORD_START) if WORD_START in pieces else -1
            self.eos = tokenizer.vocab.index[EOS]
            self.prev = [last_prompt_id] * samples
            self.max_steps = 20 * words + 50  # a model that never starts a word still ends

    def take(self, b: int, token: int) -> bool:
        """Whether sample ``b`` keeps ``token``."""
        if self.done[b]:
            return False
        if self.kind == "word":
            self.count[b] += 1
            self.done[b] = self.count[b] >= self.words
            return True
        # lmfix.subword.words_in_pieces' rule: a "▁" piece starts a word, an <eos> too unless
        # it follows a bare "▁" (a literal "<eos>" word, already counted)
        starts = token in self.starts or (token == self.eos and self.prev[b] != self.bare)
        self.prev[b] = token
        if starts and self.count[b] == self.words:  # word N+1 begins: word N is complete
            self.done[b] = True
            return False
        self.count[b] += starts
        return True

    def all_done(self) -> bool:
        self.steps += 1
        if self.kind != "word" and self.steps >= self.max_steps:
            return True
        return all(self.done)


def _sample(logits: torch.Tensor, temperature: float, top_k: int | None,
            gen: torch.Generator) -> torch.Tensor:
    logits = logits.float()
    if top_k == 1:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(1)


def as_lines(text: TextLike) -> list[str]:
    """Lines of a str, bytes, open file or list of lines, read like a corpus file
    (universal newlines, a leading byte-order mark dropped)."""
    if hasattr(text, "read"):
        text = text.read()
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise LmfixError(f"the text is not UTF-8 (byte {e.start})") from None
    if isinstance(text, str):
        return io.StringIO(text.removeprefix("\ufeff"), newline=None).readlines()
    lines = list(text)
    if not all(isinstance(line, str) for line in lines):
        raise LmfixError("text must be a str, bytes, an open file or a list of str lines")
    return lines


def read_lines(path: str | Path) -> list[str]:
    """A plain text file's lines, read as corpus splits are (utf-8-sig, universal newlines)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig", newline=None) as f:
            return f.readlines()
    except UnicodeDecodeError as e:
        raise LmfixError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise LmfixError(f"{path}: cannot read ({e.strerror or e})") from None


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


def _finished_run_config(run_dir: Path) -> dict:
    """config.json of the finished run in ``run_dir``; otherwise an error saying what is there."""
    if not run_dir.exists():
        raise LmfixError(f"run directory {run_dir} does not exist")
    if not run_dir.is_dir():
        raise LmfixError(f"{run_dir} is not a run directory (a run directory holds config.json "
                         "and best.pt)")
    if not (run_dir / "config.json").is_file():
        raise LmfixError(f"{run_dir} holds no lmfix run (no config.json); {_contents(run_dir)}")
    config = rundir.load_config(run_dir)
    status = rundir.read_status(run_dir)
    state = status.get("status")
    if state != "finished":
        why = {None: "it has no readable status.json",
               "running": "its status is running (still training, or killed before it could "
                          "say so)",
               "interrupted": f"it was interrupted; continue it with: lmfix train --resume "
                              f"{run_dir}",
               "failed": f"it failed ({first_line(Exception(status.get('error') or '?'))})"}
        raise LmfixError(f"{run_dir} holds no finished run: "
                         f"{why.get(state, f'its status is {state}')}; only a finished run's "
                         "best model is used")
    if not isinstance(config.get("model"), dict):
        raise LmfixError(f"{run_dir / 'config.json'} records no model configuration")
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


def _run_tokenizer(run_dir: Path, config: dict, data: str | None,
                   raw_cache: dict[str, RawText]) -> Tokenizer:
    identity = config.get("tokenizer")
    if kind_of(identity) == "word" and not (run_dir / VOCAB_FILE).exists():
        return _rebuild_vocabulary(run_dir, config, data, raw_cache)
    return load_tokenizer(identity, run_dir)


def _rebuild_vocabulary(run_dir: Path, config: dict, data: str | None,
                        raw_cache: dict[str, RawText]) -> WordTokenizer:
    """A word run saved before runs kept vocab.txt: its vocabulary is the training split's
    (lmfix.vocab.build_vocab), read from the corpus config.json records (or ``data``), whose
    training text must be the run's (sha256)."""
    corpus = config.get("corpus") or {}
    want = corpus.get("train_sha256")
    candidates = [s for s in dict.fromkeys((data, config["train"].get("data"),
                                            corpus.get("source"))) if s]
    tried = []
    for spec in candidates:
        try:
            raw = raw_cache.get(spec) or read_text(spec)
        except LmfixError as e:
            tried.append(f"{spec}: {first_line(e)}")
            continue
        raw_cache[spec] = raw
        if want and raw.train_sha256 != want:
            tried.append(f"{spec}: another training text (sha256 {raw.train_sha256[:12]}, the "
                         f"run's {want[:12]})")
            continue
        return WordTokenizer(build_vocab(raw.lines["train"]))
    raise LmfixError(f"{run_dir} has no {VOCAB_FILE} (it was trained before runs saved their "
                     f"vocabulary) and its corpus is not available ("
                     f"{'; '.join(tried) or 'none recorded'}); pass --data with the corpus it "
                     "was trained on")


def _best_model(run_dir: Path, config: dict, vocab_size: int) -> LSTMLM:
    known = {f.name for f in fields(ModelConfig)}
    try:
        mcfg = ModelConfig(**{k: v for k, v in config["model"].items() if k in known})
        if mcfg.vocab_size != vocab_size:
            raise ValueError(f"the model has {mcfg.vocab_size} words, the run's tokenizer "
                             f"{vocab_size}")
        fixed = torch.zeros(mcfg.vocab_size, mcfg.emsize) if mcfg.embedding == "fixed" else None
        with torch.random.fork_rng(devices=[]):  # leave the caller's RNG alone
            model = LSTMLM(mcfg, fixed)
    except (TypeError, ValueError) as e:
        raise LmfixError(f"{run_dir / 'config.json'}: cannot rebuild the model "
                         f"({first_line(e)})") from None
    path = run_dir / rundir.BEST
    if not path.is_file():
        raise LmfixError(f"{run_dir} has no {rundir.BEST} (the best model); {_contents(run_dir)}")
    state = load_checkpoint(path, map_location="cpu")
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, TypeError) as e:
        raise LmfixError(f"{path} does not match the model in config.json "
                         f"({first_line(e)})") from None
    return model.eval()


def finite_or_none(obj):
    """``obj`` with non-finite floats as None (strict JSON has no inf/nan)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj
