#!/usr/bin/env python
"""How lmfix's costs grow with the vocabulary size V and the corpus size N.

Every figure is one whole process, started as a user would start it, timed by the wall clock
and watched for memory: every 50 ms (slowing to every 0.5 s over a long run) the memory of the process and all its descendants is
summed (PSS from /proc/PID/smaps_rollup where it can be read, so the pages the corpus
encoder's worker processes share with their parent are counted once; RSS from
/proc/PID/status otherwise) and the largest sum is the peak (the RSS sum is kept beside it in
results.json). A figure under a minute is repeated ``--repeats`` times (3) and the
median reported; a longer one is run once. What is measured, for each corpus of the grid
``--vocabs`` × ``--tokens`` (made by scripts/make_corpus.py under ``--corpora`` if absent):

- **load**: ``python -c "from lmfix.data import load_corpus; load_corpus(DIR)"`` with
  LMFIX_CACHE a fresh empty directory (cold: tokenize and write the id cache; a new one for
  each repeat), then with a filled cache (cached: hash the text, map the ids). The text files
  are in the OS page cache in both: "cold" means lmfix's cache, not the disk's;
- **pmi**: ``lmfix build-embeddings --method pmi --dim 200`` (lmfix's cache warm);
- **word2vec**: ``lmfix build-embeddings --method word2vec --dim 200 --epochs 1`` (default
  workers), and beside it gensim alone on the same sentences (the corpus file lmfix would
  write, written first and not timed): ``Word2Vec(corpus_file=..., vector_size=200, window=5,
  min_count=1, sg=0, hs=0, negative=5, sample=1e-3, epochs=1, workers=W)`` with lmfix's
  default W; the table gives lmfix's time over gensim's;
- **train**: ``lmfix train`` for one epoch of ``--train-tokens`` tokens (a few dozen steps of
  batch 20 × bptt 35) with d = emsize = nhid ∈ ``--dims``, a learned tied, learned untied
  and fixed (random-orthogonal) embedding, SGD and AdamW (lr 1e-3: the default lr 20 is
  SGD's and makes AdamW diverge, which lmfix then refuses to report). Throughput does not
  depend on the corpus's size, so each V trains on its smallest corpus. Reported: training
  tokens/s, read from the run's own log (metrics.jsonl; the time of each step record is the
  file's modification time when it appeared, so the first interval, with its allocation and
  warm-up, is left out; the run's whole-epoch figure when that is not possible), the peak,
  lmfix.memory's estimate for the same settings (read back from the run's config.json; the
  token ids it holds as lmfix.train.tokens_used counts them), the peak of
  ``python -c "import torch, lmfix.train"`` (the baseline every process starts from) and
  (peak − baseline) / estimate; and what the fixed embedding saves: peak(learned tied) −
  peak(random-orthogonal) beside the estimate's difference.

Every finished measurement is written to ``--out``/results.json at once (a temporary file
renamed over it), keyed by kind, V, N and settings, with its command, times, peaks, date and
the machine; a re-run skips what is there (``--force`` measures again; a failed measurement
is tried again), so a long grid can be stopped with Ctrl-C and continued. A command that
fails is recorded with its last stderr line (the whole stderr in ``--out``/logs/) and the
grid goes on. At the end (or with ``--report`` alone) results.json is rendered as Markdown
tables (stdout, and ``--table FILE``) and a log-log plot against V (``--plot FILE``, default
``--out``/scale.png).

A change to lmfix.memory needs no new runs: ``--re-estimate`` recomputes every training
estimate from the config each run recorded (kept in results.json), then renders.

The poll adds a little CPU work of its own (reading smaps_rollup walks the page tables of a
large process) and misses peaks shorter than the interval. PSS divides a shared page among
every process that maps it, machine-wide: this script imports neither lmfix nor torch nor
numpy itself (short helper processes do, between measurements), but other torch processes
running meanwhile lower the measured figures a little (shared library pages) and slow them a
lot; run it with nothing else busy.

    python scripts/bench_scale.py                          # the whole default grid (hours)
    python scripts/bench_scale.py --vocabs 33278 --tokens 2000000 --only load,pmi,word2vec
    python scripts/bench_scale.py --only train --dims 200 --train-tokens 14000 --threads 2
    python scripts/bench_scale.py --report --table docs/scale-table.md --plot docs/scale.png
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import fcntl
import importlib.metadata
import json
import os
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling, when imported by a test
from proc_watch import run_watched  # noqa: E402
from scale_report import (BASELINE_CODE, EMBEDDINGS, EVAL_TOKENS, OPTIMIZERS,  # noqa: E402
                          fmt_bytes, fmt_s, machine_line, report)

ROOT = Path(__file__).resolve().parents[1]
MAKE_CORPUS = ROOT / "scripts" / "make_corpus.py"
PARTS = ("load", "pmi", "word2vec", "train")
LR = {"sgd": 20.0, "adam": 1e-3, "adamw": 1e-3}
EMB_DIM = 200  # PMI's and word2vec's dimension
LONG_S = 60.0  # a figure that takes longer is measured once
FORMAT = 1

LOAD_CODE = "from lmfix.data import load_corpus; load_corpus({dir})"
PROBE_CODE = """
import json, sys
from lmfix.data import load_corpus
c = load_corpus(sys.argv[1])
with open(sys.argv[2], "w") as f:
    json.dump({"vocab": len(c.vocab), "train": c.train.numel(),
               "valid": c.split("valid").numel(), "test": c.split("test").numel()}, f)
