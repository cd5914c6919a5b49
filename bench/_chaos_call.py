"""The chaos benchmark's job: a call (kind ``call``, in a worker's warm interpreter), or the
same as a process of its own (``python _chaos_call.py TOKEN SECONDS RUNS_DIR``). It records
its pid, sleeps, prints its token, then notes that this attempt ran to the end: the note is
the evidence behind an accepted result."""

from __future__ import annotations

import os
import sys
import time


def run(tok: str, secs: float, runs: str) -> str:
    att = os.environ.get("CORRAL_ATTEMPT", "?")
    open(os.path.join(runs, f"{tok}.{att}.{os.getpid()}.pid"), "w").close()
    time.sleep(secs)
    print(tok, "attempt", att, flush=True)
    with open(os.path.join(runs, tok + ".done"), "a") as fh:
        fh.write(att + "\n")
    return tok


if __name__ == "__main__":
    run(sys.argv[1], float(sys.argv[2]), sys.argv[3])
