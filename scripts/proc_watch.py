"""One whole process, watched: its wall time and the peak memory of its process tree.

scripts/bench_scale.py's measuring instrument (kept apart so that it reads in one sitting).
Every 50 ms at first, slowing to every POLL_MAX_S over a long run, the memory of the process
and all its descendants is summed: PSS from /proc/PID/smaps_rollup where it can be read (the
pages worker processes share with their parent are counted once), RSS from /proc/PID/status
otherwise. The largest sum is the peak. Imports neither torch nor numpy, so its own pages are
not part of what it measures.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

POLL_S = 0.05  # the memory poll's first interval; it grows to POLL_MAX_S over a long run
POLL_MAX_S = 0.5
GRACE_S = 10.0  # after a Ctrl-C, how long a child may take to stop before it is killed


_CHILDREN_FILES = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


def _children(pid: int) -> list[int]:
    """A process's children: each of its threads lists those it started."""
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        with contextlib.suppress(OSError, ValueError):
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                out += [int(x) for x in f.read().split()]
    return out


def _parents() -> dict[int, list[int]]:
    """pid → children from every /proc/PID/stat (kernels without the children files)."""
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(f"/proc/{name}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])  # comm may hold spaces
                kids.setdefault(ppid, []).append(int(name))
    return kids


def process_tree(root: int) -> list[int]:
    kids = None if _CHILDREN_FILES else _parents()
    pids, i = [root], 0
    while i < len(pids):
        pids += _children(pids[i]) if kids is None else kids.get(pids[i], [])
        i += 1
    return pids


def process_memory(pid: int) -> tuple[int, int, str] | None:
    """(PSS or RSS, RSS, "pss" | "rss") of one process in bytes, None once it is gone."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            found = {}
            for line in f:
                if line.startswith((b"Rss:", b"Pss:")):
                    found[line[:3]] = int(line.split()[1]) * 1024
            if b"Pss" in found and b"Rss" in found:
                return found[b"Pss"], found[b"Rss"], "pss"
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                    return rss, rss, "rss"
    return None


@dataclass
class Trial:
    wall_s: float
    peak_bytes: int  # PSS where readable
    peak_rss_bytes: int  # beside it: PSS shares pages with every process on the machine
    returncode: int
    memory: str  # pss, rss or mixed: what the peak sums
    last_stderr: str = ""


def _stop(proc: subprocess.Popen) -> None:
    """Ask the child's process group to stop as Ctrl-C would, then kill what is left."""
    for sig, wait in ((signal.SIGINT, GRACE_S), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def last_line(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    # tqdm redraws with \r: the last line is what is left after the last one
    lines = [ln.rsplit("\r", 1)[-1].strip() for ln in tail.splitlines()]
    return next((ln for ln in reversed(lines) if ln), "")


def run_watched(cmd: list[str], env: dict | None = None, stderr_path: Path | None = None,
                watch=None) -> Trial:
    """Run ``cmd`` to its end, sampling the memory of its process tree; ``watch()`` is
    called at every sample (the training log is read there)."""
    env = {**os.environ, **(env or {})}
    err = open(stderr_path, "wb") if stderr_path else subprocess.DEVNULL
    try:
        t0 = time.perf_counter()
        # its own process group: a Ctrl-C here reaches it through _stop, and the whole tree
        # can be stopped at once
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err, env=env, start_new_session=True)
        peak = peak_rss = 0
        kinds = set()
        try:
            while True:
                total = total_rss = 0
                for pid in process_tree(proc.pid):
                    m = process_memory(pid)
                    if m is not None:
                        total, total_rss = total + m[0], total_rss + m[1]
                        kinds.add(m[2])
                peak, peak_rss = max(peak, total), max(peak_rss, total_rss)
                if watch is not None:
                    watch()
                try:
                    # a long figure's peak lasts long: a slower poll finds it and takes less
                    # of the 2 cores (at 50 ms, reading a 5 GB process's smaps_rollup took
                    # a quarter of one)
                    proc.wait(min(POLL_MAX_S, POLL_S + 0.01 * (time.perf_counter() - t0)))
                    break
                except subprocess.TimeoutExpired:
                    pass
        except BaseException:
            _stop(proc)
            raise
        wall = time.perf_counter() - t0
        if watch is not None:
            watch()
    finally:
        if stderr_path:
            err.close()
    memory = "mixed" if len(kinds) > 1 else next(iter(kinds), "none")
    last = last_line(stderr_path) if stderr_path and proc.returncode else ""
    if stderr_path and not proc.returncode and stderr_path.stat().st_size == 0:
        stderr_path.unlink()  # keep the logs that say something
    return Trial(wall, peak, peak_rss, proc.returncode, memory, last)


# -- the training log --------------------------------------------------------------------------
