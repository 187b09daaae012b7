"""Loaded at the start of every Python process whose PYTHONPATH has this
directory (bench/ingest_stages.py gives it to the agent only): in the agent,
with BENCH_STAGES_OUT set, the stage timer (bench/stage_timer.py)."""

import os
import sys
from pathlib import Path

_out = os.environ.get("BENCH_STAGES_OUT")
if _out and os.path.basename(sys.argv[0]) == "audit-agent":
    from bench import stage_timer

    stage_timer.install(Path(_out))
