"""Open-ended QA: stop rules, the three confidence kinds, correctness (EM/F1/judge), token-level training, CLI."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import calibtune.open_eval as open_eval
from calibtune.answers import exact_match, normalize_answer, token_f1
from calibtune.cli import app
from calibtune.data import OpenItem
from calibtune.generation import Generation, generate_answers
from calibtune.metrics import calibration_error
from calibtune.objectives import get_objective
from calibtune.open_eval import (
    judge_p_yes,
    open_metrics,
    open_rows,
    parse_verbalized,
    ptrue_confidence,
    sequence_confidences,
    verbalized_confidence,
)
from calibtune.open_prompts import JUDGE_PROMPT, QATemplate, get_qa_template, judge_prompt
from calibtune.training.open import (
    OpenCollator,
    OpenTrainer,
    build_open_dataset,
    check_open_objective,
    token_losses,
)
from calibtune.predictions import read_predictions
from calibtune.training import CalibrationTrainingArguments, TrainConfig, run_training

runner = CliRunner()
DATA_DIR = os.environ.get("CALIBTUNE_DATA_DIR", str(Path(__file__).parents[2] / "shared" / "data"))
QA = QATemplate("qa")
ITEMS = [OpenItem(id="r", question="Which is red?", answers=("fire", "red fire")),
         OpenItem(id="c", question="What is the capital of France?", answers=("Paris",)),
         OpenItem(id="p", question="Which is a pet?", answers=("a cat", "dog"))]


def _one_token(tok, text: str) -> int:
    ids = tok(text)["input_ids"]
    assert len(ids) == 1, (text, ids)
    return ids[0]


def bigram_model(transitions: dict[int, int]):
    """The tiny Llama turned into a bigram model: the next token depends only on the current one.

    Attention and MLP outputs are zeroed, so the last hidden state is the RMS-normalised embedding of the
    current token; token ``src`` has embedding e_k and the head maps e_k to a logit of 80 for ``dst``
    (all others 0). Unmapped tokens have a zero embedding: all logits 0.
    """
    from conftest import tiny_llama

    model = tiny_llama()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.zero_()
        model.lm_head.weight.zero_()
        for k, (src, dst) in enumerate(transitions.items()):
            model.model.embed_tokens.weight[src, k] = 1.0
            model.lm_head.weight[dst, k] = 10.0
    return model


def _direct_logprobs(model, tok, prompt: str, continuation_ids: list[int]) -> list[float]:
    """log p of each continuation token after ``prompt``: one unpadded forward, no cache."""
    prompt_ids = tok(prompt)["input_ids"]
    ids = torch.tensor([prompt_ids + list(continuation_ids)])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    return [float(logp[len(prompt_ids) - 1 + t, token]) for t, token in enumerate(continuation_ids)]


def _direct_two_way(model, tok, prompt: str, first: str, second: str) -> float:
    """P(first) / (P(first) + P(second)) from the joint tokenisation of prompt + continuation."""
    scores = []
    for cont in (first, second):
        p_ids, joint = tok(prompt)["input_ids"], tok(prompt + cont)["input_ids"]
        assert joint[:len(p_ids)] == p_ids
        scores.append(sum(_direct_logprobs(model, tok, prompt, joint[len(p_ids):])))
    return 1.0 / (1.0 + math.exp(scores[1] - scores[0]))


# ------------------------------------------------------------------ generation and stop rules


def test_stop_rules_newline_eos_and_max_tokens(tokenizer) -> None:
    t = {w: _one_token(tokenizer, w) for w in ("fire", "water", "stone", " Paris", " Berlin", " Rome", "\n")}
    eos = tokenizer.eos_token_id
    model = bigram_model({t["fire"]: t[" Paris"], t[" Paris"]: t["\n"], t["water"]: t[" Berlin"],
                          t[" Berlin"]: eos, t["stone"]: t[" Rome"], t[" Rome"]: t[" Rome"], t["\n"]: t[" Rome"]})
    prompts = ["fire", "water", "stone"]
    gens = generate_answers(model, tokenizer, prompts, max_new_tokens=3, batch_size=3, progress=False)
    assert [g.stop for g in gens] == ["newline", "eos", "max_tokens"]
    assert [g.text for g in gens] == ["Paris", "Berlin", "Rome Rome Rome"]
    assert gens[0].token_ids == (t[" Paris"], t["\n"])  # the terminator is kept (it counts in the probability)
    assert gens[1].token_ids == (t[" Berlin"], eos)
    assert gens[2].token_ids == (t[" Rome"],) * 3
    # every token has logit 80 against 999 zeros: log p = -log(1 + 999 e^-80)
    expected = -math.log1p(999 * math.exp(-80))
    for g in gens:
        assert g.logprobs == pytest.approx([expected] * len(g.token_ids), abs=1e-6)
    # one at a time (no padding) gives the same answers
    alone = [generate_answers(model, tokenizer, [p], max_new_tokens=3, progress=False)[0] for p in prompts]
    assert [g.token_ids for g in alone] == [g.token_ids for g in gens]
    # without the newline rule the row goes on to the cap
    longer = generate_answers(model, tokenizer, ["fire"], max_new_tokens=4, stop_at_newline=False, progress=False)[0]
    assert longer.stop == "max_tokens" and longer.token_ids == (t[" Paris"], t["\n"], t[" Rome"], t[" Rome"])
    assert longer.text == "Paris"  # the text still ends at the first newline


def test_generation_is_greedy_and_its_logprobs_are_the_models(tiny) -> None:
    model, tok = tiny
    prompts = ["Q: Which is red?\nA:", "Paris Berlin", "Q: What is the capital of France?\nA: Paris\nQ: x\nA:"]
    gens = generate_answers(model, tok, prompts, max_new_tokens=5, batch_size=2, progress=False)
    for prompt, g in zip(prompts, gens):
        direct = _direct_logprobs(model, tok, prompt, list(g.token_ids))
        assert g.logprobs == pytest.approx(direct, abs=1e-4)
        ids = tok(prompt)["input_ids"] + list(g.token_ids)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0]
        greedy = logits[len(ids) - len(g.token_ids) - 1:-1].argmax(-1).tolist()
        assert greedy == list(g.token_ids)
        conf = sequence_confidences(g)
        assert conf["seq_prob"] == pytest.approx(math.exp(sum(direct)), rel=1e-4)
        assert conf["seq_prob_mean"] == pytest.approx(math.exp(np.mean(direct)), rel=1e-4)


# ------------------------------------------------------------------ confidences and correctness


def test_ptrue_and_judge_against_a_direct_computation(tiny) -> None:
    model, tok = tiny
    answers = ["fire", "Berlin", ""]
    ptrue = ptrue_confidence(model, tok, QA, ITEMS, answers, progress=False)
    judge = judge_p_yes(model, tok, ITEMS, answers, progress=False)
    for item, answer, p, j in zip(ITEMS, answers, ptrue, judge):
        prompt, (yes, no) = QA.ptrue(item, answer)
        assert prompt.endswith("Answer True or False.\nAnswer:") and (yes, no) == (" True", " False")
        assert p == pytest.approx(_direct_two_way(model, tok, prompt, yes, no), abs=1e-5)
        jp = judge_prompt(item, answer)
        assert jp == JUDGE_PROMPT.format(question=item.question, gold="; ".join(item.answers), answer=answer)
        assert j == pytest.approx(_direct_two_way(model, tok, jp, " Yes", " No"), abs=1e-5)
        assert 0 < p < 1 and 0 < j < 1


@pytest.mark.parametrize("reply, value, status", [
    ("85", 0.85, "ok"),
    (" 85%", 0.85, "ok"),
    ("I am about 70 % sure", 0.70, "ok"),
    ("42.5", 0.425, "ok"),
    ("100", 1.0, "ok"),
    ("0", 0.0, "ok"),
    ("0.9", 0.009, "ok"),  # read as a percentage, as asked
    ("90-100", 0.90, "ok"),  # the first number
    ("150", None, "out_of_range"),
    ("-5", None, "out_of_range"),
    ("100.5%", None, "out_of_range"),
    ("high", None, "missing"),
    ("", None, "missing"),
    ("Paris", None, "missing"),
])
def test_parse_verbalized(reply: str, value: float | None, status: str) -> None:
    got, why = parse_verbalized(reply)
    assert why == status
    assert got == (pytest.approx(value) if value is not None else None)


def test_verbalized_path_counts_unparsable_replies(monkeypatch: pytest.MonkeyPatch) -> None:
    replies = ["80", "no idea", "250", "30%"]
    seen = {}

    def fake_generate(model, tokenizer, prompts, **kwargs):
        seen["prompts"] = list(prompts)
        return [Generation(r, (1,), (-0.1,), "newline") for r in replies]

    monkeypatch.setattr(open_eval, "generate_answers", fake_generate)
    items = [OpenItem(id=f"i{k}", question=f"q{k}?", answers=("a",)) for k in range(4)]
    verbal = verbalized_confidence(None, None, QA, items, ["a", "b", "a", "b"], progress=False)
    assert seen["prompts"][1] == QA.verbalized(items[1], "b") and seen["prompts"][1].endswith("Confidence:")
    assert verbal == [("80", 0.8, "ok"), ("no idea", None, "missing"), ("250", None, "out_of_range"),
                      ("30%", 0.3, "ok")]
    gens = [Generation(a, (1, 2), (-0.5, -0.25), "newline") for a in ["a", "b", "a", "b"]]
    rows = open_rows("d", items, gens, verbalized=verbal)
    m = open_metrics(rows, n_bins=10)["verbalized"]
    assert (m["n"], m["n_unparsed"], m["n_missing"], m["n_out_of_range"]) == (2, 2, 1, 1)
    assert m["ece"] == pytest.approx(calibration_error([0.8, 0.3], [1, 0], n_bins=10))
    assert [r["confidences"]["verbalized"] for r in rows] == [0.8, None, None, 0.3]  # never defaulted
    assert open_metrics(rows, n_bins=10)["seq_prob"]["n"] == 4


def test_squad_normalisation_exact_match_and_f1() -> None:
    # the official rules: lowercase, ASCII punctuation removed, articles a/an/the as words, whitespace collapsed
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("An apple, a pear and THE theatre.") == "apple pear and theatre"
    assert normalize_answer("  Ça   va? ") == "ça va"  # non-ASCII letters are kept
    assert exact_match("the Beatles", ["Beatles"]) and exact_match("U.S.A.", ["usa"])
    assert not exact_match("Paris, France", ["Paris"])
    assert not exact_match("", ["Paris"])
    assert token_f1("Paris", ["Paris"]) == 1.0
    # "paris france" vs "paris": precision 1/2, recall 1 -> F1 = 2/3
    assert token_f1("Paris, France", ["Paris"]) == pytest.approx(2 / 3)
    # multiset overlap: "new york new" vs "new york city": common {new: 1, york: 1} = 2, P = R = 2/3
    assert token_f1("new york new", ["New York City"]) == pytest.approx(2 / 3)
    assert token_f1("the cat", ["a dog", "cat"]) == 1.0  # the best alias counts; articles removed
    assert token_f1("", ["Paris"]) == 0.0 and token_f1("London", ["Paris"]) == 0.0


def test_rows_correctness_criteria_and_threshold() -> None:
    gens = [Generation(t, (5, 6), (-0.2, -0.1), "newline") for t in ["red fire!", "Paris France", "a dog"]]
    rows = open_rows("d", ITEMS, gens, judge=[0.9, 0.2, 0.6], f1_threshold=0.6)
    assert [r["em"] for r in rows] == [1, 0, 1]
    assert [r["f1"] for r in rows] == pytest.approx([1.0, 2 / 3, 1.0])
    assert [r["f1_correct"] for r in rows] == [1, 1, 1]
    assert [r["judge"] for r in rows] == [1, 0, 1] and rows[0]["correct"] == rows[0]["em"]
    assert all(r["confidence"] == pytest.approx(math.exp(-0.3)) for r in rows)
    assert [r["f1_correct"] for r in open_rows("d", ITEMS, gens, f1_threshold=0.7)] == [1, 0, 1]
    assert [r["correct"] for r in open_rows("d", ITEMS, gens, judge=[0.9, 0.2, 0.4], correctness="judge")] == [1, 0, 0]
    with pytest.raises(ValueError, match="judge"):
        open_rows("d", ITEMS, gens, correctness="judge")


def test_prompts() -> None:
    item = OpenItem(id="x", question="Where was Ada born?", answers=("London",), subject="P19")
    ex = [OpenItem(id="e", question="Where was Bo born?", answers=("Oslo", "Kristiania"), subject="P19")]
    assert QA.prompt(item, ex) == "Q: Where was Bo born?\nA: Oslo\nQ: Where was Ada born?\nA:"
    assert QA.target("London") == " London\n"
    with pytest.raises(ValueError, match="chat template"):
        get_qa_template("chat", None)


# ------------------------------------------------------------------ token-level training


def test_token_level_cogcalib_hand_worked_values() -> None:
    # p = softmax([0, 0, ln 2]) = [1/4, 1/4, 1/2]; the target is token 2
    logits = torch.tensor([[0.0, 0.0, math.log(2)]] * 2, dtype=torch.float64)
    targets = torch.tensor([2, 2])
    known = torch.tensor([True, False])
    ln2 = math.log(2)
    ce = get_objective("ce")
    assert token_losses(ce, logits, targets).tolist() == pytest.approx([ln2, ln2])
    assert token_losses(get_objective("sft"), logits, targets).tolist() == pytest.approx([ln2, ln2])
    # CoLS: uniform-target CE over the vocabulary U = -(1/3)(ln 1/4 + ln 1/4 + ln 1/2) = 5/3 ln 2
    cols = get_objective("cogcalib", alpha=0.5, regularizer="ls")
    assert token_losses(cols, logits, targets, known=known).tolist() == pytest.approx([ln2 + 0.5 * 5 / 3 * ln2, ln2])
    # CoECP: H(p) = 1.5 ln 2, not divided by V
    coecp = get_objective("cogcalib", alpha=0.5, regularizer="ecp", normalize_entropy=False)
    assert token_losses(coecp, logits, targets, known=known).tolist() == pytest.approx([ln2 - 0.75 * ln2, ln2])
    # normalize_entropy divides by V = 3
    coecp_v = get_objective("cogcalib", alpha=0.5, regularizer="ecp")
    assert token_losses(coecp_v, logits, targets, known=known)[0].item() == pytest.approx(ln2 - 0.25 * ln2)
    # CoMbLS, margin 0.5: logit distances ln 2, ln 2, 0 -> mean ReLU(d - 0.5) = 2 (ln 2 - 0.5) / 3
    combls = get_objective("cogcalib", alpha=0.5, regularizer="mbls", margin=0.5)
    assert token_losses(combls, logits, targets, known=known).tolist() == pytest.approx(
        [ln2 + 0.5 * 2 * (ln2 - 0.5) / 3, ln2])
    # LS over the vocabulary, epsilon 0.1: (1 - 0.1) CE + 0.1 U
    assert token_losses(get_objective("ls", epsilon=0.1), logits, targets)[0].item() == pytest.approx(
        0.9 * ln2 + 0.1 * 5 / 3 * ln2)


@pytest.mark.parametrize("regularizer", ["ls", "ecp", "mbls"])
def test_token_level_cogcalib_gradcheck(regularizer: str) -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, 3, 6, 2])
    known = torch.tensor([True, False, True, True])
    objective = get_objective("cogcalib", alpha=0.7, regularizer=regularizer, margin=0.3)
    assert torch.autograd.gradcheck(lambda z: token_losses(objective, z, targets, known=known), (logits,))


def _trainer(tmp_path: Path, model, tok, dataset, **kwargs) -> OpenTrainer:
    args = CalibrationTrainingArguments(output_dir=str(tmp_path / "t"), report_to="none", use_cpu=True, **kwargs)
    return OpenTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok)


def test_open_trainer_loss_is_the_mean_over_answer_tokens(tmp_path: Path, tiny) -> None:
    """compute_loss on a padded batch equals per-row forwards: CE on the answer tokens, CoLS on known items."""
    model, tok = tiny
    known = {"r": True, "c": False, "p": True}
    dataset = build_open_dataset(ITEMS, tok, QA, known=known)
    assert dataset.examples[0].answer_ids[-1] == _one_token(tok, "\n")  # the answer ends with the stop rule
    trainer = _trainer(tmp_path, model, tok, dataset, objective="cogcalib",
                       objective_params={"alpha": 0.5, "regularizer": "ls"}, known_source="probe")
    batch = OpenCollator()([dataset[i] for i in range(len(ITEMS))])
    n_tokens = int((batch["labels"] != -100).sum())
    model.train()
    try:
        loss = trainer.compute_loss(model, batch, num_items_in_batch=n_tokens)
    finally:
        model.eval()
    total = 0.0
    for item, ex in zip(ITEMS, dataset.examples):
        ids = torch.tensor([ex.prompt_ids + ex.answer_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
        for t, token in enumerate(ex.answer_ids):
            row = logp[len(ex.prompt_ids) - 1 + t]
            total += -float(row[token]) + (0.5 * -float(row.mean()) if known[item.id] else 0.0)
    assert n_tokens == sum(len(ex.answer_ids) for ex in dataset.examples)
    assert loss.item() == pytest.approx(total / n_tokens, rel=1e-4)


def _write_open(path: Path, n: int = 6) -> Path:
    rows = [{"id": f"o{i}", "question": f"Which is red {i}?", "answers": ["fire", "red fire"]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_train_on_open_questions_with_online_threshold(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = _write_open(tmp_path / "open.jsonl")
    probe = tmp_path / "probe.jsonl"
    probe.write_text("".join(json.dumps({"id": f"o{i}", "category": "HighlyKnown" if i % 2 else "Unknown",
                                         "known": bool(i % 2), "p_correct": float(i % 2), "nll": 1.0,
                                         "n_prompts": 1}) + "\n" for i in range(6)))
    cfg = TrainConfig(model=str(tiny_model_dir), train_data=str(data), eval_data=str(data), eval_every=2,
                      max_new_tokens=3, objective="cogcalib", objective_params={"alpha": 0.5, "regularizer": "ecp"},
                      known_source="nll", probe=str(probe), eval_probe=str(probe), refit_every=1, lora=None,
                      training={"per_device_train_batch_size": 3, "max_steps": 3, "learning_rate": 1e-3,
                                "output_dir": str(tmp_path / "run")})
    summary = run_training(cfg, progress=False)
    assert summary["steps"] == 3 and summary["thresholds"]
    curve = summary["curve"]
    assert [c["step"] for c in curve] == [0, 2, 3]
    assert {"heldout_accuracy", "heldout_ece", "heldout_confidence", "heldout_known_n"} <= set(curve[0])
    assert (tmp_path / "run" / "curve.csv").is_file()
    rcft = cfg.model_copy(update={"objective": "rcft", "objective_params": {"n_bins": 5}, "known_source": "none",
                                  "estep": "epoch", "training": {**cfg.training, "num_train_epochs": 2,
                                                                 "max_steps": -1,
                                                                 "output_dir": str(tmp_path / "rcft")}})
    summary = run_training(rcft, progress=False)
    assert summary["steps"] == 4  # 2 epochs of 2 batches, an E-step before each
    assert [e["epoch"] for e in summary["e_steps"]] == [0, 1]
    assert all(sum(e["bin_count"]) == 6 for e in summary["e_steps"])


def test_open_rcft_e_step_bins_own_answers_and_loss(tmp_path: Path, tokenizer) -> None:
    """RCFT on free-form answers: the E-step bins the greedy answers' sequence probabilities by exact match,
    and the loss is the answer tokens' CE plus λ·(c − acc_b)² / N_b on the probability of the model's own
    answer, each against a direct computation (unpadded forwards, numpy bins).

    A bigram model answers " Paris" to every prompt (p ≈ 0.9, then a sure newline): right for one item of
    three, so the ECE term is far from 0 and the test sees it."""
    tok = tokenizer
    dataset = build_open_dataset(ITEMS, tok, QA)
    last, paris, newline = dataset.examples[0].prompt_ids[-1], _one_token(tok, " Paris"), _one_token(tok, "\n")
    assert {ex.prompt_ids[-1] for ex in dataset.examples} == {last}
    model = bigram_model({last: paris, paris: newline})
    with torch.no_grad():  # logit 8·w for " Paris" after the prompt: p = 0.9 against the other V − 1 tokens
        model.lm_head.weight[paris, 0] = math.log((model.config.vocab_size - 1) * 9) / 8
    args = CalibrationTrainingArguments(output_dir=str(tmp_path / "t"), report_to="none", use_cpu=True,
                                        objective="rcft", objective_params={"n_bins": 4, "ece_weight": 2.0})
    trainer = OpenTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok, max_new_tokens=4)
    trainer.e_step(model)
    gens = [generate_answers(model, tok, [QA.prompt(it)], max_new_tokens=4, progress=False)[0] for it in ITEMS]
    def logprobs(prompt_ids: list[int], continuation: list[int]) -> list[float]:
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([prompt_ids + continuation])).logits[0].double(), -1)
        return [float(logp[len(prompt_ids) - 1 + t, token]) for t, token in enumerate(continuation)]

    conf = np.array([math.exp(sum(logprobs(ex.prompt_ids, list(g.token_ids))))
                     for ex, g in zip(dataset.examples, gens)])
    np.testing.assert_allclose(conf, [sequence_confidences(g)["seq_prob"] for g in gens], rtol=1e-4)
    correct = np.array([exact_match(g.text, it.answers) for g, it in zip(gens, ITEMS)], dtype=float)
    assert [g.text for g in gens] == ["Paris"] * 3 and correct.tolist() == [0, 1, 0]
    assert 0.85 < conf[0] < 0.95
    bins = np.minimum((conf * 4).astype(int), 3)
    count = np.bincount(bins, minlength=4)
    acc = np.array([correct[bins == b].mean() if count[b] else 0.0 for b in range(4)])
    np.testing.assert_allclose(trainer.bins["bin_count"].numpy(), count)
    np.testing.assert_allclose(trainer.bins["bin_accuracy"].numpy(), acc)
    assert trainer.data_collator.predictions == {i: list(g.token_ids) for i, g in enumerate(gens)}
    with pytest.raises(ValueError, match="not available for open questions"):
        check_open_objective("made-up")

    batch = trainer.data_collator([dataset[i] for i in range(len(ITEMS))])
    n_tokens = int((batch["labels"] != -100).sum())
    loss = trainer.compute_loss(model, batch, num_items_in_batch=n_tokens)  # eval mode: no dropout either way
    ce = -sum(sum(logprobs(ex.prompt_ids, ex.answer_ids)) for ex in dataset.examples)
    ece = np.mean([(c - acc[b]) ** 2 / count[b] for c, b in zip(conf, bins)])
    assert loss.item() == pytest.approx(ce / n_tokens + 2.0 * ece, rel=1e-4)


# ------------------------------------------------------------------ calibtune eval


def test_cli_eval_open_questions_with_judge(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = _write_open(tmp_path / "open.jsonl")
    out = tmp_path / "run"
    res = runner.invoke(app, ["eval", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(out),
                              "--shots", "2", "--max-new-tokens", "4", "--judge", str(tiny_model_dir),
                              "--correctness", "judge", "--no-progress"])
    assert res.exit_code == 0, res.output
    for name in ("predictions.jsonl", "metrics.json", "reliability.png", "report.md"):
        assert (out / name).stat().st_size > 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    for r in rows:
        assert {"answer", "stop", "em", "f1", "f1_correct", "judge", "judge_p_yes", "verbalized_reply"} <= set(r)
        assert set(r["confidences"]) == {"seq_prob", "seq_prob_mean", "ptrue", "verbalized"}
        assert r["correct"] == r["judge"] and r["confidence"] == r["confidences"]["seq_prob"]
    report = json.loads((out / "metrics.json").read_text())
    assert report["prompts"]["judge"] == JUDGE_PROMPT and report["correctness"]["primary"] == "judge"
    assert {k.split(" · ")[1] for k in report["results"]} == {"seq_prob", "seq_prob_mean", "ptrue", "verbalized"}
    seq = report["results"][f"{data} · seq_prob"]
    assert seq["ece"] == pytest.approx(calibration_error([r["confidence"] for r in rows],
                                                         [r["correct"] for r in rows], n_bins=15))
    verbal = report["results"][f"{data} · verbalized"]
    assert verbal["n"] + verbal["n_unparsed"] == 6
    assert read_predictions(out / "predictions.jsonl").n == 6  # readable by `calibtune metrics`
    assert "Correct answers: {gold}" in (out / "report.md").read_text()


def test_cli_eval_open_question_errors_come_before_the_model(tmp_path: Path, tiny_model_dir: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import calibtune.models

    def boom(*args, **kwargs):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(calibtune.models, "load_model", boom)
    data = _write_open(tmp_path / "open.jsonl")
    mc = tmp_path / "mc.jsonl"
    mc.write_text(json.dumps({"question": "q", "options": ["a", "b"], "answer": 0}) + "\n")
    args = ["eval", "--model", str(tiny_model_dir), "--out", str(tmp_path / "o"), "--no-progress"]
    res = runner.invoke(app, [*args, "--data", str(data), "--data", str(mc)])
    assert res.exit_code == 2 and "mixes multiple-choice and open questions" in " ".join(res.output.split())
    res = runner.invoke(app, [*args, "--data", str(data), "--correctness", "judge", "--overwrite"])
    assert res.exit_code == 2 and "--judge" in res.output
    res = runner.invoke(app, [*args, "--data", str(data), "--temperature-data", str(data), "--overwrite"])
    assert res.exit_code == 2 and "multiple-choice data only" in " ".join(res.output.split())
    res = runner.invoke(app, [*args, "--data", str(data), "--f1-threshold", "0", "--overwrite"])
    assert res.exit_code == 2 and "--f1-threshold" in res.output
    res = runner.invoke(app, [*args, "--data", str(data), "--qa-template", str(tmp_path / "none.txt"), "--overwrite"])
    assert res.exit_code == 2 and "unknown qa template" in " ".join(res.output.split())


@pytest.mark.slow
def test_embedded_model_on_10_triviaqa_questions(tmp_path: Path, smollm2) -> None:
    """SmolLM2-135M-Instruct answers 10 TriviaQA test questions; every confidence kind is reported."""
    out = tmp_path / "smol"
    res = runner.invoke(app, ["eval", "--model", "smollm2", "--data", "triviaqa:test", "--limit", "10",
                              "--shots", "2", "--max-new-tokens", "12", "--data-dir", DATA_DIR, "--out", str(out),
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and all(r["answer"] for r in rows)
    assert sum(r["stop"] == "newline" for r in rows) >= 6  # with 2 exemplars the model follows the Q:/A: format
    for r in rows:
        assert all(v is None or 0 <= v <= 1 for v in r["confidences"].values())
        assert r["confidences"]["seq_prob"] <= r["confidences"]["seq_prob_mean"] + 1e-12
    results = json.loads((out / "metrics.json").read_text())["results"]
    for kind in ("seq_prob", "seq_prob_mean", "ptrue"):
        m = results[f"triviaqa:test · {kind}"]
        assert m["n"] == 10 and 0 <= m["ece"] <= 1
    verbal = results["triviaqa:test · verbalized"]
    assert verbal["n"] + verbal["n_unparsed"] == 10
