"""Cloze normalisations ``char``, ``byte`` and ``pmi`` (lm-eval's ``acc_norm``, ``acc_bytes``,
``acc_mutual_info``): against a direct computation on the tiny model, through the training collator, and on
the embedded SmolLM2 against lm-eval's own samples for 40 ARC-Easy questions (tests/data/lm_eval)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from calibtune.data import MCItem
from calibtune.prompts import Template, build_requests
from calibtune.scoring import ClozeScorer, ScoringRequest, score

DATA = Path(__file__).parent / "data" / "lm_eval"
RUN = "2026-12-01T22-12-09.814445"

REQUESTS = [
    ScoringRequest("Question: What is the capital of France?\nAnswer:", [" Paris", " Berlin", " Rome"]),
    ScoringRequest("Question: Which is red?\nAnswer:", [" fire", " water"]),
    ScoringRequest("Question: Which is a pet?\nAnswer:", [" cat", " stone", " café", " fish bird"]),
]


def _loglik(model, ids: list[int], start: int) -> float:
    """log P(ids[start:] | ids[:start]) by one plain forward pass."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    return float(sum(logp[j - 1, ids[j]] for j in range(start, len(ids))))


def _direct(model, tok, req: ScoringRequest, normalize: str) -> np.ndarray:
    """Each option's score written out: joint tokenisation as lm-eval's ``_encode_pair``, lengths of the
    option text without the leading space, and the unconditional pass after the BOS (else EOS) token."""
    ctx = tok(req.prompt)["input_ids"]
    out = []
    for choice in req.choices:
        whole = tok(req.prompt + choice)["input_ids"]
        assert whole[: len(ctx)] == ctx
        ll = _loglik(model, whole, len(ctx))
        text = choice.removeprefix(" ")
        if normalize == "char":
            ll /= len(text)
        elif normalize == "byte":
            ll /= len(text.encode("utf-8"))
        elif normalize == "pmi":
            neutral = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
            ll -= _loglik(model, [neutral, *tok(choice, add_special_tokens=False)["input_ids"]], 1)
        out.append(ll)
    return np.array(out)


@pytest.mark.parametrize("normalize", ["char", "byte", "pmi"])
@pytest.mark.parametrize("share_prompt", [True, False])
def test_normalisations_equal_a_direct_computation(tiny, normalize: str, share_prompt: bool) -> None:
    model, tok = tiny
    got = score(model, tok, REQUESTS, scoring="cloze", normalize=normalize, share_prompt=share_prompt,
                log_softmax=False, progress=False, batch_size=2)
    for g, req in zip(got, REQUESTS):
        np.testing.assert_allclose(g, _direct(model, tok, req, normalize), rtol=1e-5, atol=1e-5)
    # the distribution is the softmax of these scores
    probs = score(model, tok, REQUESTS, scoring="cloze", normalize=normalize, share_prompt=share_prompt,
                  progress=False, batch_size=2)
    for lp, g in zip(probs, got):
        np.testing.assert_allclose(lp, g - np.logaddexp.reduce(g), atol=1e-9)


def test_char_and_byte_differ_only_on_non_ascii_text(tiny) -> None:
    model, tok = tiny
    char = score(model, tok, REQUESTS, scoring="cloze", normalize="char", log_softmax=False, progress=False)
    byte = score(model, tok, REQUESTS, scoring="cloze", normalize="byte", log_softmax=False, progress=False)
    np.testing.assert_allclose(char[0], byte[0])
    assert char[2][2] == pytest.approx(byte[2][2] * 5 / 4)  # "café": 4 characters, 5 bytes


def test_shared_k_shot_prefix_keeps_the_normalisation(tiny) -> None:
    """Items sharing one exemplar set (keys/values computed once) score as if each ran alone."""
    model, tok = tiny
    pool = [MCItem(id=f"p{i}", question=f"Which is {w}?", options=(w, "stone"), gold=0)
            for i, w in enumerate(["red", "blue", "green"])]
    items = [MCItem(id=f"x{i}", question=f"Which is {w}?", options=("cat", "dog", "café"), gold=i % 3)
             for i, w in enumerate(["a pet", "water", "fire", "a bird"])]
    reqs = build_requests(items, Template("blob"), "cloze", shots=2, pool=pool, exemplars="shared")
    assert len({r.shared_prefix for r in reqs}) == 1 and reqs[0].shared_prefix
    for normalize in ("char", "pmi"):
        shared = score(model, tok, reqs, scoring="cloze", normalize=normalize, log_softmax=False, progress=False)
        alone = score(model, tok, reqs, scoring="cloze", normalize=normalize, log_softmax=False, share_prefix=False,
                      progress=False)
        for a, b, req in zip(shared, alone, reqs):
            np.testing.assert_allclose(a, b, atol=1e-4)
            np.testing.assert_allclose(a, _direct(model, tok, req, normalize), atol=1e-4)


@pytest.mark.parametrize("normalize", ["char", "pmi"])
def test_training_batches_carry_the_normalisation(tiny, normalize: str) -> None:
    """The trainer's collator and the scorer's differentiable forward give the evaluation scores."""
    from calibtune.training import MCCollator, MCTrainDataset

    model, tok = tiny
    scorer = ClozeScorer(normalize=normalize)
    data = MCTrainDataset(scorer.encode(tok, REQUESTS), [0, 1, 2])
    batch = MCCollator(scorer)([data[i] for i in range(3)])
    batch = {k: v for k, v in batch.items() if k not in ("labels", "known")}
    with torch.no_grad():
        scores = scorer.forward(model, batch).double().numpy()
    for row, req in zip(scores, REQUESTS):
        np.testing.assert_allclose(row[: len(req.choices)], _direct(model, tok, req, normalize), atol=1e-5)
        assert np.isneginf(row[len(req.choices):]).all()


