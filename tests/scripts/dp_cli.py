"""``python -m calibtune`` with a per-process record of what this process scored (see test_distributed.py).

Usage: dp_cli.py RECORD_DIR COMMANDS_JSON
COMMANDS_JSON holds a list of argument lists, each run in turn as ``calibtune ARGS...`` in this process
(so one ``accelerate launch`` runs several commands). Each process appends to RECORD_DIR/rank{R}.jsonl
one line per ``calibtune.scoring.score`` call it made (the prompts it scored) and one per shard it was
given (the ``calibtune.distributed`` debug log).
"""

from __future__ import annotations

import json
import logging
import os
import runpy
import sys
from pathlib import Path

import calibtune.distributed as distributed


def main() -> None:
    records, commands = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())
    records.mkdir(parents=True, exist_ok=True)
    path = records / f"rank{os.environ.get('RANK', '0')}.jsonl"

    def write(row: dict) -> None:
        with path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")

    scoring_score = distributed.score

    def recording(model, tokenizer, requests, **kw):
        write({"event": "score", "scoring": kw.get("scoring"), "prompts": [r.prompt + "|" + "|".join(r.choices)
                                                                         for r in requests]})
        return scoring_score(model, tokenizer, requests, **kw)

    distributed.score = recording

    class Shards(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            rank, size, n_shard, n_total, shard = record.args
            write({"event": "shard", "rank": rank, "size": size, "n": n_total, "shard": list(shard)})

    log = logging.getLogger("calibtune.distributed")
    log.setLevel(logging.DEBUG)
    log.addHandler(Shards())
    for argv in commands:
        sys.argv = ["calibtune", *argv]
        try:
            runpy.run_module("calibtune", run_name="__main__", alter_sys=True)
        except SystemExit as e:
            if e.code not in (0, None):
                raise


if __name__ == "__main__":
    main()
