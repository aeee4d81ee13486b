"""Prompt templates: exact texts (papers.md §1.6, §2.7), labels, k-shot exemplars, user files."""

from __future__ import annotations

from pathlib import Path

import pytest

from calibtune.data import MCItem
from calibtune.prompts import build_requests, get_template, option_labels

ITEM = MCItem(id="q1", question="What is the capital of France?", options=("Paris", "Berlin", "Rome"), gold=0,
              source="t")
BOOL = MCItem(id="b1", question="is water wet", options=("true", "false"), gold=0, context="Water is a liquid.",
              answer_format="boolean", source="t")


def test_blob_letter_and_cloze() -> None:
    prompt, choices = get_template("blob").render(ITEM, "letter")
    assert prompt == ("Return the label of the correct answer for the question below.\n\n"
                      "Question: What is the capital of France?\nChoices:\nA) Paris\nB) Berlin\nC) Rome\nAnswer:")
    assert choices == (" A", " B", " C")
    prompt, choices = get_template("blob").render(ITEM, "cloze")
    assert prompt == "Question: What is the capital of France?\nAnswer:"
    assert choices == (" Paris", " Berlin", " Rome")


def test_blob_boolq() -> None:
    prompt, choices = get_template("blob").render(BOOL, "letter")
    assert prompt == ("Read the passage below and answer the question with the words 'true' or 'false'.\n\n"
                      "Passage: Water is a liquid.\nQuestion: is water wet\nAnswer (true or false):")
    assert choices == (" true", " false")


def test_cft_is_verbatim() -> None:
    prompt, choices = get_template("cft").render(ITEM, "letter")
    assert prompt == ("### Question: Question: What is the capital of France?\n\nOptions:\nA. Paris\nB. Berlin\n"
                      "C. Rome\n\nAnswer with only a single letter:\n ### Answer:")
    assert choices == ("A", "B", "C")


def test_labels_up_to_26() -> None:
    many = MCItem(id="m", question="q", options=tuple(f"o{i}" for i in range(26)), gold=25)
    assert option_labels(many)[-1] == "Z"
    too_many = MCItem(id="m", question="q", options=tuple(f"o{i}" for i in range(27)), gold=0)
    with pytest.raises(ValueError, match="27 options"):
        option_labels(too_many)


def test_chat_needs_a_chat_template(tokenizer) -> None:
    with pytest.raises(ValueError, match="chat template"):
        get_template("chat", tokenizer).render(ITEM, "letter")


def test_k_shot_is_seeded_and_never_uses_the_item() -> None:
    pool = [MCItem(id=f"p{i}", question=f"Question {i}?", options=("x", "y"), gold=i % 2) for i in range(6)]
    pool.append(ITEM)
    a = build_requests([ITEM], get_template("blob"), "cloze", shots=3, pool=pool, seed=1)
    b = build_requests([ITEM], get_template("blob"), "cloze", shots=3, pool=pool, seed=1)
    c = build_requests([ITEM], get_template("blob"), "cloze", shots=3, pool=pool, seed=2)
    assert a == b and a != c
    text = a[0].prompt
    assert text.count("Question:") == 4 and text.count("capital of France") == 1
    assert text.endswith("Question: What is the capital of France?\nAnswer:")
    shot = text.split("\n\n")[0]  # a solved exemplar ends with its gold answer
    k = int(shot.split("Question ")[1].split("?")[0])
    assert shot.endswith(" x" if k % 2 == 0 else " y")
    with pytest.raises(ValueError, match="exemplar pool"):
        build_requests([ITEM], get_template("blob"), "cloze", shots=1, pool=None)


def test_user_template_file(tmp_path: Path) -> None:
    f = tmp_path / "mine.txt"
    f.write_text("Q: {question}\n{options}\nA:")
    prompt, choices = get_template(str(f)).render(ITEM, "letter")
    assert prompt == "Q: What is the capital of France?\nA. Paris\nB. Berlin\nC. Rome\nA:" and choices[0] == " A"
    bad = tmp_path / "bad.txt"
    bad.write_text("{nope}")
    with pytest.raises(ValueError, match="placeholder"):
        get_template(str(bad))
    with pytest.raises(ValueError, match="unknown template"):
        get_template("no-such-template")
