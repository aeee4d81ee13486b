"""Letter and cloze scoring against a direct, unbatched, unpadded computation on the tiny Llama."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from calibtune.scoring import (
    ClozeScorer,
    LetterScorer,
    NonFiniteLogitsError,
    ScoringRequest,
    score,
)

LETTERS = [" A", " B", " C", " D", " E", " F", " G", " H"]
WORDS = [" Paris", " Berlin", " Madrid", " Rome", " London", " Lisbon", " Vienna", " Oslo", " cat dog", " blue fire"]
STEMS = [
    "Question: What is the capital of France?\nAnswer:",
    "Q: red?\nAnswer:",
    "Question: What is the capital of France? A B C D cat dog bird fish red green blue\nAnswer:",
    "Answer:",
    "Question: water fire stone\nAnswer:",
]


def _requests(choices: list[str], n: int = 11, seed: int = 0) -> list[ScoringRequest]:
    """Mixed prompt lengths and K = 2..len(choices) options."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = 2 + i % (len(choices) - 1)
        picked = [choices[j] for j in rng.permutation(len(choices))[:k]]
        out.append(ScoringRequest(STEMS[i % len(STEMS)] * (1 + i % 3), picked))
    return out


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text)["input_ids"]


@torch.no_grad()
def direct_letter(model, tokenizer, req: ScoringRequest) -> np.ndarray:
    """log_softmax over the label-token logits of a plain ``model(prompt_ids)``."""
    logits = model(torch.tensor([_ids(tokenizer, req.prompt)])).logits[0, -1].double()
    labels = [_ids(tokenizer, req.prompt + c)[-1] for c in req.choices]
    return torch.log_softmax(logits[labels], -1).numpy()


@torch.no_grad()
def direct_cloze(model, tokenizer, req: ScoringRequest, normalize: str = "sum") -> np.ndarray:
    """Per option, one plain forward of ``prompt+option``; sum (or mean) of the continuation log-probs."""
    prompt = _ids(tokenizer, req.prompt)
    scores = []
    for c in req.choices:
        ids = _ids(tokenizer, req.prompt + c)
        assert ids[: len(prompt)] == prompt
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        tok = [logp[j - 1, ids[j]] for j in range(len(prompt), len(ids))]
        total = sum(tok)
        scores.append(total / len(tok) if normalize == "mean" else total)
    return torch.log_softmax(torch.stack(scores), -1).numpy()


def _assert_close(got: list[np.ndarray], want: list[np.ndarray], atol: float = 1e-5) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == np.float64 and g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=atol, rtol=0)


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_letter_matches_direct(tiny, batch_size):
    model, tok = tiny
    reqs = _requests(LETTERS)
    got = score(model, tok, reqs, scoring="letter", batch_size=batch_size, progress=False)
    want = [direct_letter(model, tok, r) for r in reqs]
    _assert_close(got, want)
    assert max(np.exp(w).max() for w in want) > 0.5  # the check is not trivially uniform


@pytest.mark.parametrize("batch_size", [1, 3, 8])
@pytest.mark.parametrize("share_prompt", [True, False])
def test_cloze_matches_direct(tiny, batch_size, share_prompt):
    model, tok = tiny
    reqs = _requests(WORDS)
    got = score(model, tok, reqs, scoring="cloze", batch_size=batch_size, share_prompt=share_prompt, progress=False)
    _assert_close(got, [direct_cloze(model, tok, r) for r in reqs])


def test_cloze_mean_and_eager_attention(tiny_model_dir):
    """The packed 4D mask is built as a float additive mask for eager attention; ``mean`` divides by length."""
    from calibtune.models import load_model

    model, tok = load_model(str(tiny_model_dir))
    model.set_attn_implementation("eager")
    reqs = _requests(WORDS, n=6, seed=1)
    got = score(model, tok, reqs, scoring="cloze", normalize="mean", batch_size=4, share_prompt=True, progress=False)
    _assert_close(got, [direct_cloze(model, tok, r, "mean") for r in reqs])


def test_padding_and_order_do_not_change_probabilities(tiny):
    model, tok = tiny
    for scoring, choices in (("letter", LETTERS), ("cloze", WORDS)):
        reqs = _requests(choices, n=9, seed=2)
        alone = [score(model, tok, [r], scoring=scoring, progress=False)[0] for r in reqs]
        batched = score(model, tok, reqs, scoring=scoring, batch_size=9, progress=False)
        reversed_ = score(model, tok, reqs[::-1], scoring=scoring, batch_size=4, progress=False)[::-1]
        _assert_close(batched, alone)
        _assert_close(reversed_, alone)
        assert [len(x) for x in batched] == [len(r.choices) for r in reqs]


def test_letter_without_leading_space_and_full_vocab(tiny):
    """"A" after a newline is a different token than " A"; full_vocab scores are vocabulary log-probs."""
    model, tok = tiny
    req = ScoringRequest("Question: red?\n", ["A", "B", "C"])
    scorer = LetterScorer(full_vocab=True)
    enc = scorer.encode(tok, [req])
    assert [o[0] for o in enc[0].option_ids] == [tok.convert_tokens_to_ids(x) for x in "ABC"]
    with torch.no_grad():
        scores = scorer.forward(model, scorer.collate(enc))[0]
        vocab_logp = torch.log_softmax(model(torch.tensor([_ids(tok, req.prompt)])).logits[0, -1], -1)
    torch.testing.assert_close(scores, vocab_logp[[o[0] for o in enc[0].option_ids]], atol=1e-5, rtol=0)
    np.testing.assert_allclose(score(model, tok, [req], progress=False)[0], direct_letter(model, tok, req), atol=1e-5)