"""
WORKERS_CODE = """
import json, sys
from lmfix.embeddings.word2vec import default_workers
with open(sys.argv[1], "w") as f:
    json.dump(default_workers(), f)
"""
ESTIMATE_CODE = """
import json, sys
from types import SimpleNamespace
from lmfix.memory import estimate_train_bytes
from lmfix.train import tokens_used

class Sized:
    def __init__(self, n):
        self.n = n

    def numel(self):
        return self.n

from lmfix.config import DEFAULTS
from lmfix.embedding_spec import LEARNED_SPECS, resolve_fix

config, sizes = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
t, m = {**DEFAULTS, **config["train"]}, dict(config["model"])
if "embedding_spec" in config:  # an entry from before configs were kept: lmfix's defaults
    spec = config["embedding_spec"]
    m.setdefault("embedding", spec if spec in LEARNED_SPECS else "vectors")
    m.setdefault("fix", resolve_fix(spec, None))
    m.setdefault("nlayers", t["nlayers"])
if "used" in sizes:  # --re-estimate: the run's own count
    used = sizes["used"]
else:
    corpus = SimpleNamespace(train=Sized(sizes["train"]), split=lambda s: Sized(sizes[s]))
    used = tokens_used(SimpleNamespace(**t), corpus)
device = "cuda" if str(t.get("device", "cpu")).startswith("cuda") else "cpu"
parts = estimate_train_bytes(
    m["vocab_size"], m["emsize"], m["nhid"], m["nlayers"], t["batch_size"], t["bptt"],
    m["embedding"], t["optimizer"], t["eval_batch_size"], device_type=device,
    amp=t.get("amp", False), fix=m.get("fix"), learn_top=m.get("learn_top", 0),
    delta_rank=m.get("delta_rank", 0), model=m.get("model", "lstm"), nhead=m.get("nhead", 2),
    positions=m.get("positions", "sinusoidal"), tokens=used)
with open(sys.argv[3], "w") as f:
    json.dump({"estimate_bytes": parts["total"], "estimate_parts": parts, "tokens_used": used,
               "run_config": {"train": t, "model": m}}, f)
