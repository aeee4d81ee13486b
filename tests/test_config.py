"""calibtune.config.load_yaml: a config file as a mapping, every failure one line naming the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from calibtune.config import load_yaml
from calibtune.errors import describe


def write(tmp_path: Path, text: str | bytes, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def error(path: Path) -> str:
    with pytest.raises(ValueError) as info:
        load_yaml(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    return message


def test_mapping_is_returned_as_parsed(tmp_path: Path) -> None:
    path = write(tmp_path, "model: smollm2\ntraining:\n  max_steps: 3\nseeds: [0, 1]\n")
    assert load_yaml(path) == {"model": "smollm2", "training": {"max_steps": 3}, "seeds": [0, 1]}
    assert load_yaml(str(path)) == load_yaml(path)  # a str path too


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n", "~\n"])
def test_empty_file_is_an_empty_mapping(tmp_path: Path, text: str) -> None:
    assert load_yaml(write(tmp_path, text)) == {}


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "a list"), ("just text\n", "a string"), ("3\n", "a number")])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    path = write(tmp_path, text)
    assert error(path) == f"{path}: expected a mapping at the top level, got {kind}"


def test_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "model: smollm2\nseed: 0\n  objective: ls\n")
    assert error(path) == f"{path}, line 3, column 12: not valid YAML: mapping values are not allowed here"


def test_unclosed_bracket_names_where_it_opened(tmp_path: Path) -> None:
    path = write(tmp_path, "model: smollm2\nseeds: [0, 1\nobjective: ls\n")
    assert error(path) == (f"{path}, line 3, column 10: not valid YAML: while parsing a flow sequence "
                           "(line 2, column 8); expected ',' or ']', but got ':'")


def test_tab_indentation_is_named(tmp_path: Path) -> None:
    message = error(write(tmp_path, "methods:\n\t- sft\n"))
    assert ", line 2, column 1: not valid YAML: while scanning for the next token; found character '\\t' that cannot start any token" in message


def test_second_document_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "a: 1\n---\nb: 2\n")
    assert error(path) == (f"{path}, line 2, column 1: not valid YAML: expected a single document in the stream "
                           "(line 1, column 1); but found another document")


def test_control_character_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "model: smollm2\nname: a\x00b\n")
    assert error(path) == f"{path}, line 2: not valid YAML: unacceptable character #x0000 (special characters are not allowed)"


def test_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, b"model: smollm2\nname: caf\xe9\n")
    assert error(path) == f"{path}, line 2: not valid UTF-8 (byte b'\\xe9')"


def test_missing_file_is_the_oserror_of_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(FileNotFoundError) as info:
        load_yaml(path)
    assert describe(info.value) == f"{path}: No such file or directory"
    with pytest.raises(IsADirectoryError) as info:
        load_yaml(tmp_path)
    assert describe(info.value).startswith(f"{tmp_path}: ")
