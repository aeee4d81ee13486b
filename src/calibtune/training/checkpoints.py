"""Checkpoint folders: the newest complete one, and the calibration state file saved in each."""

from __future__ import annotations

from pathlib import Path

STATE_FILE = "calibtune_state.json"  # beside the Trainer's files in each checkpoint: the calibration state


def last_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete ``checkpoint-N`` folder of ``output_dir`` (it holds ``trainer_state.json``)."""
    folder = Path(output_dir)
    found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()
             and (p / "trainer_state.json").is_file()] if folder.is_dir() else []
    return max(found, key=lambda p: int(p.name.split("-", 1)[1]), default=None)
