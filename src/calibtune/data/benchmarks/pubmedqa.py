"""PubMedQA PQA-L (JSON keyed by PMID): yes/no/maybe questions with the abstract as context."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..items import DataError, MCItem, _get, _gold_label, _parsed, _Parsed, _Row, _text
from ..readers import _json_value
from ..registry import register_benchmark

_PUBMEDQA_OPTIONS = ("yes", "no", "maybe")


@register_benchmark("pubmedqa", splits=("train", "test"), default_split="test", pool_splits=("train",),
                    description="PubMedQA PQA-L, yes/no/maybe with context")
def _load_pubmedqa(root: Path, split: str, subsets: tuple[str, ...] | None) -> Iterator[_Parsed]:
    """PQA-L: test = the 500 PMIDs of test_ground_truth.json, train = the other 500 (file order).

    Options are ("yes", "no", "maybe"); context = the abstract's CONTEXTS joined by newlines.
    """
    src, truth_src = "pubmedqa/data/ori_pqal.json", "pubmedqa/data/test_ground_truth.json"
    data, truth = _json_value(root / src, src), _json_value(root / truth_src, truth_src)
    for doc, s in ((data, src), (truth, truth_src)):
        if not isinstance(doc, dict):
            raise DataError("expected a JSON object keyed by PMID", path=s)
    pmids = list(truth) if split == "test" else [p for p in data if p not in truth]

    def records() -> Iterator[tuple[_Row, Any]]:
        for index, pmid in enumerate(pmids):
            row = _Row(src, None, index, field_prefix=f"{pmid}.")
            missing = row.error(None, f"PMID {pmid} of {truth_src} is missing")
            yield row, (pmid, data[pmid]) if pmid in data else missing

    def parse(row: _Row, pmid_rec: tuple[str, Any]) -> MCItem:
        pmid, rec = pmid_rec
        decision = _get(row, rec, "final_decision")
        if split == "test" and truth[pmid] != decision:
            raise row.error("final_decision", f"{decision!r} disagrees with test_ground_truth.json ({truth[pmid]!r})")
        contexts = _get(row, rec, "CONTEXTS")
        if not isinstance(contexts, list) or not contexts:
            raise row.error("CONTEXTS", "expected a non-empty list of passages")
        return MCItem(
            id=pmid,
            question=_text(row, _get(row, rec, "QUESTION"), "QUESTION"),
            options=_PUBMEDQA_OPTIONS,
            gold=_gold_label(row, decision, _PUBMEDQA_OPTIONS, "final_decision"),
            context="\n".join(_text(row, c, f"CONTEXTS[{k}]") for k, c in enumerate(contexts)),
            source="pubmedqa",
        )

    return _parsed(records(), parse)
