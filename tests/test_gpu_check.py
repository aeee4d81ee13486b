"""benchmarks/gpu_check.sh --cpu-smoke: the GPU run script's code path on the tiny model, so it cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_cpu_smoke_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    run = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu-smoke", "--out", str(out),
                          "--python", sys.executable], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=1500)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["mode"] == "cpu-smoke" and report["errors"] == {}
    assert [(r["model"], r["scoring"]) for r in report["eval"]] == [("tiny", "letter"), ("tiny", "cloze")]
    for row in report["eval"]:
        assert row["batch_size"] == 64 and row["n"] == report["settings"]["n_eval"] and row["items_per_second"] > 0
    step = report["lora_step"]
    assert step["steps"] == report["settings"]["train_steps"] and step["median_step_seconds"] > 0
    grid = report["compare"]
    assert grid["methods"] == ["base", "sft", "ts"] and grid["summary_rows"] == 3 and grid["seconds"] > 0
