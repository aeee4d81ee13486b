"""Hostile input across metrics, eval, probe, train and compare: each case is one `error:` line and exit 2 before any
work (no model is loaded: the fixture `no_model` makes loading one an internal error), never a traceback, with the
file, line, field or flag in the message, and the files on disk as they should be afterwards."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from calibtune.cli import app

WORDS = ["Paris", "Berlin", "Rome", "cat", "dog", "fish", "red", "blue"]


class ModelLoaded(Exception):
    """Raised by the patched model loader: a check came too late."""


@pytest.fixture
def no_model(monkeypatch):
    def refuse(*args, **kwargs):
        raise ModelLoaded("a model was loaded before the input was checked")

    import calibtune.models
    import calibtune.probing

    monkeypatch.setattr(calibtune.models, "load_model", refuse)
    monkeypatch.setattr(calibtune.probing.run, "load_model", refuse)


@dataclass
class Ctx:
    tmp: Path
    model: str

    def items(self, name: str = "items.jsonl", n: int = 6, **override) -> Path:
        rows = [{"id": f"i{i}", "question": f"Which {WORDS[i % 8]}?", "options": [WORDS[(i + j) % 8] for j in range(3)],
                 "answer": i % 3, **override} for i in range(n)]
        path = self.tmp / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path

    def write(self, name: str, text: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return path


@pytest.fixture
def ctx(tmp_path: Path, tiny_model_dir: Path) -> Ctx:
    return Ctx(tmp_path, str(tiny_model_dir))


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_error(res, needle: str, code: int = 2) -> str:
    """Exit ``code``, no traceback, exactly one ``error:`` line on stderr, holding ``needle`` verbatim."""
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit), res.output
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and len(res.stderr.strip().splitlines()) >= 1, res.stderr
    assert needle in errors[0], errors[0]
    return errors[0]


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# --------------------------------------------------------------------------------------------- metrics

METRICS_FILES: list[tuple[str, str, bytes, str]] = [
    ("empty-cell", "p.csv", b"label,p0,p1,p2\n1,0.2,,0.8\n", "line 2: field 'p1' is empty between probabilities"),
    ("missing-option-column", "p.csv", b"label,p0,p2\n1,0.2,0.8\n", "line 1: probability column 'p1' is missing"),
    ("duplicate-column", "p.csv", b"label,p0,p1,p1\n0,0.5,0.5,0.5\n", "line 1: duplicate column(s) ['p1']"),
    ("empty-label", "p.csv", b"label,p0,p1\n,0.5,0.5\n", "line 2: field 'label' is empty"),
    ("empty-correct", "c.csv", b"confidence,correct\n0.7,\n", "line 2: field 'correct' is empty"),
    ("not-utf8", "p.jsonl", b'{"confidence": 0.5, "correct": 1}\n{"confidence": 0.5, "co\xffrrect": 1}\n',
     "line 2: not valid UTF-8"),
    ("not-utf8-csv", "p.csv", b"confidence,correct\n0.5,1\n0.5,\xff\n", "line 3: not valid UTF-8"),
    ("nested-too-deep", "p.jsonl", b"[" * 100_000 + b"]" * 100_000 + b"\n", "line 1: JSON nested too deeply"),
    ("huge-csv-field", "p.csv", b'confidence,correct\n"' + b"9" * 200_000 + b'",1\n', "unreadable CSV"),
    ("json-list-line", "p.jsonl", b"[0.5, 1]\n", "line 1: expected a JSON object, got list"),
]


@pytest.mark.parametrize(("name", "content", "needle"), [c[1:] for c in METRICS_FILES], ids=[c[0] for c in METRICS_FILES])
def test_metrics_bad_file(ctx: Ctx, name: str, content: bytes, needle: str) -> None:
    path = ctx.write(name, content)
    before = files(ctx.tmp)
    message = assert_error(invoke("metrics", path), needle)
    assert str(path) in message and files(ctx.tmp) == before


METRICS_FLAGS = [
    ("n-bins-0", ["--n-bins", "0"], "`n_bins` to be an integer in [1, 10000], but got 0"),
    ("n-bins-huge", ["--n-bins", "100000000"], "in [1, 10000], but got 100000000"),  # it used to exhaust memory
    ("n-bins-not-a-number", ["--n-bins", "abc"], "Invalid value for '--n-bins'"),
    ("bootstrap-negative", ["--bootstrap", "-1"], "(--bootstrap) in [1, 100000], but got -1"),
    ("bootstrap-huge", ["--bootstrap", "100000000"], "(--bootstrap) in [1, 100000]"),
    ("preset-conflict", ["--preset", "torchmetrics", "--binning", "mass"], "preset='torchmetrics' fixes binning"),
]


@pytest.mark.parametrize(("flags", "needle"), [c[1:] for c in METRICS_FLAGS], ids=[c[0] for c in METRICS_FLAGS])
def test_metrics_bad_flag(ctx: Ctx, flags: list[str], needle: str, monkeypatch) -> None:
    import calibtune.predictions

    def unread(*a, **k):
        raise AssertionError("the file was read before the flags were checked")

    monkeypatch.setattr(calibtune.predictions, "read_predictions", unread)
    path = ctx.write("c.jsonl", '{"confidence": 0.9, "correct": 1}\n')
    assert_error(invoke("metrics", path, *flags), needle)


def test_metrics_markup_in_a_path_is_printed_verbatim(ctx: Ctx) -> None:
    missing = ctx.tmp / "[bold red]x[/] :smile:.jsonl"
    assert_error(invoke("metrics", missing), f"error: {missing}: no such file")


def test_metrics_on_a_folder(ctx: Ctx) -> None:
    assert_error(invoke("metrics", ctx.tmp), "is a folder, not a predictions file")


def test_metrics_plot_into_an_impossible_place_fails_before_reading(ctx: Ctx) -> None:
    path = ctx.write("c.jsonl", '{"confidence": 0.9, "correct": 1}\n')
    blocker = ctx.write("file.txt", "not a folder")
    assert_error(invoke("metrics", path, "--plot", blocker / "fig.png"), "file.txt: exists and is not a folder")
    assert not list(ctx.tmp.glob("**/*.png"))


def test_metrics_never_pools_data_sets_or_scorings(ctx: Ctx) -> None:
    rows = [{"dataset": d, "scoring": s, "probs": p, "label": 0} for d, s, p in (
        ("a", "cloze", [0.9, 0.1]), ("a", "cloze", [0.8, 0.2]), ("a", "letter", [0.3, 0.7]), ("b", "cloze", [0.6, 0.4]))]
    path = ctx.write("mixed.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    res = invoke("metrics", path, "--format", "json")
    assert res.exit_code == 0 and "3 groups (dataset · scoring)" in res.stderr
    groups = json.loads(res.stdout)["groups"]
    assert {k: v["n"] for k, v in groups.items()} == {"a · cloze": 2, "a · letter": 1, "b · cloze": 1}
    assert groups["a · letter"]["accuracy"] == 0 and groups["a · cloze"]["accuracy"] == 1


# ------------------------------------------------------------------------------------------------ eval

Build = Callable[[Ctx], list]

EVAL_CASES: list[tuple[str, Build, str]] = [
    ("n-bins-0", lambda c: ["--n-bins", "0"], "--n-bins: Expected argument `n_bins`"),
    ("batch-size-0", lambda c: ["--batch-size", "0"], "--batch-size must be a positive integer"),
    ("shots-negative", lambda c: ["--shots", "-1"], "--shots must be a number >= 0, got -1"),
    ("limit-0", lambda c: ["--limit", "0"], "--limit must be a number >= 1, got 0"),
    ("bootstrap-negative", lambda c: ["--bootstrap", "-5"], "--bootstrap must be a number >= 0, got -5"),
    ("normalize", lambda c: ["--normalize", "median"], "'--normalize': Value error, 'median' is not one of 'sum', 'mean'"),
    ("adapter-missing", lambda c: ["--adapter", c.tmp / "nope"], "nope: no such folder"),
    ("adapter-not-peft", lambda c: ["--adapter", c.tmp], "not a PEFT adapter folder (no adapter_config.json)"),
    ("template-missing", lambda c: ["--template", c.tmp / "t.txt"], "unknown template"),
    ("template-no-question", lambda c: ["--template", c.write("t.txt", "Answer:")], "no {question} placeholder"),
    ("template-attribute", lambda c: ["--template", c.write("t.txt", "{question.upper} {x}")],
     "bad template placeholder"),
    ("template-not-utf8", lambda c: ["--template", c.write("t.txt", b"\xff{question}")], "not valid UTF-8"),
    ("model-missing", lambda c: ["--model", c.tmp / "no-model"], "not found"),
    ("shots-without-pool", lambda c: ["--shots", "2"], "has no other labelled split to draw exemplars from"),
    ("temperature-on-test", lambda c: ["--temperature-data", c.tmp / "items.jsonl"], "is also an evaluation set"),
    ("temperature-typo", lambda c: ["--temperature-data", c.tmp / "held.jsonll"], "held.jsonll"),
    ("data-typo", lambda c: ["--data", "arc-easyy:test"], "arc-easyy"),
    ("nan-question", lambda c: ["--data", c.write("nan.jsonl", '{"question": NaN, "options": ["a", "b"], "answer": 0}\n')],
     "line 1, field 'question': missing (nan is a missing-value marker"),
    ("nan-text-question", lambda c: ["--data", c.write("nan.csv", "question,A,B,answer\nnan,x,y,A\n")],
     "nan.csv, line 2, field 'question': missing ('nan' is a missing-value marker"),
    ("markup-in-data-path", lambda c: ["--data", c.tmp / "[red]x[/red].jsonl"], "[red]x[/red].jsonl"),
    ("scoring-not-a-choice", lambda c: ["--scoring", "cloz"], "Invalid value for '--scoring'"),
]


@pytest.mark.parametrize(("build", "needle"), [c[1:] for c in EVAL_CASES], ids=[c[0] for c in EVAL_CASES])
def test_eval_bad_input_before_any_work(ctx: Ctx, no_model, build: Build, needle: str) -> None:
    out = ctx.tmp / "run"
    opts: dict[str, object] = {"--model": ctx.model, "--data": ctx.items(), "--out": out}
    rest, given = [], iter(build(ctx))
    for arg in given:  # a case's --model/--data replaces the default one
        if arg in opts:
            opts[arg] = next(given)
        else:
            rest.append(arg)
    assert_error(invoke("eval", *[x for kv in opts.items() for x in kv], "--no-progress", *rest), needle)
    assert not out.exists() and not list(ctx.tmp.glob(".run.*"))


@pytest.mark.parametrize("where", ["under-a-file", "is-a-file"])
def test_eval_unwritable_out_fails_before_any_work(ctx: Ctx, no_model, where: str) -> None:
    blocker = ctx.write("file.txt", "keep")
    out = blocker / "run" if where == "under-a-file" else blocker
    needle = "file.txt: exists and is not a folder"
    assert_error(invoke("eval", "--model", ctx.model, "--data", ctx.items(), "--out", out, "--no-progress"), needle)
    assert blocker.read_text() == "keep"


def test_eval_overwrite_refuses_a_folder_of_other_files(ctx: Ctx, no_model) -> None:
    out = ctx.tmp / "mine"
    ctx.write("mine/notes.txt", "precious")
    res = invoke("eval", "--model", ctx.model, "--data", ctx.items(), "--out", out, "--no-progress", "--overwrite")
    assert_error(res, "--overwrite replaces a results folder of an earlier `calibtune eval`")
    assert (out / "notes.txt").read_text() == "precious"


def test_eval_prompt_longer_than_the_context_names_the_item(ctx: Ctx) -> None:
    rows = [{"id": "short", "question": "Which cat?", "options": ["cat", "dog"], "answer": 0},
            {"id": "long-one", "question": " ".join(["Paris"] * 700), "options": ["cat", "dog"], "answer": 0}]
    data = ctx.write("long.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    out = ctx.tmp / "run"
    res = invoke("eval", "--model", ctx.model, "--data", data, "--out", out, "--no-progress")
    message = assert_error(res, "1 of 2 prompts are longer than the model's context of 512 tokens")
    assert "item 'long-one'" in message
    assert not out.exists() and not list(ctx.tmp.glob(".run.*"))


def test_eval_interrupted_overwrite_keeps_the_old_results_whole(ctx: Ctx, monkeypatch) -> None:
    data = ctx.items()
    out = ctx.tmp / "run"
    assert invoke("eval", "--model", ctx.model, "--data", data, "--out", out, "--no-progress").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    import calibtune.reports

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(out / "reliability.png"))

    monkeypatch.setattr(calibtune.reports, "reliability_grid", disk_full)
    res = invoke("eval", "--model", ctx.model, "--data", data, "--scoring", "letter", "--out", out, "--no-progress",
                 "--overwrite")
    assert_error(res, "reliability.png: No space left on device")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no new predictions beside old metrics
    assert sorted(p.name for p in ctx.tmp.iterdir()) == ["items.jsonl", "run"]


# ----------------------------------------------------------------------------------------------- probe

PROBE_CASES: list[tuple[str, Build, str]] = [
    ("n-prompts-0", lambda c: ["--n-prompts", "0"], "--n-prompts must be a number >= 1, got 0"),
    ("shots-negative", lambda c: ["--shots", "-2"], "--shots must be a number >= 0, got -2"),
    ("limit-0", lambda c: ["--limit", "0"], "--limit must be a number >= 1, got 0"),
    ("batch-size-0", lambda c: ["--batch-size", "0"], "--batch-size must be a positive integer"),
    ("template", lambda c: ["--template", c.write("t.txt", "{options}")], "no {question} placeholder"),
    ("preset", lambda c: ["--preset", "slik"], "unknown preset 'slik'"),
    ("out-is-a-folder", lambda c: ["--out", c.tmp], "is a folder; give a file name"),
    ("out-under-a-file", lambda c: ["--out", c.write("f.txt", "x") / "p.jsonl"], "f.txt: exists and is not a folder"),
    ("out-deep-under-a-file", lambda c: ["--out", c.write("f.txt", "x") / "a" / "p.jsonl"], "f.txt is a file, not a folder"),
]


@pytest.mark.parametrize(("build", "needle"), [c[1:] for c in PROBE_CASES], ids=[c[0] for c in PROBE_CASES])
def test_probe_bad_input_before_any_work(ctx: Ctx, no_model, build: Build, needle: str) -> None:
    data = ctx.items()
    out = ctx.tmp / "probe.jsonl"
    extra = build(ctx)
    if "--out" in extra:
        out = extra[extra.index("--out") + 1]
    else:
        extra = ["--out", out, *extra]
    assert_error(invoke("probe", "--model", ctx.model, "--data", data, "--no-cache", "--no-progress", *extra), needle)
    assert not (ctx.tmp / "probe.jsonl").exists()


def test_probe_refuses_an_existing_out_without_overwrite(ctx: Ctx, no_model) -> None:
    old = ctx.write("probe.jsonl", "earlier work\n")
    res = invoke("probe", "--model", ctx.model, "--data", ctx.items(), "--out", old, "--no-progress")
    assert_error(res, "probe.jsonl: exists; pass --overwrite to replace it")
    assert old.read_text() == "earlier work\n"


def test_probe_never_overwrites_its_input(ctx: Ctx, no_model) -> None:
    data = ctx.items()
    before = data.read_bytes()
    res = invoke("probe", "--model", ctx.model, "--data", data, "--out", data, "--overwrite", "--no-progress")
    assert_error(res, "is the input file")
    assert data.read_bytes() == before


def test_probe_data_typo(ctx: Ctx, no_model) -> None:
    res = invoke("probe", "--model", ctx.model, "--data", ctx.tmp / "itemz.jsonl", "--out", ctx.tmp / "p.jsonl",
                 "--no-progress")
    assert_error(res, "itemz.jsonl")
    assert not (ctx.tmp / "p.jsonl").exists()


# ----------------------------------------------------------------------------------------------- train

def _train_config(c: Ctx, **over) -> Path:
    training = {"per_device_train_batch_size": 4, "max_steps": 2, "learning_rate": 0.01, **over.pop("training", {})}
    cfg = {"model": c.model, "train_data": str(c.items()), "objective": "ce", "lora": {"r": 2, "alpha": 4},
           "training": training, **over}
    return c.write("train.yaml", yaml.safe_dump(cfg))


TRAIN_CASES: list[tuple[str, Build, str]] = [
    ("negative-lr", lambda c: [_train_config(c, training={"learning_rate": -0.1})],
     "training.learning_rate must be a number >= 0, got -0.1"),
    ("nan-lr", lambda c: [_train_config(c, training={"learning_rate": float("nan")})], "training.learning_rate"),
    ("max-steps-0", lambda c: [_train_config(c, training={"max_steps": 0})], "training.max_steps must be a positive"),
    ("batch-0", lambda c: [_train_config(c, training={"per_device_train_batch_size": 0})],
     "training.per_device_train_batch_size must be a number >= 1"),
    ("unknown-objective", lambda c: [_train_config(c, objective="cee")], "Expected objective to be one of"),
    ("objective-param", lambda c: [_train_config(c, objective_params={"epsilonn": 0.1}, objective="ls")],
     "Unknown parameter(s) ['epsilonn'] for objective 'ls'"),
    ("train-limit-0", lambda c: [_train_config(c, train_limit=0)], "train_limit: Input should be greater than or equal to 1"),
    ("refit-every-0", lambda c: [_train_config(c, refit_every=0)], "refit_every: Input should be greater than or equal"),
    ("known-source", lambda c: [_train_config(c, known_source="nl")], "known_source: Input should be"),
    ("probe-missing", lambda c: [_train_config(c, probe=str(c.tmp / "probe.jsonl"))],
     "probe.jsonl: no such file (write it with calibtune probe)"),
    ("template", lambda c: [_train_config(c, template=str(c.write("t.txt", "Q:")))], "no {question} placeholder"),
    ("bad-yaml", lambda c: [c.write("train.yaml", "model: [unclosed\n")], "not valid YAML"),
    ("yaml-list", lambda c: [c.write("train.yaml", "- a\n- b\n")], "expected a mapping at the top level"),
    ("resume-last-without-checkpoint", lambda c: [_train_config(c), "--resume", "last"], "has no checkpoint"),
    ("resume-path", lambda c: [_train_config(c), "--resume", c.tmp / "ckpt"], "not a checkpoint folder"),
    ("resume-and-overwrite", lambda c: [_train_config(c), "--resume", "last", "--overwrite"], "has no checkpoint"),
]


@pytest.mark.parametrize(("build", "needle"), [c[1:] for c in TRAIN_CASES], ids=[c[0] for c in TRAIN_CASES])
def test_train_bad_config_before_any_work(ctx: Ctx, no_model, build: Build, needle: str) -> None:
    config, *extra = build(ctx)
    out = ctx.tmp / "run"
    assert_error(invoke("train", "--config", config, "--output-dir", out, "--no-progress", *extra), needle)
    assert not out.exists()


def test_train_refuses_a_used_output_dir_without_resume_or_overwrite(ctx: Ctx, no_model) -> None:
    out = ctx.tmp / "run"
    ctx.write("run/checkpoint-4/trainer_state.json", "{}")
    res = invoke("train", "--config", _train_config(ctx), "--output-dir", out, "--no-progress")
    assert_error(res, "is not empty (an earlier run?); pass --resume last to continue it or --overwrite")
    assert (out / "checkpoint-4" / "trainer_state.json").is_file()
    res = invoke("train", "--config", _train_config(ctx), "--output-dir", out, "--resume", "last", "--overwrite")
    assert_error(res, "--resume and --overwrite exclude each other")


def test_train_output_dir_under_a_file(ctx: Ctx, no_model) -> None:
    blocker = ctx.write("file.txt", "x")
    res = invoke("train", "--config", _train_config(ctx), "--output-dir", blocker / "run", "--no-progress")
    assert_error(res, "is a file, not a folder")


# --------------------------------------------------------------------------------------------- compare

def _grid(c: Ctx, tasks: list[dict] | None = None, methods: list[dict] | None = None, **over) -> Path:
    data = str(c.items())
    task = {"name": "toy", "train": data, "heldout": data, "test": [data]}
    cfg = {"name": "g", "model": c.model, "out": str(c.tmp / "out"), "probe": {"n_prompts": 2, "shots": 0},
           "train": {"lora": {"r": 2, "alpha": 4}, "training": {"max_steps": 1}},
           "tasks": tasks or [task], "methods": methods or [{"name": "base"}, {"name": "sft", "objective": "ce"}],
           **over}
    return c.write("grid.yaml", yaml.safe_dump(cfg))


def _task(c: Ctx, name: str, **over) -> dict:
    data = str(c.tmp / "items.jsonl")
    return {"name": name, "train": data, "heldout": data, "test": [data], **over}


COMPARE_CASES: list[tuple[str, Build, str]] = [
    ("duplicate-task", lambda c: [_grid(c, tasks=[_task(c, "a"), _task(c, "a")])], "task name(s) ['a'] appear more than once"),
    ("task-with-slash", lambda c: [_grid(c, tasks=[_task(c, "../escape")])], "task name '../escape' must be one plain folder"),
    ("task-dotdot", lambda c: [_grid(c, tasks=[_task(c, "..")])], "task name '..' must be one plain folder name"),
    ("method-with-backslash", lambda c: [_grid(c, methods=[{"name": "a\\b"}])], "method name 'a\\\\b' must be one plain"),
    ("duplicate-method", lambda c: [_grid(c, methods=[{"name": "m"}, {"name": "m", "objective": "ce"}])],
     "method name(s) ['m'] appear more than once"),
    ("temperature-of-typo", lambda c: [_grid(c, methods=[{"name": "sft", "objective": "ce"},
                                                          {"name": "ts", "temperature_of": "stf"}])],
     "temperature_of='stf' is not a method of the grid"),
    ("temperature-of-ts", lambda c: [_grid(c, methods=[{"name": "base"}, {"name": "ts", "temperature_of": "base"},
                                                        {"name": "ts2", "temperature_of": "ts"}])],
     "must name a base or trained method"),
    ("later-task-data-typo", lambda c: [_grid(c, tasks=[_task(c, "a"), _task(c, "b", ood=["arc-easy:tset"])])],
     "tasks 'b', ood 'arc-easy:tset'"),
    ("negative-lr", lambda c: [_grid(c, train={"training": {"learning_rate": -1.0}})],
     "methods 'sft' (with train): training.learning_rate must be a number >= 0"),
    ("task-flag-typo", lambda c: [_grid(c), "--task", "tyo"], "--task 'tyo' is not a task of 'g'"),
    ("baseline-typo", lambda c: [_grid(c, baselines=["sfft"])], "baselines ['sfft'] are not methods"),
    ("scoring", lambda c: [_grid(c, scoring="clozee")], "scoring must be 'letter' or 'cloze'"),
    ("out-under-a-file", lambda c: [_grid(c, out=str(c.write("f.txt", "x") / "out"))], "is a file, not a folder"),
]


@pytest.mark.parametrize(("build", "needle"), [c[1:] for c in COMPARE_CASES], ids=[c[0] for c in COMPARE_CASES])
def test_compare_bad_grid_before_any_cell(ctx: Ctx, no_model, build: Build, needle: str) -> None:
    ctx.items()
    config, *extra = build(ctx)
    message = assert_error(invoke("compare", "--config", config, "--no-progress", *extra), needle)
    assert str(config) in message
    assert not (ctx.tmp / "out").exists() or not list((ctx.tmp / "out").rglob("cell.json"))


def test_compare_legacy_cells_are_refused_until_adopted(ctx: Ctx) -> None:
    config = _grid(ctx, methods=[{"name": "base"}])
    assert invoke("compare", "--config", config, "--no-progress", "--bootstrap", "10").exit_code == 0
    cell = ctx.tmp / "out" / "toy" / "seed0" / "base"
    record = json.loads((cell / "cell.json").read_text())
    key = record.pop("key")
    (cell / "cell.json").write_text(json.dumps(record))  # as written before cell keys
    predictions = {p: p.stat().st_mtime_ns for p in cell.glob("*.predictions.jsonl")}
    res = invoke("compare", "--config", config, "--no-progress", "--bootstrap", "10")
    assert_error(res, "1 cell(s) were written before cell keys")
    res = invoke("compare", "--config", config, "--no-progress", "--bootstrap", "10", "--adopt-legacy")
    assert res.exit_code == 0, res.output
    assert "adopted 1 cell(s)" in res.stderr and json.loads((cell / "cell.json").read_text())["key"] == key
    assert {p: p.stat().st_mtime_ns for p in cell.glob("*.predictions.jsonl")} == predictions  # reused, not re-run


def test_eval_nan_logits_name_the_items_by_id(ctx: Ctx, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    broken = tmp_path / "broken-model"
    model = AutoModelForCausalLM.from_pretrained(ctx.model)
    with torch.no_grad():
        model.get_output_embeddings().weight.fill_(float("nan"))
    model.save_pretrained(broken)
    AutoTokenizer.from_pretrained(ctx.model).save_pretrained(broken)
    out = ctx.tmp / "run"
    res = invoke("eval", "--model", broken, "--data", ctx.items(n=2), "--out", out, "--no-progress")
    assert_error(res, "non-finite (NaN/inf) logits while scoring item(s) ['i")
    assert not out.exists()


# ----------------------------------------------------------------------------------- the one error path

@pytest.mark.parametrize("how", ["before-the-command", "after-the-command", "environment"])
def test_debug_shows_the_traceback(ctx: Ctx, monkeypatch, how: str) -> None:
    from calibtune.predictions import PredictionsError

    missing = ctx.tmp / "missing.jsonl"
    args = {"before-the-command": ["--debug", "metrics", missing], "after-the-command": ["metrics", missing, "--debug"],
            "environment": ["metrics", missing]}[how]
    if how == "environment":
        monkeypatch.setenv("CALIBTUNE_DEBUG", "1")
    res = invoke(*args)
    assert isinstance(res.exception, PredictionsError) and "no such file" in str(res.exception)
    monkeypatch.delenv("CALIBTUNE_DEBUG", raising=False)
    assert isinstance(invoke("metrics", missing).exception, SystemExit)  # and without it, the one line again


def test_a_bug_is_one_line_with_exit_1_and_a_hint(ctx: Ctx, monkeypatch) -> None:
    import calibtune.external

    def bug(*args, **kwargs):
        raise KeyError("oops")

    monkeypatch.setattr(calibtune.external, "read_scored", bug)
    path = ctx.write("c.jsonl", '{"confidence": 0.9, "correct": 1}\n')
    message = assert_error(invoke("metrics", path), "internal error, please report it: KeyError: 'oops'", code=1)
    assert "--debug" in message


def test_staged_folder_is_all_or_nothing(tmp_path: Path) -> None:
    from calibtune.predictions import staged_folder

    target = tmp_path / "results"
    target.mkdir()
    (target / "metrics.json").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_folder(target) as stage:
            (stage / "predictions.jsonl").write_text("new")
            raise RuntimeError("killed half way")
    assert files(tmp_path) == {"results", "results/metrics.json"} and (target / "metrics.json").read_text() == "old"
    with staged_folder(target) as stage:
        (stage / "metrics.json").write_text("new")
        (stage / "predictions.jsonl").write_text("new")
    assert files(tmp_path) == {"results", "results/metrics.json", "results/predictions.jsonl"}
    assert (target / "metrics.json").read_text() == "new" and oct(target.stat().st_mode & 0o777) != "0o700"