def test_multi_token_label_is_a_clear_error(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match=r"label ' xyzzy' is not a single token.*pieces \["):
        score(model, tok, [ScoringRequest("Answer:", [" A", " xyzzy"])], progress=False)


def test_cloze_when_prompt_tokens_are_not_a_prefix(tiny):
    """" Par" + "is" re-tokenises to " Paris": the context shrinks to the shared prefix."""
    model, tok = tiny
    req = ScoringRequest("Answer: Par", ["is", "rot"])
    prompt = _ids(tok, req.prompt)
    joint = _ids(tok, req.prompt + "is")
    assert joint[: len(prompt)] != prompt  # the case under test
    (enc,) = ClozeScorer().encode(tok, [req])
    n = len(enc.context_ids)
    assert enc.option_ids[0] == joint[n:]
    with torch.no_grad():
        expected = []
        for c in req.choices:
            ids = _ids(tok, req.prompt + c)
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
            expected.append(sum(logp[j - 1, ids[j]] for j in range(n, len(ids))))
    want = torch.log_softmax(torch.stack(expected), -1).numpy()
    np.testing.assert_allclose(score(model, tok, [req], scoring="cloze", progress=False)[0], want, atol=1e-5)


@pytest.mark.parametrize(
    "scorer", [LetterScorer(), LetterScorer(full_vocab=True), ClozeScorer(), ClozeScorer(share_prompt=False)]
)
def test_gradients_flow_through_forward(tiny_model_dir, scorer):
    from calibtune.models import load_model

    model, tok = load_model(str(tiny_model_dir))
    model.train()
    reqs = _requests(LETTERS if isinstance(scorer, LetterScorer) else WORDS, n=4)
    scores = scorer.forward(model, scorer.collate(scorer.encode(tok, reqs)))
    assert scores.requires_grad and scores.shape == (4, max(len(r.choices) for r in reqs))
    assert torch.isneginf(scores[0, len(reqs[0].choices) :]).all()
    loss = -torch.log_softmax(scores, -1)[:, 0].mean()
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_packed_cloze_under_gradient_checkpointing(tiny_model_dir):
    """Packing needs no KV cache, so it also works where Trainer turns the cache off."""
    from calibtune.models import load_model

    model, tok = load_model(str(tiny_model_dir))
    reqs = _requests(WORDS, n=3)
    scorer = ClozeScorer()
    batch = scorer.collate(scorer.encode(tok, reqs))
    with torch.no_grad():
        plain = scorer.forward(model, batch)
    model.gradient_checkpointing_enable()
    model.train()
    scores = scorer.forward(model, batch)
    torch.testing.assert_close(scores, plain, atol=1e-5, rtol=0)
    scores[torch.isfinite(scores)].sum().backward()
    assert model.get_input_embeddings().weight.grad is not None


@pytest.mark.parametrize("scoring", ["letter", "cloze"])
def test_nan_logits_raise_naming_the_item(tiny_model_dir, scoring):
    from calibtune.models import load_model

    model, tok = load_model(str(tiny_model_dir))
    reqs = _requests(LETTERS if scoring == "letter" else WORDS, n=5)
    reqs[3] = ScoringRequest("zz " + reqs[3].prompt, reqs[3].choices)  # "z" occurs in no other item
    with torch.no_grad():
        model.get_input_embeddings().weight[_ids(tok, "zz")[0]] = float("nan")
    with pytest.raises(NonFiniteLogitsError, match=r"item\(s\) \[3\]"):
        score(model, tok, reqs, scoring=scoring, batch_size=2, progress=False)


def test_invalid_arguments(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="scoring"):
        score(model, tok, [ScoringRequest("Answer:", [" A"])], scoring="bogus", progress=False)
    with pytest.raises(ValueError, match="normalize"):
        ClozeScorer(normalize="max")
    with pytest.raises(ValueError, match="at least one choice"):
        score(model, tok, [ScoringRequest("Answer:", [])], progress=False)
    assert score(model, tok, [], progress=False) == []


@pytest.mark.slow
def test_smollm2_cloze_prefers_the_right_answer(smollm2):
    model, tok = smollm2
    items = [
        ("What is the capital of France?", [" Paris", " Berlin", " Madrid", " Rome"], 0),
        ("Which planet is known as the Red Planet?", [" Venus", " Jupiter", " Mars", " Saturn"], 2),
        ("What do bees make?", [" milk", " silk", " wool", " honey"], 3),
    ]
    reqs = [ScoringRequest(f"Question: {q}\nAnswer:", opts) for q, opts, _ in items]
    for logp, (_, _, gold) in zip(score(model, tok, reqs, scoring="cloze", progress=False), items):
        assert int(np.argmax(logp)) == gold, logp
        np.testing.assert_allclose(np.exp(logp).sum(), 1.0, atol=1e-9)
