"""Tests for calibtune.data: real files under the shared data dir (counts and example rows from
its PROVENANCE.md), generic file loaders, sub-sampling, option shuffling and error reporting."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from calibtune import data as D
from calibtune.data import DataError, MCItem, OpenItem, exemplar_pool, load_dataset

# The fallback lives here, not in the library: the library requires an explicit dir or the env var.
DATA_DIR = Path(os.environ.get("CALIBTUNE_DATA_DIR") or Path(__file__).parents[1].parent / "shared" / "data")
requires_data = pytest.mark.skipif(not (DATA_DIR / "PROVENANCE.md").is_file(), reason=f"no shared data at {DATA_DIR}")

_cache: dict[str, D.Dataset] = {}


def load(spec: str, **kw) -> D.Dataset:
    """Load a registry data set from DATA_DIR (plain loads cached: several tests reuse them)."""
    if kw:
        return load_dataset(spec, data_dir=DATA_DIR, **kw)
    if spec not in _cache:
        _cache[spec] = load_dataset(spec, data_dir=DATA_DIR)
    return _cache[spec]


def by_id(spec: str) -> dict[str, MCItem | OpenItem]:
    return {it.id: it for it in load(spec)}


COUNTS = {
    "mmlu:dev": 285, "mmlu:val": 1531, "mmlu:test": 14042,
    "arc-easy:train": 2251, "arc-easy:dev": 570, "arc-easy:test": 2376,
    "arc-challenge:train": 1119, "arc-challenge:dev": 299, "arc-challenge:test": 1170,
    "openbookqa:train": 4957, "openbookqa:dev": 500, "openbookqa:test": 500,
    "commonsenseqa:train": 9741, "commonsenseqa:dev": 1221,
    "sciq:test": 1000, "medmcqa:dev": 4183, "pubmedqa:test": 500, "pubmedqa:train": 500,
    "logiqa:eval": 651, "logiqa:test": 651, "cosmosqa:dev": 2985, "piqa:dev": 1838,
    "boolq:val": 3270, "winogrande:dev": 1267, "triviaqa:test": 3000,
    "nq-open:dev": 3610, "nq-open:efficientqa-dev": 1800, "nq-open:efficientqa-test": 1769,
    "entity-questions:dev": 22068, "entity-questions:test": 22075,
}  # fmt: skip


# ---------------------------------------------------------------------------------- real data


@requires_data
@pytest.mark.parametrize("spec", sorted(COUNTS))
def test_counts_match_provenance(spec: str) -> None:
    ds = load(spec)
    assert ds.name == spec
    assert len(ds) == COUNTS[spec]
    assert ds.n_skipped == 0
    assert len({it.id for it in ds}) == len(ds)
    for it in ds:
        if isinstance(it, MCItem):
            assert len(it.options) >= 2 and 0 <= it.gold < len(it.options)
            assert it.question and all(it.options)
        else:
            assert it.question and it.answers


@requires_data
def test_default_splits_aliases_and_subsets() -> None:
    assert load_dataset("commonsenseqa", data_dir=DATA_DIR).name == "commonsenseqa:dev"
    assert load_dataset("boolq:dev", data_dir=DATA_DIR).name == "boolq:val"
    assert load_dataset("arc-challenge:val", data_dir=DATA_DIR).name == "arc-challenge:dev"
    assert load_dataset("arc-challenge:validation", data_dir=DATA_DIR).name == "arc-challenge:dev"
    phys = load_dataset("mmlu/high_school_physics:val", data_dir=DATA_DIR)
    assert {it.subject for it in phys} == {"high_school_physics"} and len(phys) == 17
    two = load_dataset("mmlu/business_ethics,marketing:test", data_dir=DATA_DIR)
    assert {it.subject for it in two} == {"business_ethics", "marketing"}
    p19 = load_dataset("entity-questions/P19:test", data_dir=DATA_DIR)
    assert {it.subject for it in p19} == {"P19"}
    assert sum(len(load_dataset(f"mmlu/{s}:test", data_dir=DATA_DIR)) for s in ("anatomy", "virology")) == len(
        load_dataset("mmlu/anatomy,virology:test", data_dir=DATA_DIR)
    )


@requires_data
def test_bad_specs_name_valid_choices() -> None:
    with pytest.raises(DataError, match="no public answers"):
        load("commonsenseqa:test")
    with pytest.raises(DataError, match="arc-easy:train|dev|test"):
        load("no-such-set")
    with pytest.raises(DataError, match="valid: train, dev, test"):
        load("arc-easy:xx")
    with pytest.raises(DataError, match="high_school_physics"):
        load("mmlu/no_such_subject:test")
    assert "mmlu" in D.DATASETS and D.DATASETS["nq-open"].kind == "open"


@requires_data
def test_spot_checks_against_provenance_examples() -> None:
    mmlu = load("mmlu/abstract_algebra:test")[0]
    assert mmlu.question.startswith("Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18))")
    assert (mmlu.options, mmlu.gold, mmlu.subject) == (("0", "4", "2", "6"), 1, "abstract_algebra")

    arc = by_id("arc-challenge:test")["Mercury_7175875"]
    assert arc.question.startswith("An astronomer observes that a planet rotates faster")
    assert arc.options[2] == "Planetary days will become shorter." and arc.gold == 2 and len(arc.options) == 4

    csqa = by_id("commonsenseqa:dev")["1afa02df02c908a558b4036e80242fac"]
    assert csqa.options == ("bank", "library", "department store", "mall", "new york") and csqa.gold == 0

    obqa = by_id("openbookqa:test")["8-343"]
    assert obqa.options == ("make more phone calls", "quit eating lunch out", "buy less with monopoly money",
                            "have lunch with friends") and obqa.gold == 1  # fmt: skip

    sciq = by_id("sciq:test")["0"]
    assert sciq.options == ("antioxidants", "Oxygen", "oxidants", "residues") and sciq.gold == 2

    med = load("medmcqa:dev")[0]
    assert med.question == "Which of the following is not true for myelinated nerve fibers:" and med.gold == 0
    assert med.options[0] == "Impulse through myelinated fibers is slower than non-myelinated fibers"
    assert med.options[3].startswith("Local anesthesia")  # only the one "D. " label prefix is removed

    pubmed = {**by_id("pubmedqa:test"), **by_id("pubmedqa:train")}["21645374"]
    assert pubmed.question.startswith("Do mitochondria play a role in remodelling lace plant leaves")
    assert pubmed.options == ("yes", "no", "maybe") and pubmed.gold == 0
    assert pubmed.context.startswith("Programmed cell death (PCD) is")
    assert set(by_id("pubmedqa:test")).isdisjoint(by_id("pubmedqa:train"))

    logiqa = load("logiqa:test")[0]
    assert logiqa.context.startswith("In the planning of a new district in a township")
    assert logiqa.question == "Based on the above statement, which of the following can be derived?"
    assert logiqa.options[0] == "Civic Park is north of the administrative service area" and logiqa.gold == 0

    cosmos = load("cosmosqa:dev")[0]
    assert cosmos.question == "Why is this person asking about divorce ?" and cosmos.gold == 1
    assert cosmos.context.startswith("Do i need to go for a legal divorce ?")

    piqa = by_id("piqa:dev")["c36c629e-12e9-43cc-8936-e1a96d869ab0"]
    assert piqa.question == "How do I ready a guinea pig cage for it's new occupants?" and piqa.gold == 0
    assert "ripped paper strips" in piqa.options[0] and "ripped jeans material" in piqa.options[1]

    boolq = load("boolq:val")[0]
    assert boolq.question == "does ethanol take more energy make that produces"
    assert (boolq.options, boolq.gold, boolq.answer_format) == (("true", "false"), 1, "boolean")
    assert boolq.context.startswith("Ethanol fuel -- All biomass goes through")

    trivia = load("triviaqa:test")[0]
    assert trivia.question == "Brunswick, Lancastrian and Pearl Pickler are types of which vegetable?"
    assert trivia.answers[0] == "Onion" and "Allium cepa" in trivia.answers

    nq = load("nq-open:dev")[0]
    assert nq.question == "when was the last time anyone was on the moon"
    assert nq.answers == ("14 December 1972 UTC", "December 1972")

    eq = load_dataset("entity-questions/P19:test", data_dir=DATA_DIR)[0]
    assert (eq.question, eq.answers, eq.subject) == ("Where was Luke Prokopec born?", ("Blackwood",), "P19")


@requires_data
def test_winogrande_reconstruction() -> None:
    ds = load("winogrande:dev")
    first = ds[0]
    assert first.question == "Sarah was a much better surgeon than Maria so _ always got the easier cases."
    assert first.options == ("Sarah", "Maria") and first.gold == 1
    # fillers sharing a prefix ("home"/"house") are not cut mid-word
    home = next(it for it in ds if set(it.options) == {"home", "house"})
    assert "because the _ " in home.question
    assert all(it.question.count("_") >= 1 and len(it.options) == 2 for it in ds)
    labels = (DATA_DIR / "winogrande" / "dev-labels.lst").read_text().split()
    assert [str(it.gold + 1) for it in ds] == labels


@requires_data
def test_arc_numeric_labels_and_option_counts() -> None:
    item = by_id("arc-easy:test")["NYSEDREGENTS_2015_8_28"]  # labels 1-4, answerKey "2"
    assert item.options == ("air", "elements", "water", "soil") and item.gold == 1
    sizes = {len(it.options) for it in load("arc-challenge:test")}
    assert sizes == {3, 4, 5}


@requires_data
def test_logiqa_options_ordered_by_printed_label() -> None:
    # Test.txt block 109 prints options in the order A, C, B, D; the answer "b" means label B.
    item = load("logiqa:test")[108]
    assert item.question.startswith("Now we need to open the No.1 valve")
    assert item.options[item.gold] == "No.2 valve and No.3 valve."


@requires_data
def test_openbookqa_repeated_marker_stays_in_option_text() -> None:
    item = by_id("openbookqa:train")["12-1145"]
    assert len(item.options) == 4 and item.options[3] == "baby birds chewing worms (D) mother dogs nursing their pups"


@requires_data
def test_derived_arc_copy_has_wrong_gold_for_numbered_options() -> None:
    """PROVENANCE caveat: llm_foundry's ARC-Easy gold is off for 71 numbered-option items; the
    generic loader with a field mapping reads it, and the official copy exposes the mismatch."""
    derived = load_dataset(
        str(DATA_DIR / "arc" / "llm_foundry" / "arc_easy.jsonl"),
        fields={"question": "query", "options": "choices", "gold": "gold"},
    )
    official = load("arc-easy:test")
    assert len(derived) == len(official) == 2376
    assert all(d.question == "Question: " + o.question for d, o in zip(derived, official))
    wrong = [o for d, o in zip(derived, official) if d.options[d.gold] != o.options[o.gold]]
    assert len(wrong) == 71


@requires_data
def test_exemplar_pool() -> None:
    assert exemplar_pool("mmlu:test", data_dir=DATA_DIR).name == "mmlu:dev"
    pool = exemplar_pool("mmlu/anatomy:test", data_dir=DATA_DIR)
    assert pool.name == "mmlu/anatomy:dev" and len(pool) == 5
    assert exemplar_pool("arc-easy:test", data_dir=DATA_DIR).name == "arc-easy:train"
    assert exemplar_pool("openbookqa", data_dir=DATA_DIR).name == "openbookqa:train"
    assert exemplar_pool("commonsenseqa:dev", data_dir=DATA_DIR).name == "commonsenseqa:train"
    assert exemplar_pool("pubmedqa:test", data_dir=DATA_DIR).name == "pubmedqa:train"
    assert exemplar_pool("boolq", data_dir=DATA_DIR) is None
    assert exemplar_pool("./x.jsonl") is None


@requires_data
def test_limit_is_seeded_deterministic_and_order_preserving() -> None:
    full_ids = [it.id for it in load("arc-easy:test")]
    a = [it.id for it in load("arc-easy:test", limit=50, seed=1)]
    b = [it.id for it in load("arc-easy:test", limit=50, seed=1)]
    c = [it.id for it in load("arc-easy:test", limit=50, seed=2)]
    assert a == b and a != c and len(a) == 50
    positions = [full_ids.index(i) for i in a]
    assert positions == sorted(positions)
    assert len(load("sciq:test", limit=10_000)) == 1000


@requires_data
def test_shuffle_options_keeps_gold_text_and_is_independent_of_limit() -> None:
    plain = by_id("arc-easy:test")
    shuffled = load("arc-easy:test", shuffle_options=True, seed=3)
    moved = 0
    for it in shuffled:
        orig = plain[it.id]
        assert sorted(it.options) == sorted(orig.options)
        assert it.options[it.gold] == orig.options[orig.gold]
        moved += it.options != orig.options
    assert moved > len(shuffled) // 2
    subset = load("arc-easy:test", shuffle_options=True, seed=3, limit=20)
    full = {it.id: it for it in shuffled}
    assert all(full[it.id] == it for it in subset)
    other_seed = load("arc-easy:test", shuffle_options=True, seed=4)
    assert any(x.options != y.options for x, y in zip(shuffled, other_seed))


# ---------------------------------------------------------------------------------- generic files


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_generic_jsonl_defaults_and_field_mapping(tmp_path: Path) -> None:
    plain = write_jsonl(tmp_path / "plain.jsonl", [
        {"id": "q1", "question": "2+2?", "options": ["3", "4"], "answer": 1, "subject": "math"},
        {"question": "Sky?", "options": ["blue", "green", "red"], "label": "A", "context": "Look up."},
        {"question": "Capital of France?", "options": ["Rome", "Paris"], "gold": "Paris"},
    ])  # fmt: skip
    ds = load_dataset(str(plain))
    assert [it.gold for it in ds] == [1, 0, 1]
    assert ds[0].id == "q1" and ds[0].subject == "math" and ds[1].id == "plain:1" and ds[1].context == "Look up."
    mapped = write_jsonl(tmp_path / "mapped.jsonl", [{"q": "Best?", "choices": ["x", "y"], "answer": "B", "key": "k"}])
    ds = load_dataset(str(mapped), fields={"question": "q", "options": "choices", "gold": "answer", "id": "key"})
    assert ds[0] == MCItem(id="k", question="Best?", options=("x", "y"), gold=1, source="mapped")
    open_qa = write_jsonl(tmp_path / "open.jsonl", [{"question": "Who?", "answers": ["Ada", "Ada Lovelace"]}])
    assert load_dataset(str(open_qa))[0].answers == ("Ada", "Ada Lovelace")


def test_generic_csv_with_option_columns(tmp_path: Path) -> None:
    (tmp_path / "mine.csv").write_text('Q,opt1,opt2,opt3,ans\n"Pick, one",a,b,c,2\nSecond,d,e,f,C\n')
    ds = load_dataset(str(tmp_path / "mine.csv"), fields={"question": "Q", "options": "opt1,opt2,opt3", "gold": "ans"})
    got = [(it.question, it.options, it.gold) for it in ds]
    assert got == [("Pick, one", ("a", "b", "c"), 2), ("Second", ("d", "e", "f"), 2)]
    (tmp_path / "letters.tsv").write_text("question\tA\tB\tanswer\nYes?\tyes\tno\tA\n")
    assert load_dataset(str(tmp_path / "letters.tsv"))[0].options == ("yes", "no")
    (tmp_path / "listcell.csv").write_text("question,options,label\nWhich?,\"['p', 'q']\",1\n")
    assert load_dataset(str(tmp_path / "listcell.csv"))[0].options == ("p", "q")


BAD_JSONL = [
    ({"options": ["a", "b"], "answer": 0}, "question", "missing"),
    ({"question": "  ", "options": ["a", "b"], "answer": 0}, "question", "empty"),
    ({"question": "Q", "options": ["a"], "answer": 0}, "options", "at least 2"),
    ({"question": "Q", "options": ["a", ""], "answer": 0}, "options[1]", "empty"),
    ({"question": "Q", "options": ["a", "b"], "answer": 2}, "answer", "out of range"),
    ({"question": "Q", "options": ["a", "b"], "answer": "zz"}, "answer", "neither"),
    ({"question": "Q", "options": ["a", "b"]}, "gold", "missing"),
    ({"id": "dup", "question": "Q", "options": ["a", "b"], "answer": 0}, "id", "duplicate"),
]


@pytest.mark.parametrize(("row", "field", "what"), BAD_JSONL)
def test_generic_jsonl_errors_name_file_line_field(tmp_path: Path, row: dict, field: str, what: str) -> None:
    good = {"id": "dup", "question": "ok", "options": ["a", "b"], "answer": 0}
    path = write_jsonl(tmp_path / "bad.jsonl", [good, "", row])  # blank line 2 is not a row
    with pytest.raises(DataError) as info:
        load_dataset(str(path))
    msg = str(info.value)
    assert "bad.jsonl" in msg and "line 3" in msg and f"field '{field}'" in msg and what in msg
    assert (info.value.line, info.value.field) == (3, field)


def test_bad_json_and_ragged_csv(tmp_path: Path) -> None:
    good = {"question": "Q", "options": ["a", "b"], "answer": 0}
    path = write_jsonl(tmp_path / "broken.jsonl", [good, '{"question": '])
    with pytest.raises(DataError, match=r"broken\.jsonl, line 2: invalid JSON"):
        load_dataset(str(path))
    (tmp_path / "ragged.csv").write_text('question,A,B,answer\nQ1,a,b,A\n"multi\nline",a,b,B\nQ3,a\n')
    with pytest.raises(DataError, match=r"ragged\.csv, line 5, field 'B': missing \(row has 2 of 4 columns\)"):
        load_dataset(str(tmp_path / "ragged.csv"))
    (tmp_path / "empty_opt.csv").write_text("question,A,B,answer\nQ1,a,,A\n")
    with pytest.raises(DataError, match=r"empty_opt\.csv, line 2, field 'B': empty"):
        load_dataset(str(tmp_path / "empty_opt.csv"))


def test_generic_json_list_names_item_and_field(tmp_path: Path) -> None:
    (tmp_path / "list.json").write_text(json.dumps([{"question": "Q", "options": ["a", "b"], "gold": 1}, {"question": ""}]))
    with pytest.raises(DataError, match=r"list\.json, field '\[1\]\.question': empty"):
        load_dataset(str(tmp_path / "list.json"))
    assert load_dataset(str(tmp_path / "list.json"), skip_invalid=True).n_skipped == 1


def test_skip_invalid_counts_rows(tmp_path: Path) -> None:
    rows = [{"question": f"Q{i}", "options": ["a", "b"], "answer": i % 3} for i in range(6)]  # i%3==2 invalid
    path = write_jsonl(tmp_path / "some_bad.jsonl", [*rows, "{not json"])
    ds = load_dataset(str(path), skip_invalid=True)
    assert (len(ds), ds.n_skipped) == (4, 3)
    assert [it.id for it in ds] == ["some_bad:0", "some_bad:1", "some_bad:3", "some_bad:4"]
    all_bad = write_jsonl(tmp_path / "all_bad.jsonl", [{"question": "Q", "options": ["a"], "answer": 0}])
    with pytest.raises(DataError, match="no items"):
        load_dataset(str(all_bad), skip_invalid=True)


def test_spec_and_environment_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match="file not found"):
        load_dataset(str(tmp_path / "missing.jsonl"))
    with pytest.raises(DataError, match="unknown key"):
        load_dataset(str(tmp_path / "x.jsonl"), fields={"questoin": "q"})
    monkeypatch.delenv(D.ENV_VAR, raising=False)
    with pytest.raises(DataError, match="CALIBTUNE_DATA_DIR"):
        load_dataset("sciq")
    with pytest.raises(DataError, match="does not exist"):
        D.data_dir(tmp_path / "nope")
    monkeypatch.setenv(D.ENV_VAR, str(tmp_path))
    assert D.data_dir() == tmp_path
    with pytest.raises(DataError, match="fields="):
        load_dataset("hf:someone/something:test")
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(DataError, match="'datasets' package"):
        load_dataset("hf:someone/something:test", fields={"question": "q"})


# ------------------------------------------------------------- registry loaders on broken copies


def fake_dir(tmp_path: Path, rel: str, text: str) -> Path:
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return tmp_path


OBQA_HEADER = "ID\tQuestion Stem\tChoices\tComplete Question\tAnswer Key\n"
OBQA_ROW = "1-1\tStem\t(A) a (B) b (C) c (D) d\tStem (A) a (B) b (C) c (D) d\t{key}\n"
ARC_CHOICES = [{"text": "a", "label": "1"}, {"text": "b", "label": "2"}]
ARC_ROW = {"id": "x1", "question": {"stem": "S?", "choices": ARC_CHOICES}, "answerKey": "2"}
OBQA_TSV = "openbookqa/Main/test.tsv"
ARC_JSONL = "arc/arc_easy/official/test.jsonl"
LOGIQA_BLOCK = "\n{ans}\nContext.\nQuestion?\nA.one\nB.two\nC.three\nD.four\n"
BOOLQ_ROW = {"question": "q", "passage": "p", "idx": 0, "label": "true"}

REGISTRY_ERRORS = [
    ("openbookqa:test", OBQA_TSV, OBQA_HEADER + OBQA_ROW.format(key="A") + OBQA_ROW.replace("1-1", "1-2").format(key="E"),
     "line 3, field 'Answer Key': 'E' is not one of the option labels A-D"),
    ("openbookqa:test", OBQA_TSV, OBQA_HEADER + OBQA_ROW.format(key="A") + "1-2\tStem\t(A) a (C) b\tx\tA\n",
     "line 3, field 'Choices': cannot find option marker (B)"),
    ("arc-easy:test", ARC_JSONL, json.dumps(ARC_ROW) + "\n" + json.dumps({**ARC_ROW, "answerKey": "5"}),
     "line 2, field 'answerKey': '5' is not one of the option labels 1-2"),
    ("arc-easy:test", ARC_JSONL, json.dumps(ARC_ROW) + "\n" + json.dumps(ARC_ROW),
     "line 2, field 'id': duplicate id 'x1'"),
    ("mmlu:test", "mmlu/test/anatomy_test.csv", "Q,a,b,c,d,A\nQ2,a,b,c,d\n", "line 2, field 'answer': missing"),
    ("mmlu:test", "mmlu/test/anatomy_test.csv", "Q,a,b,c,d,A\nQ2,a,b,c,d,F\n", "line 2, field 'answer': 'F' is not one"),
    ("logiqa:test", "logiqa/Test.txt", LOGIQA_BLOCK.format(ans="a") + LOGIQA_BLOCK.format(ans="e"),
     "line 10, field 'answer': 'E' is not one"),
    ("boolq:val", "boolq/val.jsonl", json.dumps(BOOLQ_ROW) + "\n" + json.dumps({**BOOLQ_ROW, "idx": 1, "label": "yes"}),
     "line 2, field 'label': 'yes' is not one of the option labels true-false"),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "rel", "text", "expected"), REGISTRY_ERRORS)
def test_registry_loader_errors(tmp_path: Path, spec: str, rel: str, text: str, expected: str) -> None:
    root = fake_dir(tmp_path, rel, text)
    with pytest.raises(DataError) as info:
        load_dataset(spec, data_dir=root)
    assert str(info.value).startswith(f"{rel}, {expected}")
    assert len(load_dataset(spec, data_dir=root, skip_invalid=True)) == 1


def test_line_aligned_label_files(tmp_path: Path) -> None:
    piqa = {"id": "p1", "goal": "g", "sol1": "a", "sol2": "b"}
    root = fake_dir(tmp_path, "piqa/dev.jsonl", json.dumps(piqa) + "\n" + json.dumps({**piqa, "id": "p2"}) + "\n")
    fake_dir(tmp_path, "piqa/dev-labels.lst", "0\n")
    with pytest.raises(DataError, match=r"piqa/dev-labels\.lst: 1 labels for 2 questions"):
        load_dataset("piqa", data_dir=root)
    fake_dir(tmp_path, "piqa/dev-labels.lst", "0\n2\n")
    with pytest.raises(DataError, match=r"piqa/dev-labels\.lst, line 2, field 'label': 2 is out of range"):
        load_dataset("piqa", data_dir=root)

    wino = {"context_options": ["A met B so A", "A met B so B"], "continuation": "left.", "gold": 0}
    fake_dir(tmp_path, "winogrande/llm_foundry/winogrande.jsonl", json.dumps(wino) + "\n" + json.dumps(wino) + "\n")
    fake_dir(tmp_path, "winogrande/dev-labels.lst", "1\n1\n")
    assert load_dataset("winogrande", data_dir=root)[0].question == "A met B so _ left."
    fake_dir(tmp_path, "winogrande/dev-labels.lst", "1\n2\n")
    with pytest.raises(DataError, match=r"winogrande\.jsonl, line 2, field 'gold': 0 disagrees with .*dev-labels\.lst"):
        load_dataset("winogrande", data_dir=root)


def test_slices_of_one_split_are_disjoint_and_cover_it() -> None:
    a = load_dataset("winogrande:dev[0:400]", data_dir=DATA_DIR)
    b = load_dataset("winogrande:dev[400:]", data_dir=DATA_DIR)
    ids_a, ids_b = {it.id for it in a.items}, {it.id for it in b.items}
    assert len(ids_a) == 400 and len(ids_b) == 1267 - 400 and not ids_a & ids_b
    assert a.name == "winogrande:dev[0:400]"
    assert load_dataset("winogrande:dev[0:400]", data_dir=DATA_DIR, seed=5).items == a.items  # seed-independent


def test_mixture_spec_concatenates_parts() -> None:
    mix = load_dataset("openbookqa:test[0:50]+arc-challenge:test[0:30]", data_dir=DATA_DIR)
    assert len(mix.items) == 80 and mix.name == "openbookqa:test[0:50]+arc-challenge:test[0:30]"
    assert {it.source for it in mix.items} == {"openbookqa", "arc-challenge"}
    assert len(load_dataset("openbookqa:test[0:50]+arc-challenge:test[0:30]", data_dir=DATA_DIR, limit=20).items) == 20
    with pytest.raises(DataError, match="more than one part"):
        load_dataset("openbookqa:test[0:50]+openbookqa:test[40:60]", data_dir=DATA_DIR)


def test_exemplar_pool_of_a_slice() -> None:
    assert exemplar_pool("arc-challenge:test[0:100]", data_dir=DATA_DIR).name == "arc-challenge:train"
    assert exemplar_pool("winogrande:dev[0:500]", data_dir=DATA_DIR) is None
