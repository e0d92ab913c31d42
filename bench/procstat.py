"""CPU time of processes, from ``/proc/<pid>/stat`` (or Redis's own INFO
when the server is not ours), and py-spy profiles of our services."""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import redis

_TICKS = os.sysconf("SC_CLK_TCK")
# Where installed and standard-library modules live, dropped from frame names.
_LIBRARY = re.compile(r"^.*/(?:site-packages|python3\.\d+)/")


def cpu_seconds(pid: int, children: bool = False) -> float:
    """utime + stime of ``pid`` (all its threads), plus its reaped children's
    if ``children``; in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) is parenthesised and may hold spaces.
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): utime, stime, cutime, cstime are 14-17.
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    ticks = utime + stime + (cutime + cstime if children else 0)
    return ticks / _TICKS


def family_cpu_seconds(pid: int) -> float:
    """CPU of ``pid`` and its children, the live ones and those it reaped:
    a PostgreSQL postmaster and its backends. (Not its process group: each
    backend calls setsid() and leads a group of its own.)"""
    total = cpu_seconds(pid, children=True)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile: reaped, so counted in the parent's
        fields = text[text.rindex(")") + 2 :].split()
        # fields[1] is field 4 (ppid).
        if int(fields[1]) == pid:
            total += sum(int(f) for f in fields[11:13]) / _TICKS
    return total


def redis_cpu_seconds(client: redis.Redis, pid: int | None) -> float:
    """CPU of the redis-server: from /proc if we know its pid, else INFO."""
    if pid is not None:
        return cpu_seconds(pid, children=True)
    info = client.info("cpu")
    return float(
        sum(
            info[k]
            for k in (
                "used_cpu_user",
                "used_cpu_sys",
                "used_cpu_user_children",
                "used_cpu_sys_children",
            )
        )
    )


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


class Profiler:
    """``py-spy record`` of one process, in collapsed-stack form, from
    construction until :meth:`finish`."""

    def __init__(self, pid: int, output: Path, rate: int = 250) -> None:
        binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.output = output
        self.process = subprocess.Popen(
            [binary, "record", "--pid", str(pid), "--rate", str(rate)]
            + ["--format", "raw", "--nonblocking", "--output", str(output)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def wait_started(self, timeout: float = 10.0) -> None:
        """Block until py-spy says it is sampling; raise if it does not."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        seen = b""
        deadline = time.monotonic() + timeout
        while b"Sampling process" not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or self.process.poll() is not None:
                raise RuntimeError(f"py-spy did not start: {seen.decode(errors='replace')}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                seen += os.read(fd, 4096)

    def finish(self, timeout: float = 30.0) -> None:
        """Stop sampling and write the profile."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def top_frames(collapsed: Path, limit: int = 15) -> list[tuple[float, float, str]]:
    """(self %, inclusive %, function) for the functions with the most
    samples in a py-spy raw profile, by self time."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_function(f) for f in stack.split(";")]
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    if total == 0:
        return []
    return [
        (100 * n / total, 100 * inclusive[name] / total, name) for name, n in own.most_common(limit)
    ]


def _function(frame: str) -> str:
    # "handle_batch (processor/dispatch.py:97)" -> "handle_batch (processor/dispatch.py)"
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    path = _LIBRARY.sub("", path).replace(str(Path.cwd()) + "/", "")
    return f"{name} ({path})"
