"""``lmfix run --jobs N``: train N variants at once, each in a worker process of its own.

The parent (``lmfix run``) builds the embeddings first, then hands each variant to a worker,
``python -m lmfix.run SPEC`` (:func:`worker_main`), which does exactly what ``--jobs 1`` does
for it (``lmfix.run._train_variant``: resume an unfinished run, else train it) into the
variant's own run directory. So the run directories, and the report made from
them, are those of ``--jobs 1``; what a worker prints goes to ``OUT/logs/NAME.log``, and the
parent prints one line when a variant starts and one when it ends (with its perplexities).

Processes, not threads or ``multiprocessing``: each worker is a fresh interpreter, so its
thread count can be fixed before torch loads, a crash (even a segfault or an out-of-memory
kill) takes only that variant down, and a signal reaches it the way it reaches ``lmfix train``.

Threads
    On a CPU the cores are divided: each of the k = min(N, variants to train) workers gets
    max(1, cores // k) threads (``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` in its environment and
    ``torch.set_num_threads``), so N jobs never oversubscribe the machine.
GPUs
    With ``--device auto`` or ``cuda`` and CUDA available, worker slot i gets visible GPU
    i mod (number of GPUs) through ``CUDA_VISIBLE_DEVICES`` (several workers may share one).
    The run's config keeps the device as given, so a run started with one ``--jobs`` resumes
    under another.
Signals
    Workers run in their own session, so a Ctrl-C at the terminal reaches the parent only; the
    parent forwards SIGINT/SIGTERM to every worker once, whose training loop checkpoints and
    exits, waits for them (a second signal, or 120 s, kills them), then raises
    :class:`~lmfix.errors.Interrupted`: ``lmfix run`` ends with its one line and 130/143, and a
    rerun resumes every unfinished variant. A worker whose parent dies stops the same way.
Failures
    A variant that fails is recorded in its ``status.json`` as ``failed`` with the error (by
    training itself, by the worker for errors outside training, or by the parent for a worker
    that died), the others go on, and :class:`VariantsFailed` is raised at the end: ``lmfix run``
    writes the report (which lists it as not complete) and exits 2 naming it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

from . import signals
from .errors import Interrupted, LmfixError, first_line
from .rundir import LAST, RunDir

STOP_TIMEOUT_S = 120.0  # how long stopped workers get to checkpoint before they are killed
POLL_S = 0.2


class VariantsFailed(LmfixError):
    """Some variants of a parallel run did not finish; ``run_dirs`` are all of them, in order,
    so the caller can still write the report."""

    def __init__(self, run_dirs: list[Path], failed: dict[str, str], out: Path):
        self.run_dirs, self.failed = list(run_dirs), dict(failed)
        what = "; ".join(f"{name} ({_short(err)})" for name, err in failed.items())
        super().__init__(f"{len(failed)} of {len(run_dirs)} variants did not finish: {what}. "
                         f"The report lists them; worker logs are in {Path(out) / 'logs'}")


def _short(text: str, limit: int = 160) -> str:
    line = first_line(Exception(text)) if text else "no error recorded"
    return line if len(line) <= limit else line[: limit - 1] + "…"


def cpu_cores() -> int:
    """Cores this process may run on (its affinity mask, else os.cpu_count())."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def threads_per_job(jobs: int, cores: int | None = None) -> int:
    return max(1, (cores or cpu_cores()) // max(1, jobs))


def cuda_devices(device: str) -> list[str]:
    """The visible GPUs to spread workers over (ids for CUDA_VISIBLE_DEVICES), or [] when the
    run is not on CUDA or names one device itself (``cuda:1``: every worker uses it)."""
    if device not in ("auto", "cuda"):
        return []
    import torch
    if not torch.cuda.is_available():
        return []
    n = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else []
    return ids[:n] if ids else [str(i) for i in range(n)]


@dataclass
class _Job:
    cfg: object  # TrainConfig
    action: str  # "fresh" | "resume"
    slot: int = 0
    where: str = ""
    proc: subprocess.Popen | None = None
    started: float = 0.0  # perf_counter
    started_wall: float = 0.0  # time.time(), to tell a status written by this worker
    killed: bool = False

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)

    @property
    def name(self) -> str:
        return self.out.name