"""
SENTENCES_CODE = """
import sys
from lmfix.data import load_corpus
from lmfix.embeddings.word2vec import write_corpus_file
c = load_corpus(sys.argv[1])
write_corpus_file(c.train.numpy(), c.vocab.words, c.vocab.index["<eos>"], sys.argv[2])
"""
GENSIM_CODE = ("from gensim.models import Word2Vec; Word2Vec(corpus_file={path}, "
               "vector_size={dim}, window=5, min_count=1, sg=0, hs=0, negative=5, sample=1e-3, "
               "epochs=1, workers={workers}, seed=0)")


class BenchError(Exception):
    """A bad argument or an unusable results.json: one ``bench_scale: error:`` line."""


# -- names -------------------------------------------------------------------------------------

def train_args(data: str, s: dict, out: str) -> list[str]:
    """``lmfix train``'s arguments for a training row's settings (also bench_saving.py's)."""
    return ["train", "--data", data, "--embedding", s["embedding"], "--emsize", str(s["d"]),
            "--nhid", str(s["d"]), "--optimizer", s["optimizer"], "--lr", f"{s['lr']:g}",
            "--epochs", "1", "--max-train-tokens", str(s["train_tokens"]),
            "--max-eval-tokens", str(s["eval_tokens"]), "--log-interval", str(s["log_interval"]),
            # a mid-epoch checkpoint would land in a timed interval
            "--checkpoint-every", "0", "--device", s["device"], "--out", out, "--quiet"]


def _short(n: int) -> str:
    """Two significant figures with k/M: 103,227,021 → 100M, 2,000,000 → 2M, 30,000 → 30k."""
    r = float(f"{n:.2g}")
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if r >= size:
            return f"{r / size:g}{unit}"
    return str(int(r))


def corpus_name(vocab: int, tokens: int) -> str:
    """v268k-t100M for 267,735 × 103,227,021: the name the existing WikiText-103-sized corpus
    has (V to the nearest thousand, N to two significant figures)."""
    v = f"{round(vocab / 1000)}k" if vocab >= 1000 else str(vocab)
    return f"v{v}-t{_short(tokens)}"


def entry_key(kind: str, vocab: int | None, tokens: int | None, settings: dict) -> str:
    rest = ",".join(f"{k}={settings[k]}" for k in sorted(settings))
    return "|".join([kind, str(vocab or ""), str(tokens or ""), rest])


# -- the machine -------------------------------------------------------------------------------

def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)  # not an import: torch costs seconds
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    info, avx512 = {}, False
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "cpu family", "model") and key not in info:
                info[key] = value.strip()
            elif key == "flags" and not avx512:
                avx512 = "avx512f" in value.split()
    # a VM's model name can be as bare as "AMD EPYC": family and model tell Zen 3 from Zen 4
    cpu = info.get("model name", "unknown")
    if "cpu family" in info and "model" in info:
        cpu += f" (family {info['cpu family']} model {info['model']})"
    mem = None
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo", encoding="utf-8") as f:
        mem = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
    return {"cpu": cpu, "avx512f": avx512, "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)), "memory_bytes": mem,
            "torch": _version("torch"), "gensim": _version("gensim"),
            "threads": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                    "OPENBLAS_NUM_THREADS") if k in os.environ}}


