"""The comparison report: seeds pooled, intervals, Δ% and best marks; self-contained HTML that Chromium renders."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from calibtune.grid.report import write_report
from calibtune.metrics import pad_probabilities, summarize

CHROMIUM = Path("/usr/bin/chromium")
SCALES = {"sft": 3.0, "ts": 1.0, "cols": 1.8}  # logit scale: sft overconfident, ts about calibrated
KEYS = ("accuracy", "ece", "classwise_ece", "mce", "brier", "nll")
EVAL = "toy:test"
TH_BG, BEST_BG, BAR_BLUE = (0xDB, 0xE6, 0xF5), (0xC6, 0xEF, 0xCE), (0x4C, 0x72, 0xB0)


def _make_tree(root: Path, seeds: tuple[int, ...] = (0, 1), n: int = 40) -> dict[str, list[dict]]:
    """A compare results tree: task ``toy``, methods sft/ts/cols, one eval set; returns the rows per method."""
    rng = np.random.default_rng(0)
    pooled: dict[str, list[dict]] = {}
    for method, scale in SCALES.items():
        for seed in seeds:
            cell = root / "toy" / f"seed{seed}" / method
            cell.mkdir(parents=True)
            rows = []
            for i in range(n):
                k = 3 + i % 2  # 3 or 4 options, as ARC
                label = int(rng.integers(k))
                logits = rng.normal(size=k)
                logits[label] += 1.0
                logprobs = scale * logits - np.logaddexp.reduce(scale * logits)
                probs = np.exp(logprobs)
                pred = int(np.argmax(probs))
                rows.append({"probs": probs.tolist(), "label": label, "pred": pred, "confidence": float(probs[pred]),
                             "correct": int(pred == label), "logprobs": logprobs.tolist()})
            (cell / "toy_test.predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            (cell / "cell.json").write_text(json.dumps({
                "task": "toy", "method": method, "seed": seed, "train_data": "toy:train", "temperature": None,
                "train_seconds": 1.0, "results": [{"eval_data": EVAL, "n": n}]}))
            if method != "ts":
                curve = [{"step": s, "heldout_accuracy": 0.3 + 0.05 * s + 0.01 * seed, "heldout_ece": 0.05 * scale - 0.01 * s,
                          "heldout_confidence": 0.5, "heldout_nll": 1.2} for s in range(0, 8, 2)]
                (cell / "adapter").mkdir()
                (cell / "adapter" / "curve.json").write_text(json.dumps(curve))
            pooled.setdefault(method, []).extend(rows)
    return pooled


def _expected(rows: list[dict]) -> dict[str, float]:
    probs, mask = pad_probabilities([r["probs"] for r in rows])
    return summarize(probs, np.array([r["label"] for r in rows]), mask=mask, n_bins=15)


def _table(md: str, first_cell: str = "method") -> tuple[list[str], dict[str, list[str]]]:
    """Header and rows (by method) of the first Markdown table whose header starts with ``first_cell``."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_cell} |"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines[start:end]]
    return cells[0], {row[0]: row for row in cells[2:]}