def train_parallel(planned: list, out: Path, force: bool, jobs: int,
                   worker: str = "lmfix.run") -> dict[str, str]:
    """Train the variants ``planned``, (TrainConfig, "fresh" | "resume") pairs, in up to
    ``jobs`` worker processes, ``python -m WORKER SPEC`` (a module that calls
    :func:`worker_main`).

    Returns {variant name: error} for those that did not finish (empty if all did); raises
    :class:`Interrupted` once the workers have stopped after a SIGINT/SIGTERM.
    """
    todo = [_Job(cfg, action) for cfg, action in planned]
    if not todo:
        return {}
    n = min(jobs, len(todo))
    threads = threads_per_job(n)
    gpus = cuda_devices(todo[0].cfg.device)
    logs = Path(out) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    on = (f"over {len(gpus)} GPU(s), " if gpus else "") + \
        f"{threads} CPU thread{'s' if threads > 1 else ''} each"
    print(f"training {len(todo)} variant(s), {n} at a time ({on}); worker logs in {logs}",
          flush=True)
    queue, running, failed = deque(todo), {}, {}
    with signals.Flag() as sig:
        try:
            while queue or running:
                if sig.got:
                    _stop_all(running, sig)
                    raise Interrupted(f"interrupted by {sig.got[0]}", sig.got[0])
                for slot in range(n):
                    if slot not in running and queue:
                        job = queue.popleft()
                        _start(job, slot, threads, gpus, logs, force, worker)
                        running[slot] = job
                for slot, job in list(running.items()):
                    rc = job.proc.poll()
                    if rc is not None:
                        del running[slot]
                        _ended(job, rc, failed, logs)
                time.sleep(POLL_S)
        finally:
            if running:  # an error in this loop itself: leave no worker behind
                _stop_all(running, sig, quiet=True)
    return failed


def _start(job: _Job, slot: int, threads: int, gpus: list[str], logs: Path, force: bool,
           worker: str = "lmfix.run") -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
        job.where = f"cuda:{slot % len(gpus)}"
    elif job.cfg.device.startswith("cuda"):  # one named device (cuda:1): every worker on it
        job.where = job.cfg.device
    else:
        job.where = f"{threads} CPU thread{'s' if threads > 1 else ''}"
    root = str(Path(__file__).resolve().parents[1])  # a source checkout: keep it importable
    if "site-packages" not in root:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    spec = {"cfg": asdict(job.cfg), "force": force, "threads": threads, "parent": os.getpid()}
    log = logs / f"{job.name}.log"
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"\n== {time.strftime('%Y-%m-%d %H:%M:%S')} {job.name}: {job.action} "
                f"on {job.where}\n")
        f.flush()
        job.proc = subprocess.Popen([sys.executable, "-m", worker, json.dumps(spec)],
                                    stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)
    job.slot, job.started, job.started_wall = slot, time.perf_counter(), time.time()
    what = "resuming from its last checkpoint" if job.action == "resume" else \
        f"training ({job.cfg.embedding})"
    print(f"{job.name}: {what} on {job.where}", flush=True)


def _ended(job: _Job, rc: int, failed: dict[str, str], logs: Path) -> None:
    """Report a worker that exited, and record it failed if it did not finish."""
    took = _took(time.perf_counter() - job.started)
    out = RunDir(job.out)
    if rc == 0 and out.finished:
        s = out.read_summary()
        # a resumed worker's own time would understate the run's
        if job.action == "resume" and s.get("wall_s"):
            took = f"{took} after resuming ({_took(s['wall_s'])} of training in all)"
        print(f"{job.name}: finished in {took} | valid ppl {s['val_ppl']:.2f} | "
              f"test ppl {s['test_ppl']:.2f}", flush=True)
        return
    log = logs / f"{job.name}.log"
    status = out.status()
    # a status left by an earlier attempt says nothing about this one
    if status.written_since(job.started_wall) and status.state in ("failed", "interrupted") \
            and status.error:
        err = status.error  # training, or the worker, recorded why
    else:
        err = (f"worker killed by {signal.Signals(-rc).name}" if rc < 0 and -rc in
               signal.valid_signals() else f"worker exited with status {rc}")
        err += f"; see {log}"
        out.mark_failed(err)
    failed[job.name] = err
    print(f"{job.name}: FAILED after {took}: {_short(err)} (log: {log})", flush=True)