class StepLog:
    """(time, tokens_seen) of the step records of a run's metrics.jsonl as they appear. A
    record's time is the file's mtime when it is the last line and nothing was appended
    while it was read; records that arrive together share one mtime, so only the last of
    them gets a time."""

    def __init__(self, path: Path):
        self.path, self.offset, self.points = path, 0, []

    def __call__(self) -> None:
        try:
            before = os.stat(self.path)
            if before.st_size <= self.offset:
                return
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(before.st_size - self.offset)
            after = os.stat(self.path)
        except OSError:
            return
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) \
                or not data.endswith(b"\n"):
            return  # being written: the next sample reads it whole
        self.offset = before.st_size
        try:
            last = json.loads(data.splitlines()[-1])
        except ValueError:
            return
        # the mtime is the last line's time: of use only when that line is a step record
        if isinstance(last, dict) and last.get("kind") == "step":
            self.points.append((before.st_mtime_ns / 1e9, int(last["tokens_seen"])))

    def tokens_per_s(self) -> float | None:
        """Training tokens/s after the first logged interval, None without two timed records."""
        if len(self.points) < 2:
            return None
        (t0, n0), (t1, n1) = self.points[0], self.points[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 and n1 > n0 else None


# -- results.json ------------------------------------------------------------------------------

class Results:
    """results.json: {"format", "entries": {key: entry}, "corpora": {name: info}}. Each write
    re-reads the file under a lock and merges, so two benchmarks sharing --out keep both
    sides' figures, and goes through a temporary file renamed over it."""

    def __init__(self, out: Path):
        self.path, self.lock_path = out / "results.json", out / ".results.lock"
        self.data = self._read()

    def _read(self) -> dict:
        if not self.path.exists():
            return {"format": FORMAT, "entries": {}, "corpora": {}}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise BenchError(f"{self.path} is not readable JSON ({e}); move it away to start "
                             "a new one") from None
        if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
            raise BenchError(f"{self.path} is not a bench_scale results file")
        data.setdefault("corpora", {})
        return data

    @property
    def entries(self) -> dict:
        return self.data["entries"]

    def put(self, section: str, key: str, value: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.data = self._read()
            self.data[section][key] = value
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".results.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(self.data, f, indent=1)
                    f.write("\n")
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise


# -- the plan ----------------------------------------------------------------------------------

@dataclass
class Corpus:
    vocab: int
    tokens: int
    dir: Path
    info: dict | None = None  # the probe's sizes, once known
    error: str | None = None  # why it cannot be used

    @property
    def name(self) -> str:
        return self.dir.name


@dataclass
class Task:
    kind: str  # load-cold, load-cached, pmi, word2vec, gensim, baseline, train
    corpus: Corpus | None
    settings: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        c = self.corpus
        return entry_key(self.kind, c and c.vocab, c and c.tokens, self.settings)

    def label(self) -> str:
        what = self.kind + (f" {self.corpus.name}" if self.corpus else "")
        s = self.settings
        if self.kind == "train":
            what += f" d={s['d']} {s['embedding']} {s['optimizer']}"
        return what


def plan(a, corpora: list[Corpus], workers: int) -> list[Task]:
    """Cheap figures first: corpora by size, each with its data parts, then its training runs
    if it is its V's smallest corpus."""
    tasks: list[Task] = []
    if "train" in a.only:
        tasks.append(Task("baseline", None))
    smallest = {}
    for c in corpora:
        smallest[c.vocab] = min(smallest.get(c.vocab, c.tokens), c.tokens)
    for c in sorted(corpora, key=lambda c: (c.vocab * c.tokens, c.tokens)):
        if "load" in a.only:
            tasks += [Task("load-cold", c), Task("load-cached", c)]
        if "pmi" in a.only:
            tasks.append(Task("pmi", c, {"dim": EMB_DIM}))
        if "word2vec" in a.only:
            w2v = {"dim": EMB_DIM, "epochs": 1, "workers": workers}
            tasks += [Task("word2vec", c, dict(w2v)), Task("gensim", c, dict(w2v))]
        if "train" in a.only and c.tokens == smallest[c.vocab]:
            for d in a.dims:
                for emb in a.embeddings:
                    for opt in a.optimizers:
                        tasks.append(Task("train", c, {
                            "d": d, "embedding": emb, "optimizer": opt, "lr": LR[opt],
                            "train_tokens": a.train_tokens, "eval_tokens": EVAL_TOKENS,
                            "log_interval": a.log_interval, "device": a.device}))
    return tasks


# -- the bench ---------------------------------------------------------------------------------

def _default_config(e: dict) -> dict:
    """The part of the config.json an entry's run had that its settings give, for entries
    from before the config was kept; ESTIMATE_CODE fills the rest from lmfix's defaults."""
    s = e["settings"]
    return {"train": {"optimizer": s["optimizer"], "device": s["device"]},
            "model": {"vocab_size": e["vocab"], "emsize": s["d"], "nhid": s["d"]},
            "embedding_spec": s["embedding"]}


class Bench:
    def __init__(self, a, results: Results):
        self.a, self.results = a, results
        self.out: Path = a.out
        self.warm_cache = self.out / "cache"
        self.tmp = self.out / "tmp"
        self.logs = self.out / "logs"
        self.machine = machine()
        self.env = {"OMP_NUM_THREADS": str(a.threads)} if a.threads else {}
        self.python = sys.executable
        self._run_config: dict | None = None  # the last training run's config.json

    def lmfix(self, *args: str) -> list[str]:
        return [self.python, "-m", "lmfix", *args]

    # -- corpora -------------------------------------------------------------------------------

    def ensure_corpus(self, c: Corpus) -> None:
        """Make the corpus if absent, then probe it (which also fills the warm cache): its
        sizes, and a check that a corpus found under the name has the V asked for."""
        if c.info is not None or c.error is not None:
            return
        if not all((c.dir / f"{s}.txt").is_file() for s in ("train", "valid", "test")):
            cmd = [self.python, str(MAKE_CORPUS), "--vocab", str(c.vocab), "--tokens",
                   str(c.tokens), "--out"]
            cmd_tail = ["--eval-tokens", *map(str, self.a.eval_tokens)] \
                if self.a.eval_tokens else []
            # made beside its place and renamed: an interrupted run leaves no half corpus
            work = c.dir.with_name(f".{c.name}.making-{os.getpid()}")
            print(f"making corpus {c.dir} ({c.vocab:,} words, {c.tokens:,} tokens)", flush=True)
            try:
                work.parent.mkdir(parents=True, exist_ok=True)
                t = run_watched(cmd + [str(work)] + cmd_tail, self.env,
                                self._log(f"make-{c.name}"))
                if t.returncode:
                    c.error = f"make_corpus failed: {t.last_stderr}"
                    print(f"  {c.error}", flush=True)
                    return
                work.rename(c.dir)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            print(f"  made in {fmt_s(t.wall_s)}, peak {fmt_bytes(t.peak_bytes)}", flush=True)
        info = self.probe(c)
        if info is None:
            return
        if info["vocab"] != c.vocab:
            c.error = (f"{c.dir} has a vocabulary of {info['vocab']:,}, not {c.vocab:,}; move "
                       "it away or choose another --corpora")
            print(f"  {c.error}", flush=True)
            return
        c.info = info
        self.results.put("corpora", c.name, {"dir": str(c.dir), "vocab": c.vocab,
                                             "tokens": c.tokens, **info})

    def probe(self, c: Corpus) -> dict | None:
        try:
            return self.helper(PROBE_CODE, f"probe-{c.name}", [str(c.dir)], self._warm())
        except BenchError as e:
            c.error = f"cannot load {c.dir}: {e}"
            print(f"  {c.error}", flush=True)
            return None

    def helper(self, code: str, name: str, args: list[str], env: dict | None = None):
        """Run ``code`` (not timed) with ``args`` and the path of a file it writes its JSON
        answer to. lmfix, torch and numpy are imported there and never here: pages of a
        library this process held would count at half their size in the PSS of every process
        measured while it ran."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(dir=self.tmp, prefix=f"{name}-", suffix=".json")
        os.close(fd)
        try:
            t = run_watched([self.python, "-c", code, *args, path], {**self.env, **(env or {})},
                            self._log(name))
            if t.returncode:
                raise BenchError(t.last_stderr or f"exit status {t.returncode}")
            return json.loads(Path(path).read_text())
        finally:
            os.unlink(path)

    def _log(self, name: str) -> Path:
        self.logs.mkdir(parents=True, exist_ok=True)
        safe = "".join(ch if ch.isalnum() or ch in "-_.=" else "_" for ch in name)
        return self.logs / f"{safe}.stderr"

    # -- one measurement -----------------------------------------------------------------------

    def measure(self, task: Task) -> dict:
        """Run the task's command --repeats times (once if it takes over LONG_S), the median."""
        c = task.corpus
        if c is not None:
            self.ensure_corpus(c)
            if c.error:
                return self._entry(task, None, [], error=c.error)
        prepare = getattr(self, f"_prepare_{task.kind.replace('-', '_')}")
        trials: list[dict] = []
        command = None
        with self._scratch() as scratch:
            setup = getattr(self, f"_setup_{task.kind}", None)
            if setup is not None:
                err = setup(task, scratch)
                if err:
                    return self._entry(task, None, [], error=err)
            for i in range(self.a.repeats):
                cmd, env, shown_env, watch, after = prepare(task, scratch, i)
                command = " ".join([*(f"{k}={shlex.quote(v)}" for k, v in shown_env.items()),
                                    shlex.join(cmd)])
                t = run_watched(cmd, {**self.env, **env}, self._log(task.key), watch)
                trial = {"wall_s": t.wall_s, "peak_bytes": t.peak_bytes,
                         "peak_rss_bytes": t.peak_rss_bytes, "memory": t.memory}
                if t.returncode:
                    return self._entry(task, command, trials + [trial],
                                       error=t.last_stderr or f"exit status {t.returncode}",
                                       returncode=t.returncode)
                trial.update(after() if after else {})
                trials.append(trial)
                if t.wall_s > LONG_S:
                    break
        entry = self._entry(task, command, trials)
        finish = getattr(self, f"_finish_{task.kind}", None)
        if finish is not None:
            entry.update(finish(task))
        return entry

    def _entry(self, task: Task, command: str | None, trials: list[dict],
               error: str | None = None, returncode: int | None = None) -> dict:
        c = task.corpus
        e = {"kind": task.kind, "vocab": c and c.vocab, "tokens": c and c.tokens,
             "corpus": c and str(c.dir), "settings": task.settings, "command": command,
             "date": _dt.datetime.now().isoformat(timespec="seconds"), "machine": self.machine,
             "ok": error is None, "trials": trials}
        if error is not None:
            e.update(error=error, returncode=returncode)
            return e
        e["wall_s"] = statistics.median(t["wall_s"] for t in trials)
        e["peak_bytes"] = int(statistics.median(t["peak_bytes"] for t in trials))
        e["peak_rss_bytes"] = int(statistics.median(t["peak_rss_bytes"] for t in trials))
        e["memory"] = "/".join(sorted({t["memory"] for t in trials}))
        for k in ("tokens_per_s", "tokens_per_s_run"):
            vals = [t[k] for t in trials if t.get(k) is not None]
            if vals:
                e[k] = statistics.median(vals)
        if trials and "tokens_per_s_from" in trials[-1]:
            e["tokens_per_s_from"] = trials[-1]["tokens_per_s_from"]
        return e

    @contextlib.contextmanager
    def _scratch(self):
        self.tmp.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix="m-", dir=self.tmp))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    # Each _prepare_KIND returns (command, environment, environment as recorded, watch, after):
    # after() runs once the command succeeded and returns figures to add to the trial.

    def _warm(self) -> dict:
        return {"LMFIX_CACHE": str(self.warm_cache)}

    def _prepare_baseline(self, task, scratch, i):
        return [self.python, "-c", BASELINE_CODE], {}, {}, None, None

    def _load(self, task) -> list[str]:
        return [self.python, "-c", LOAD_CODE.format(dir=json.dumps(str(task.corpus.dir)))]

    def _prepare_load_cold(self, task, scratch, i):
        fresh = scratch / f"cold-{i}"  # a new empty cache each repeat
        fresh.mkdir()

        def after() -> dict:
            shutil.rmtree(fresh, ignore_errors=True)  # a large corpus's ids: gigabytes
            return {}

        return (self._load(task), {"LMFIX_CACHE": str(fresh)},
                {"LMFIX_CACHE": "<fresh empty directory>"}, None, after)

    def _prepare_load_cached(self, task, scratch, i):
        return self._load(task), self._warm(), self._warm(), None, None

    def _prepare_pmi(self, task, scratch, i):
        return (self.lmfix("build-embeddings", "--method", "pmi", "--dim", str(EMB_DIM),
                           "--data", str(task.corpus.dir), "--out", str(scratch / f"pmi-{i}.bin"),
                           "--quiet"), self._warm(), self._warm(), None, None)

    def _prepare_word2vec(self, task, scratch, i):
        return (self.lmfix("build-embeddings", "--method", "word2vec", "--dim", str(EMB_DIM),
                           "--epochs", "1", "--data", str(task.corpus.dir), "--out",
                           str(scratch / f"w2v-{i}.bin"), "--quiet"),
                self._warm(), self._warm(), None, None)

    def _setup_gensim(self, task, scratch) -> str | None:
        """The sentences as lmfix writes them for gensim, from the cached corpus (not timed)."""
        path = scratch / "sentences.txt"
        t = run_watched([self.python, "-c", SENTENCES_CODE, str(task.corpus.dir), str(path)],
                        {**self.env, **self._warm()}, self._log(f"sentences-{task.corpus.name}"))
        return f"writing the corpus file failed: {t.last_stderr}" if t.returncode else None

    def _prepare_gensim(self, task, scratch, i):
        code = GENSIM_CODE.format(path=json.dumps(str(scratch / "sentences.txt")), dim=EMB_DIM,
                                  workers=task.settings["workers"])
        return [self.python, "-c", code], {}, {}, None, None

    def _prepare_train(self, task, scratch, i):
        s, c = task.settings, task.corpus
        run = scratch / f"run-{i}"
        cmd = self.lmfix(*train_args(str(c.dir), s, str(run)))
        log = StepLog(run / "metrics.jsonl")

        def after() -> dict:
            fig = {"tokens_per_s": log.tokens_per_s(),
                   "tokens_per_s_from": "log, first interval left out"}
            with contextlib.suppress(OSError, ValueError, KeyError):
                fig["tokens_per_s_run"] = json.loads((run / "summary.json").read_text())[
                    "tokens_per_s"]
            if fig["tokens_per_s"] is None:
                fig["tokens_per_s"] = fig.get("tokens_per_s_run")
                fig["tokens_per_s_from"] = "the run's summary (whole epoch)"
            with contextlib.suppress(OSError, ValueError):
                self._run_config = json.loads((run / "config.json").read_text())
            shutil.rmtree(run, ignore_errors=True)  # checkpoints of a large V are gigabytes
            return fig

        self._run_config = None
        return cmd, self._warm(), self._warm(), log, after

    def _finish_train(self, task) -> dict:
        """The estimate for the settings the run recorded in its config.json."""
        if self._run_config is None:
            return {"estimate_error": "the run left no config.json"}
        with self._scratch() as scratch:
            (scratch / "config.json").write_text(json.dumps(self._run_config))
            (scratch / "sizes.json").write_text(json.dumps(task.corpus.info))
            try:
                fig = self.helper(ESTIMATE_CODE, "estimate", [str(scratch / "config.json"),
                                                              str(scratch / "sizes.json")])
            except BenchError as e:
                return {"estimate_error": str(e)}
        # kept so that --re-estimate can apply a changed lmfix.memory without training again
        return {**fig, "run_config": self._run_config}

    def re_estimate(self) -> int:
        """Each train entry's estimate again, from the config it recorded (or, for an entry
        from before configs were kept, lmfix's defaults with its settings), with the lmfix
        installed now; the measurements are not touched. Returns how many changed."""
        changed = 0
        for key, e in list(self.results.entries.items()):
            if e.get("kind") != "train" or not e.get("ok"):
                continue
            config = e.get("run_config") or _default_config(e)
            with self._scratch() as scratch:
                (scratch / "config.json").write_text(json.dumps(config))
                (scratch / "sizes.json").write_text(json.dumps({"used": e["tokens_used"]}))
                fig = self.helper(ESTIMATE_CODE, "estimate", [str(scratch / "config.json"),
                                                              str(scratch / "sizes.json")])
            if fig["estimate_bytes"] != e.get("estimate_bytes"):
                changed += 1
            self.results.put("entries", key, {**e, **fig})  # fig's run_config: completed
        return changed