def test_markdown_pools_seeds_marks_best_and_reports_deltas(tmp_path: Path) -> None:
    rows = _make_tree(tmp_path)
    md_path, html_path = write_report(tmp_path, n_boot=200, seed=3)
    md = md_path.read_text()
    header, table = _table(md)
    assert header[:9] == ["method", "seeds", "n", "accuracy", "ECE", "classwise ECE", "MCE", "Brier", "NLL"]
    assert header[9:] == ["ΔECE vs sft", "ΔECE vs ts"]
    assert list(table) == ["sft", "ts", "cols"]  # baselines first
    expected = {m: _expected(r) for m, r in rows.items()}
    for j, key in enumerate(KEYS, start=3):
        best_value = (max if key == "accuracy" else min)(e[key] for e in expected.values())
        best = {m for m, e in expected.items() if e[key] == pytest.approx(best_value, abs=1e-12)}  # ties all marked
        for method, row in table.items():
            value, lo, hi = (float(x) for x in re.findall(r"\d+\.\d+", row[j]))
            assert value == pytest.approx(expected[method][key], abs=5e-5), (method, key)
            assert lo <= hi
            assert row[j].startswith("**") == (method in best), (method, key, row[j])
    for method, row in table.items():
        assert row[1:3] == ["0,1", "80"]
        for col, base in ((9, "sft"), (10, "ts")):
            delta = 100 * (expected[method]["ece"] - expected[base]["ece"]) / expected[base]["ece"]
            assert row[col] == f"{delta:+.1f}%"
    delta_header, delta_rows = _table(md[md.index("Relative change"):])
    assert "Brier vs ts" in delta_header and len(delta_rows) == 3
    figures = re.findall(r"!\[[^]]*\]\((report_files/[^)]+\.png)\)", md)
    assert len(figures) == 2 and "curves_toy_train.png" in figures[1]
    assert all((tmp_path / f).is_file() for f in figures)
    assert write_report(tmp_path, n_boot=200, seed=3)[0].read_text() == md  # seeded: the same report again

    page = html_path.read_text()
    assert "http" not in page and 'src="/' not in page and "<script" not in page
    images = re.findall(r'<img[^>]*src="([^"]+)"', page)
    assert len(images) == 2
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG")
    assert page.count('class="best"') == md.count("**") // 2


def test_missing_baseline_curve_and_predictions_are_skipped(tmp_path: Path) -> None:
    _make_tree(tmp_path)
    shutil.rmtree(tmp_path / "toy" / "seed0" / "ts")
    shutil.rmtree(tmp_path / "toy" / "seed1" / "ts")
    for adapter in tmp_path.glob("toy/seed*/*/adapter"):
        shutil.rmtree(adapter)
    (tmp_path / "toy" / "seed1" / "cols" / "toy_test.predictions.jsonl").unlink()
    stale = tmp_path / "report_files" / "reliability_07_gone.png"
    stale.parent.mkdir()
    stale.write_bytes(b"figure of an earlier report")
    md = write_report(tmp_path, n_boot=20)[0].read_text()
    assert not stale.exists()
    assert all(f.stem in md for f in (tmp_path / "report_files").iterdir())
    header, table = _table(md)
    assert header[-1] == "ΔECE vs sft" and not any("vs ts" in h for h in header)
    assert list(table) == ["sft", "cols"]
    assert table["cols"][1:3] == ["0", "40"]
    assert "No training curves found" in md


def _chromium(html: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1400,2400", *args, html.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)


def _near(img: np.ndarray, rgb: tuple[int, int, int], tol: int = 3) -> np.ndarray:
    return np.all(np.abs(img.astype(int) - rgb) <= tol, axis=-1)


def test_html_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is needed to render the HTML report: `apt-get install -y chromium` "
                    "(a fresh `make setup` does it when missing)")
    _make_tree(tmp_path / "results")
    html_path = write_report(tmp_path / "results", n_boot=50)[1]

    dom = _chromium(html_path, tmp_path, "--dump-dom").stdout
    tables = re.findall(r"<table>.*?</table>", dom, flags=re.DOTALL)
    assert len(tables) == 2
    assert len(re.findall(r"<tr>", tables[0])) == 4  # header + sft, ts, cols
    assert len(re.findall(r"<img ", dom)) == 2

    shot = tmp_path / "shot.png"
    _chromium(html_path, tmp_path, f"--screenshot={shot}")
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (2400, 1400)
    header_rows = np.flatnonzero(_near(img, TH_BG).sum(axis=1) > 50)
    assert header_rows.size, "no table header rendered"
    top = header_rows[0]
    table_area = img[top:top + 120]
    dark = table_area.max(axis=-1) < 90
    assert dark.sum() > 500, "no text rendered in the table"
    assert _near(table_area, BEST_BG).sum() > 1000, "best cells not highlighted"
    below = img[top + 120:]
    blue = _near(below, BAR_BLUE, tol=6)
    assert blue.sum() > 5000, "reliability bars not rendered"
    figure_rows = np.flatnonzero(blue.any(axis=1))
    figure = below[figure_rows[0]:figure_rows[-1] + 1]
    assert len(np.unique(figure.reshape(-1, 3), axis=0)) > 100  # a drawn figure, not a flat box