def _stop_all(running: dict, sig: signals.Flag, quiet: bool = False) -> None:
    """Forward the signal to every worker, wait for their checkpoints, kill laggards."""
    name = sig.got[0] if sig.got else "SIGTERM"
    signum, asked = signal.Signals[name], len(sig.got)
    for job in running.values():
        with contextlib.suppress(ProcessLookupError):  # (it just ended)
            job.proc.send_signal(signum)
    deadline = time.perf_counter() + STOP_TIMEOUT_S
    while any(j.proc.poll() is None for j in running.values()):
        if len(sig.got) > max(asked, 1) or time.perf_counter() > deadline:
            for job in running.values():
                if job.proc.poll() is None and not job.killed:
                    job.killed = True
                    with contextlib.suppress(ProcessLookupError):
                        job.proc.kill()
                    if not quiet:
                        print(f"{job.name}: killed (it had not stopped); it resumes from its "
                              "last checkpoint", flush=True)
        time.sleep(POLL_S)
    for job in running.values():
        job.proc.wait()
        if quiet:
            continue
        out = RunDir(job.out)
        if out.finished:
            print(f"{job.name}: finished", flush=True)
        else:
            has = "checkpoint saved" if (out / LAST).is_file() else "no checkpoint yet"
            print(f"{job.name}: stopped by {name} ({out.status().state or 'not started'}, "
                  f"{has})", flush=True)
    running.clear()


def _took(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s} s" if m else f"{seconds:.1f} s"


# ---------------------------------------------------------------------------------------------
# The worker: python -m lmfix.run SPEC (started by train_parallel, not meant for users)


def _watch_parent(parent: int) -> None:
    """If the parent dies (SIGKILL, a closed terminal), stop like a SIGTERM would."""
    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=watch, daemon=True).start()


def _record_failure(out: Path, error: str, since: float) -> None:
    """Mark the run failed, unless training already recorded this failure."""
    run = RunDir(out)
    status = run.status()
    if not (status.state == "failed" and status.written_since(since)):
        run.mark_failed(error)


def worker_main(argv: list[str], train_variant) -> int:
    """One variant: ``train_variant(cfg, corpus=None, force, progress=False)`` with the
    threads, signals and failure records of a worker; returns the exit status."""
    since = time.time()
    spec = json.loads(argv[0])
    out = Path(spec["cfg"]["out"])
    signals.install()  # as the CLI's: training installs its own flag while it runs
    _watch_parent(spec["parent"])
    try:
        import torch
        torch.set_num_threads(spec["threads"])
        from .config import TrainConfig
        train_variant(TrainConfig(**spec["cfg"]), None, spec["force"], progress=False)
    except Interrupted as e:
        signals.ignore()
        print(f"stopped: {e}", flush=True)
        return e.exit_status
    except KeyboardInterrupt:
        signals.ignore()
        print("stopped by SIGINT", flush=True)
        return 130
    except LmfixError as e:
        print(f"lmfix: error: {e}", flush=True)
        _record_failure(out, f"{type(e).__name__}: {first_line(e)}", since)
        return 2
    except BaseException as e:  # a bug: keep its traceback in the log
        traceback.print_exc()
        _record_failure(out, f"{type(e).__name__}: {first_line(e)}", since)
        return 1
    s = RunDir(out).read_summary()
    print(f"{s['name']}: valid ppl {s['val_ppl']:.2f} | test ppl {s['test_ppl']:.2f} | "
          f"{s['tokens_per_s']:.0f} tokens/s", flush=True)
    return 0