def test_bad_normalisation_and_empty_option(tiny) -> None:
    model, tok = tiny
    with pytest.raises(ValueError, match="normalize"):
        ClozeScorer(normalize="tokens")
    with pytest.raises(ValueError, match="empty option text cannot be normalised per char"):
        ClozeScorer(normalize="char").encode(tok, [ScoringRequest("Q: x\nA:", [" ", " cat"])])


# ------------------------------------------------------------------------------------------------------
# The embedded SmolLM2 against lm-eval 0.4.13 on the same 40 ARC-Easy questions


def _lm_eval_rows(task: str) -> list[dict]:
    path = DATA / f"samples_{task}_{RUN}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _items(rows: list[dict]) -> list[MCItem]:
    return [MCItem(id=r["doc"]["id"], question=r["doc"]["question"], options=tuple(r["doc"]["choices"]["text"]),
                   gold=int(r["target"]), source="arc-easy") for r in rows]


@pytest.mark.slow
@pytest.mark.parametrize("normalize, task, metric", [("sum", "arc_easy_local", "acc"),
                                                     ("char", "arc_easy_local", "acc_norm"),
                                                     ("byte", "arc_easy_local_pmi", "acc_bytes"),
                                                     ("pmi", "arc_easy_local_pmi", "acc_mutual_info")])
def test_smollm2_matches_lm_eval_item_by_item(smollm2, normalize: str, task: str, metric: str) -> None:
    """calibtune's cloze (blob template = lm-eval's arc_easy prompt) gives lm-eval's per-item 0/1 value of
    the metric and its scores, within float32 noise."""
    model, tok = smollm2
    rows = _lm_eval_rows(task)
    items = _items(rows)
    requests = build_requests(items, Template("blob"), "cloze")
    for req, r in zip(requests, rows):  # the very prompts lm-eval scored
        args = list(r["arguments"].values())[: len(req.choices)]
        assert [(a["arg_0"], a["arg_1"]) for a in args] == [(req.prompt, c) for c in req.choices]
    got = score(model, tok, requests, scoring="cloze", normalize=normalize, log_softmax=False, progress=False)
    for g, r, item in zip(got, rows, items):
        lls = np.array([float(x[0]) for x in r["filtered_resps"]])
        k = len(item.options)
        if normalize == "char":
            theirs = lls[:k] / np.array([len(o) for o in item.options])
        elif normalize == "byte":
            theirs = lls[:k] / np.array([len(o.encode()) for o in item.options])
        elif normalize == "pmi":
            theirs = lls[:k] - lls[k:]
        else:
            theirs = lls[:k]
        np.testing.assert_allclose(g, theirs, atol=2e-3 if normalize in ("sum", "pmi") else 2e-4)
        assert float(int(np.argmax(g)) == item.gold) == r[metric], (item.id, g, theirs)


def test_registry_arc_easy_renders_lm_eval_prompts() -> None:
    """calibtune's own ARC-Easy loader (``arc-easy:test``, items by id) gives exactly the prompts and
    continuations lm-eval scored, so ``--data arc-easy:test --normalize char`` is lm-eval's acc_norm item by
    item (the SmolLM2 test above)."""
    import os

    from calibtune.data import load_dataset

    data_dir = Path(os.environ.get("CALIBTUNE_DATA_DIR") or Path(__file__).parents[2] / "shared" / "data")
    if not (data_dir / "arc").is_dir():
        pytest.skip(f"no ARC data under {data_dir}")
    rows = _lm_eval_rows("arc_easy_local")
    by_id = {it.id: it for it in load_dataset("arc-easy:test", data_dir=data_dir).items}
    items = [by_id[r["doc"]["id"]] for r in rows]
    assert [it.gold for it in items] == [int(r["target"]) for r in rows]
    for req, r in zip(build_requests(items, Template("blob"), "cloze"), rows):
        assert [(a["arg_0"], a["arg_1"]) for a in r["arguments"].values()] == [(req.prompt, c) for c in req.choices]


def test_eval_cli_normalize_char(tmp_path: Path, tiny_model_dir: Path) -> None:
    """``calibtune eval --normalize char`` writes the softmax of the per-character scores."""
    from typer.testing import CliRunner

    from calibtune.cli import app
    from calibtune.models import load_model

    rows = [{"id": "a", "question": "What is the capital of France?", "options": ["Paris", "Berlin", "Rome"],
             "answer": 0}, {"id": "b", "question": "Which is a pet?", "options": ["cat", "fish bird"], "answer": 0}]
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = CliRunner().invoke(app, ["eval", "--model", str(tiny_model_dir), "--data", str(data), "--normalize", "char",
                                   "--out", str(tmp_path / "run"), "--no-progress"])
    assert res.exit_code == 0, res.output
    written = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    model, tok = load_model(str(tiny_model_dir))
    for row, r in zip(written, rows):
        req = ScoringRequest(f"Question: {r['question']}\nAnswer:", [f" {o}" for o in r["options"]])
        direct = _direct(model, tok, req, "char")
        np.testing.assert_allclose(row["probs"], np.exp(direct - np.logaddexp.reduce(direct)), atol=1e-5)
    res = CliRunner().invoke(app, ["eval", "--model", str(tiny_model_dir), "--data", str(data), "--normalize", "chars",
                                   "--out", str(tmp_path / "bad"), "--no-progress"])
    assert res.exit_code == 2 and "'--normalize'" in res.output  # refused by the flag's choices, before any work
    assert "'chars' is not one of 'sum', 'mean', 'char', 'byte', 'pmi'" in res.output
