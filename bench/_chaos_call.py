"""The chaos benchmark's job as a call (kind ``call``, run in a worker's warm interpreter):
the same evidence as its command job (``chaos.JOB_SCRIPT``), written the same way."""

from __future__ import annotations

import os
import time


def run(tok: str, secs: float, runs: str) -> str:
    att = os.environ.get("CORRAL_ATTEMPT", "?")
    open(os.path.join(runs, f"{tok}.{att}.{os.getpid()}.pid"), "w").close()
    time.sleep(secs)
    print(tok, "attempt", att, flush=True)
    with open(os.path.join(runs, tok + ".done"), "a") as fh:
        fh.write(att + "\n")
    return tok