# -- the command -------------------------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"bench_scale: error: {message}\n")


def _ints(low: int):
    def parse(text: str) -> list[int]:
        try:
            vals = [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: comma-separated integers") from None
        if not vals or min(vals) < low:
            raise argparse.ArgumentTypeError(f"{text!r}: integers ≥ {low:,}")
        return sorted(set(vals))
    return parse


def _choices(allowed: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        vals = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in vals if x not in allowed]
        if bad or not vals:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {','.join(allowed)}")
        return [x for x in allowed if x in vals]
    return parse


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: at least 1")
    return n


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = Parser(prog="bench_scale", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocabs", type=_ints(4), default=[33278, 100000, 267735],
                    help="vocabulary sizes, comma-separated (default 33278,100000,267735)")
    ap.add_argument("--tokens", type=_ints(1), default=[2000000, 20000000, 103227021],
                    help="training tokens of the corpora (default 2000000,20000000,103227021)")
    ap.add_argument("--corpora", type=Path, default=Path("/work/synth"),
                    help="where the corpora are (made if absent; default /work/synth)")
    ap.add_argument("--out", type=Path, default=Path("/work/synth/bench-scale"),
                    help="results.json, logs and the lmfix cache (default /work/synth/bench-scale)")
    ap.add_argument("--only", type=_choices(PARTS), default=list(PARTS),
                    help=f"parts to measure (default {','.join(PARTS)})")
    ap.add_argument("--repeats", type=_positive, default=3,
                    help=f"runs of a figure under {LONG_S:.0f} s, the median reported (default 3)")
    ap.add_argument("--force", action="store_true", help="measure again what results.json has")
    ap.add_argument("--report", action="store_true", help="only render results.json")
    ap.add_argument("--re-estimate", action="store_true",
                    help="recompute the training estimates with the lmfix installed now (after "
                    "a change to lmfix.memory), then render; nothing is measured")
    ap.add_argument("--table", type=Path, help="also write the Markdown tables here")
    ap.add_argument("--plot", type=Path, help="the plot's PNG (default OUT/scale.png)")
    g = ap.add_argument_group("training")
    g.add_argument("--dims", type=_ints(1), default=[200, 512],
                   help="d = emsize = nhid (default 200,512)")
    g.add_argument("--embeddings", type=_choices(EMBEDDINGS), default=list(EMBEDDINGS),
                   help=f"default {','.join(EMBEDDINGS)}")
    g.add_argument("--optimizers", type=_choices(OPTIMIZERS), default=list(OPTIMIZERS),
                   help=f"default {','.join(OPTIMIZERS)}")
    g.add_argument("--train-tokens", type=_positive, default=25_200,
                   help="--max-train-tokens of each run (default 25200: 36 steps of 20 × 35)")
    g.add_argument("--log-interval", type=_positive, default=4,
                   help="steps between the run's log records (default 4)")
    g.add_argument("--device", default="cpu",
                   help="lmfix train --device (default cpu: the estimate is the host's)")
    g = ap.add_argument_group("environment")
    g.add_argument("--threads", type=_positive,
                   help="OMP_NUM_THREADS for every command (default: inherited)")
    g.add_argument("--eval-tokens", type=_positive, nargs=2, metavar=("VALID", "TEST"),
                   help="validation and test sizes of corpora made here (default: "
                        "make_corpus.py's, WikiText's)")
    a = ap.parse_args(argv)
    if a.table and a.table.is_dir():
        ap.error(f"--table {a.table} is a directory")
    return a


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    try:
        a.out.mkdir(parents=True, exist_ok=True)
        results = Results(a.out)
    except OSError as e:
        print(f"bench_scale: error: cannot write to {a.out}: {e.strerror or e}", file=sys.stderr)
        return 2
    except BenchError as e:
        print(f"bench_scale: error: {e}", file=sys.stderr)
        return 2
    if a.report:
        report(a, results.data)
        return 0
    if a.re_estimate:
        try:
            changed = Bench(a, results).re_estimate()
        except BenchError as e:
            print(f"bench_scale: error: {e}", file=sys.stderr)
            return 2
        print(f"bench_scale: {changed} estimates changed", flush=True)
        report(a, results.data)
        return 0
    signal.signal(signal.SIGTERM, _interrupt)  # a kill stops like Ctrl-C: results stay valid
    bench = Bench(a, results)
    try:
        workers = bench.helper(WORKERS_CODE, "workers", []) if "word2vec" in a.only else None
    except BenchError as e:
        print(f"bench_scale: error: cannot import lmfix: {e}", file=sys.stderr)
        return 2
    corpora = [Corpus(V, N, a.corpora / corpus_name(V, N)) for V in a.vocabs for N in a.tokens]
    tasks = plan(a, corpora, workers)
    print(f"bench_scale: {len(tasks)} measurements into {results.path}; "
          f"{machine_line(bench.machine)}", flush=True)
    done = failed = skipped = 0
    try:
        for i, task in enumerate(tasks, 1):
            head = f"[{i}/{len(tasks)}]"
            old = results.entries.get(task.key)
            if old is not None and old.get("ok") and not a.force:
                skipped += 1
                print(f"{head} skip {task.label()}: in results.json ({fmt_s(old['wall_s'])}, "
                      f"{fmt_bytes(old['peak_bytes'])})", flush=True)
                continue
            entry = bench.measure(task)
            results.put("entries", task.key, entry)
            if entry["ok"]:
                done += 1
                n = len(entry["trials"])
                extra = f", {entry['tokens_per_s']:,.0f} tokens/s" \
                    if entry.get("tokens_per_s") else ""
                if entry.get("estimate_bytes"):
                    extra += f", estimate {fmt_bytes(entry['estimate_bytes'])}"
                if entry.get("estimate_error"):
                    extra += f", no estimate: {entry['estimate_error']}"
                print(f"{head} {task.label()}: {fmt_s(entry['wall_s'])}, peak "
                      f"{fmt_bytes(entry['peak_bytes'])}{extra} "
                      f"({'median of ' + str(n) if n > 1 else 'once'})", flush=True)
            else:
                failed += 1
                print(f"{head} FAILED {task.label()}: {entry['error']}", flush=True)
    except KeyboardInterrupt:
        print(f"\nbench_scale: interrupted; {results.path} keeps every finished measurement "
              f"({done} new); run the same command again to continue", file=sys.stderr)
        return 130
    print(f"bench_scale: {done} measured, {skipped} skipped, {failed} failed\n", flush=True)
    report(a, results.data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
