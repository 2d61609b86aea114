"""Runs many `mpsim quantize --file F --json` jobs concurrently for the cross-check tests.

mpsim writes each job's JSON to a file (so it never waits for Python); the jobs run on a small
thread pool while the tests compare the results already in.  Shared by test_crosscheck.py and
test_block_crosscheck.py; each parses the JSON its own way.
"""

from __future__ import annotations

import errno
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Hashable

# Starting processes from several threads at once has failed here with "OSError: [Errno 14]
# Bad address" from the child's exec (an intermittent fault of the sandbox's fork/exec under
# threads, seen once in a CI run, never a fault of mpsim). Processes are therefore started one
# at a time (they still run concurrently), and a start that fails with EFAULT is retried.
_SPAWN_LOCK = threading.Lock()


def spawn_and_wait(cmd, **kwargs) -> subprocess.CompletedProcess:
    for attempt in range(3):
        try:
            with _SPAWN_LOCK:
                proc = subprocess.Popen(cmd, **kwargs)
            break
        except OSError as e:
            if e.errno != errno.EFAULT or attempt == 2:
                raise
            time.sleep(0.2)
    out, err = proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


class QuantizeJobs:
    """`mpsim quantize FMT --file INPUT --json --carrier C` jobs, keyed by the caller."""

    def __init__(self, mpsim_bin: Path, parse: Callable[[bytes], object]):
        self.mpsim_bin = mpsim_bin
        self.parse = parse
        self.pool = ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2)))
        self.futures: dict = {}

    def _job(self, fmt: str, inp: Path, carrier: str):
        out = inp.with_name(f"{inp.stem}-{fmt.replace(':', '_').replace('@', '_')}-{carrier}.json")
        cmd = [str(self.mpsim_bin), "quantize", fmt, "--file", str(inp), "--json", "--carrier", carrier]
        with open(out, "wb") as f:
            r = spawn_and_wait(cmd, stdout=f, stderr=subprocess.PIPE)
        if r.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.decode()}")
        text = out.read_bytes()
        out.unlink()
        return self.parse(text)

    def submit(self, key: Hashable, fmt: str, inp: Path, carrier: str) -> None:
        self.futures[key] = self.pool.submit(self._job, fmt, inp, carrier)

    def result(self, key: Hashable):
        return self.futures[key].result()

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
