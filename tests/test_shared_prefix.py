"""Shared-prefix scoring (one k-shot exemplar set's keys/values computed once) equals the unshared computation."""

from __future__ import annotations

import numpy as np
import pytest

from calibtune.data import MCItem
from calibtune.prompts import Template, build_requests
from calibtune.scoring import ScoringRequest, _prefix_groups, make_scorer, score

WORDS = ["Paris", "Berlin", "Madrid", "Rome", "London", "Lisbon", "cat dog", "blue fire"]
STEMS = ["What is the capital of France?", "red?", "water fire stone", "A B C D cat dog bird fish red green blue"]


def _items(n: int, k_max: int, prefix: str, seed: int) -> list[MCItem]:
    """Mixed question lengths and K = 2..k_max options."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = 2 + i % (k_max - 1)
        options = tuple(WORDS[j] for j in rng.permutation(len(WORDS))[:k])
        out.append(MCItem(id=f"{prefix}{i}", question=STEMS[i % len(STEMS)] * (1 + i % 3), options=options,
                          gold=int(rng.integers(k))))
    return out


@pytest.mark.parametrize("scoring,share_prompt", [("letter", None), ("cloze", True), ("cloze", False)])
@pytest.mark.parametrize("k_max", [2, 3, 5])
@pytest.mark.parametrize("shots", [0, 1, 3])
def test_shared_prefix_equals_unshared(tiny, scoring, share_prompt, k_max, shots):
    model, tok = tiny
    pool = _items(6, k_max, "p", seed=1)
    items = _items(9, k_max, "x", seed=2)
    reqs = build_requests(items, Template("blob"), scoring, shots=shots, pool=pool, seed=3, exemplars="shared")
    if shots:
        assert len({r.shared_prefix for r in reqs}) == 1 and reqs[0].shared_prefix
    kw = dict(scoring=scoring, batch_size=4, share_prompt=share_prompt)
    shared = score(model, tok, reqs, share_prefix=True, progress=False, **kw)
    unshared = score(model, tok, reqs, share_prefix=False, progress=False, **kw)
    one_by_one = [score(model, tok, [r], share_prefix=False, progress=False, batch_size=1,
                        scoring=scoring, share_prompt=share_prompt)[0] for r in reqs]
    for a, b, c in zip(shared, unshared, one_by_one):
        np.testing.assert_allclose(a, b, atol=1e-4)
        np.testing.assert_allclose(a, c, atol=1e-4)


def test_shared_prefix_with_eager_attention(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    reqs = build_requests(_items(7, 4, "x", 0), Template("blob"), "cloze", shots=2, pool=_items(5, 4, "p", 1),
                          exemplars="shared")
    a = score(model, tok, reqs, scoring="cloze", batch_size=3, progress=False)
    b = score(model, tok, reqs, scoring="cloze", batch_size=3, share_prefix=False, progress=False)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=1e-4)


def test_two_groups_and_ungrouped_requests(tiny):
    model, tok = tiny
    a = [ScoringRequest("Q: red? Q: blue?\nAnswer: fire\n\nQuestion: " + s + "\nAnswer:", [" A", " B"],
                        shared_prefix="Q: red? Q: blue?\nAnswer: fire\n\n") for s in STEMS]
    b = [ScoringRequest("water stone\n\nQuestion: " + s + "\nAnswer:", [" C", " D", " A"], shared_prefix="water stone\n\n")
         for s in STEMS]
    lone = [ScoringRequest("Question: cat?\nAnswer:", [" A", " B", " C"])]
    reqs = [a[0], b[0], lone[0], *a[1:], *b[1:]]
    groups = _prefix_groups(reqs, make_scorer("letter").encode(tok, reqs))
    assert sorted(len(m) for m, _ in groups) == [1, 4, 4]
    assert all(shared > 0 for m, shared in groups if len(m) > 1)
    shared = score(model, tok, reqs, scoring="letter", batch_size=2, progress=False)
    unshared = score(model, tok, reqs, scoring="letter", batch_size=2, share_prefix=False, progress=False)
    for x, y in zip(shared, unshared):
        np.testing.assert_allclose(x, y, atol=1e-4)


def test_item_in_the_shared_set_gets_its_own_exemplars():
    pool = [MCItem(id=f"p{i}", question=f"Q{i}?", options=("a", "b"), gold=0) for i in range(5)]
    reqs = build_requests([*pool, *_items(3, 3, "x", 1)], Template("blob"), "cloze", shots=3, pool=pool,
                          exemplars="shared")
    in_set = [r for r, item in zip(reqs, pool) if f"Question: {item.question}" in r.prompt.rsplit("\n\n", 1)[0]]
    assert len(in_set) == 0  # an item never sees itself as an exemplar
    private = [r for r in reqs[:5] if r.shared_prefix == ""]
    assert len(private) == 3  # the three pool items in the shared set got their own draws
    assert len({r.shared_prefix for r in reqs if r.shared_prefix}) == 1


def test_per_item_exemplars_unchanged_by_default():
    pool = _items(8, 3, "p", 0)
    items = _items(5, 3, "x", 1)
    reqs = build_requests(items, Template("blob"), "cloze", shots=2, pool=pool, seed=7)
    assert all(r.shared_prefix == "" for r in reqs)
    assert len({r.prompt.split("\n\n")[0] for r in reqs}) > 1
