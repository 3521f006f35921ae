"""The messages of the render sandbox (renderer/sandbox/messages.py): what a child may say, what the zygote
may say, and that anything else is a BadMessage naming what is wrong, never another exception. A child
that runs model-written code can write any bytes on its pipe (the untrusted-message attack class)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from renderer.sandbox import messages
from renderer.sandbox.messages import (
    CHECKER,
    CODE_CHILD,
    SPEC_WORKER,
    BadMessage,
    Checked,
    Done,
    Failed,
    JobProgress,
    NotReady,
    Progress,
    Ready,
    Rendered,
    RenderFailed,
    clean_text,
    encode,
    parse_child,
    parse_zygote,
)

SHEET_PREVIEW = {"kind": "spreadsheet", "sheets": [{"name": "S", "rows": [["a", "b"], ["1"]]}]}


def line(value: Any) -> bytes:
    return json.dumps(value).encode()


# --- what a child may say ---------------------------------------------------------------------------


def test_the_messages_each_child_may_send() -> None:
    assert parse_child(b'{"progress": 40, "message": "sheet 1"}', CODE_CHILD) == Progress(40, "sheet 1")
    assert parse_child(b'{"progress": 0}', SPEC_WORKER) == Progress(0, "")
    assert parse_child(b'{"done": true}', CODE_CHILD) == Done()
    assert parse_child(line({"done": True, "preview": SHEET_PREVIEW}), SPEC_WORKER) == Done(SHEET_PREVIEW)
    assert parse_child(b'{"error": "boom", "code": null}', CODE_CHILD) == Failed("boom")
    assert parse_child(b'{"error": "spec.x: bad", "code": "invalid_spec"}', SPEC_WORKER) == \
        Failed("spec.x: bad", "invalid_spec")
    assert parse_child(line({"checked": True, "preview": SHEET_PREVIEW}), CHECKER) == Checked(SHEET_PREVIEW)
    assert parse_child(b'{"error": "not a zip", "code": "invalid_output"}', CHECKER) == \
        Failed("not a zip", "invalid_output")


MALFORMED = {
    "a number, not an object": (b"5", "not a JSON object but int"),
    "a list": (b"[]", "not a JSON object but list"),
    "a string": (b'"progress"', "not a JSON object but str"),
    "null": (b"null", "not a JSON object but NoneType"),
    "not JSON": (b"{progress: 5}", "not JSON"),
    "an empty line": (b"", "not JSON"),
    "not UTF-8": (b'{"progress": 5, "message": "\xff"}', "not UTF-8"),
    "NaN": (b'{"progress": NaN}', "not JSON"),
    "a progress as text": (b'{"progress": "50"}', "progress must be an integer"),
    "a progress as a float": (b'{"progress": 50.0}', "progress must be an integer"),
    "a progress as a boolean": (b'{"progress": true}', "progress must be an integer"),
    "a progress above 100": (b'{"progress": 101}', "progress must be an integer from 0 to 100"),
    "a negative progress": (b'{"progress": -1}', "progress must be an integer from 0 to 100"),
    "a huge progress": (b'{"progress": 1' + b"0" * 5000 + b"}", "not JSON"),
    "a message that is no text": (b'{"progress": 5, "message": 5}', "message must be a string"),
    "a long message": (line({"progress": 5, "message": "x" * 201}), "longer than 200 characters"),
    "an unknown key": (b'{"progress": 5, "extra": 1}', "unknown key 'extra'"),
    "done that is not true": (b'{"done": 1}', "done must be true"),
    "done with a preview from a code child": (line({"done": True, "preview": SHEET_PREVIEW}), "unknown key 'preview'"),
    "checked from a code child": (line({"checked": True, "preview": SHEET_PREVIEW}), "does not say checked"),
    "an error code it may not give": (b'{"error": "x", "code": "invalid_output"}', "not one a code child may give"),
    "an error that is no text": (b'{"error": ["x"]}', "error must be a string"),
    "a long error": (line({"error": "x" * 2001}), "longer than 2000 characters"),
    "nothing known": (b'{"hello": 1}', "no known message"),
    "nested deep": (b'{"error": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deep"),
    "a line too long": (b'{"error": "' + b"x" * messages.MAX_CHILD_LINE + b'"}', "longer than 1048576 bytes"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_child_line_is_a_bad_message_naming_the_fault(name: str) -> None:
    raw, expected = MALFORMED[name]
    with pytest.raises(BadMessage) as refused:
        parse_child(raw, CODE_CHILD)
    assert expected in str(refused.value)


def test_each_child_says_only_what_its_kind_says() -> None:
    with pytest.raises(BadMessage, match="does not report progress"):
        parse_child(b'{"progress": 5}', CHECKER)
    with pytest.raises(BadMessage, match="does not say done"):
        parse_child(b'{"done": true}', CHECKER)
    with pytest.raises(BadMessage, match="missing preview"):
        parse_child(b'{"done": true}', SPEC_WORKER)
    with pytest.raises(BadMessage, match="not one a output check may give"):
        parse_child(b'{"error": "x", "code": "invalid_spec"}', CHECKER)


PREVIEWS = {
    "not an object": ([1], "preview must be an object"),
    "an unknown kind": ({"kind": "movie"}, "is no document kind"),
    "an unknown key": ({**SHEET_PREVIEW, "secret": "x"}, "unknown key 'secret'"),
    "too many sheets": ({"kind": "spreadsheet", "sheets": [{"name": "s", "rows": []}] * 11}, "at most 10"),
    "too many rows": ({"kind": "spreadsheet", "sheets": [{"name": "s", "rows": [[]] * 6}]}, "at most 5"),
    "a cell that is no text": ({"kind": "spreadsheet", "sheets": [{"name": "s", "rows": [[1]]}]}, "must be a string"),
    "a long text": ({"kind": "pdf", "pages": 1, "firstPageText": "x" * 301}, "longer than 300"),
    "pages as text": ({"kind": "pdf", "pages": "1", "firstPageText": ""}, "preview.pages must be an integer"),
    "a missing field": ({"kind": "presentation", "slides": 1}, "missing titles"),
}


@pytest.mark.parametrize("name", list(PREVIEWS))
def test_a_preview_outside_its_shape_is_refused(name: str) -> None:
    preview, expected = PREVIEWS[name]
    with pytest.raises(BadMessage) as refused:
        parse_child(line({"checked": True, "preview": preview}), CHECKER)
    assert expected in str(refused.value)


def test_the_previews_of_each_kind_pass() -> None:
    for preview in (SHEET_PREVIEW, {"kind": "document", "headings": ["T"], "paragraphs": ["p"]},
                    {"kind": "pdf", "pages": 3, "firstPageText": "Hello"},
                    {"kind": "presentation", "slides": 2, "titles": ["a", "b"]}, {}):
        assert parse_child(line({"checked": True, "preview": preview}), CHECKER) == Checked(preview)


# --- text is cleaned, not refused -------------------------------------------------------------------


def test_control_characters_and_lone_surrogates_are_cleaned_out_of_text() -> None:
    # The heartbeat poisoning attack class: the jobstore refuses such text in a Heartbeat or a Fail.
    parsed = parse_child(line({"progress": 5, "message": "a\x01b\x00c\x7fd\x9be\ud800f\ng\th"}), CODE_CHILD)
    assert parsed == Progress(5, "abcdef g h")
    failed = parse_child(line({"error": "Error:\x1b[31m red\nline two\r\n"}), CODE_CHILD)
    assert failed == Failed("Error:[31m red\nline two \n")
    checked = parse_child(line({"checked": True, "preview": {"kind": "pdf", "pages": 1,
                                                             "firstPageText": "x\x00y\udfff"}}), CHECKER)
    assert isinstance(checked, Checked) and checked.preview["firstPageText"] == "xy"


def test_clean_text_keeps_every_real_character_and_bounds_the_length() -> None:
    text = "Ventas de 2026 — 東京 · القاهرة · 👩‍💻"
    assert clean_text(text, 200) == text
    assert clean_text("x" * 500, 200) == "x" * 199 + "…"
    assert len(clean_text("\x01" * 10_000 + "y" * 10, 200)) == 0  # only the first 800 characters are looked at


@given(st.text(max_size=300))
@settings(max_examples=200, deadline=None)
def test_cleaned_text_is_what_the_jobstore_takes(text: str) -> None:
    cleaned = clean_text(text, 200)
    assert len(cleaned) <= 200
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF for c in cleaned)
    cleaned.encode("utf-8")


@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
@settings(max_examples=200, deadline=None)
def test_any_bytes_are_a_message_or_a_bad_message(raw: bytes) -> None:
    for sender in (CODE_CHILD, SPEC_WORKER, CHECKER):
        try:
            parse_child(raw, sender)
        except BadMessage:
            pass
    try:
        parse_zygote(raw)
    except BadMessage:
        pass


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                           max_leaves=8)
KEYS = st.sampled_from(["progress", "message", "done", "preview", "error", "code", "checked", "id", "ok", "file",
                        "given_back", "cancelled", "ready", "isolation", "pid", "kind", "sheets"])


@given(st.dictionaries(KEYS, JSON_VALUES, max_size=5))
@settings(max_examples=200, deadline=None)
def test_any_object_of_known_keys_is_a_message_or_a_bad_message(data: dict[str, Any]) -> None:
    raw = line(data)
    for sender in (CODE_CHILD, SPEC_WORKER, CHECKER):
        try:
            parse_child(raw, sender)
        except BadMessage:
            pass
    try:
        parse_zygote(raw)
    except BadMessage:
        pass


# --- the zygote to the renderer ---------------------------------------------------------------------


def test_the_zygotes_messages() -> None:
    assert parse_zygote(b'{"ready": true, "isolation": {"network": "namespace"}, "pid": 42}') == \
        Ready({"network": "namespace"}, 42)
    assert parse_zygote(b'{"ready": false, "error": "no bwrap"}') == NotReady("no bwrap")
    assert parse_zygote(b'{"id": "ab12", "progress": 7, "message": "m"}') == JobProgress("ab12", 7, "m")
    assert parse_zygote(line({"id": "ab12", "ok": True, "file": "ab12.xlsx", "preview": SHEET_PREVIEW})) == \
        Rendered("ab12", "ab12.xlsx", SHEET_PREVIEW)
    assert parse_zygote(b'{"id": "ab12", "ok": false, "error": "x", "given_back": true, "code": null}') == \
        RenderFailed("ab12", "x", given_back=True)
    assert parse_zygote(b'{"id": "ab12", "ok": false, "error": "cancelled", "cancelled": true}') == \
        RenderFailed("ab12", "cancelled", cancelled=True)


ZYGOTE_MALFORMED = {
    "no id": (b'{"ok": false, "error": "x"}', "id must be a render id"),
    "an id that is a path": (b'{"id": "../x", "ok": false, "error": "x"}', "id must be a render id"),
    "a file outside the output directory": (line({"id": "a", "ok": True, "file": "/etc/shadow", "preview": {}}),
                                            "file must be a plain file name"),
    "a file up a directory": (line({"id": "a", "ok": True, "file": "../x.xlsx", "preview": {}}),
                              "file must be a plain file name"),
    "given_back as text": (b'{"id": "a", "ok": false, "error": "x", "given_back": "yes"}', "given_back must be true"),
    "ok that is no boolean": (b'{"id": "a", "ok": 1, "error": "x"}', "no known message"),
    "a pid as text": (b'{"ready": true, "isolation": {}, "pid": "1"}', "pid must be an integer"),
    "a number": (b"5", "not a JSON object"),
}


@pytest.mark.parametrize("name", list(ZYGOTE_MALFORMED))
def test_a_malformed_zygote_line_is_a_bad_message(name: str) -> None:
    raw, expected = ZYGOTE_MALFORMED[name]
    with pytest.raises(BadMessage) as refused:
        parse_zygote(raw)
    assert expected in str(refused.value)


# --- our own senders never write what the reader refuses --------------------------------------------


def test_what_we_encode_parses_back_cleaned_and_bounded() -> None:
    long_formula = "=" + "A1+" * 5000 + "1"
    spec_preview = {"kind": "spreadsheet", "sheets": [{"name": f"S{i}", "rows": [[long_formula] * 12] * 9}
                                                      for i in range(14)]}
    done = parse_child(encode(Done(spec_preview)).rstrip(b"\n"), SPEC_WORKER)
    assert isinstance(done, Done) and done.preview is not None
    assert len(done.preview["sheets"]) == 10 and len(done.preview["sheets"][0]["rows"]) == 5
    assert done.preview["sheets"][0]["rows"][0][7].endswith("…")
    assert parse_child(encode(Progress(250, "x\x01" * 300)).rstrip(b"\n"), CODE_CHILD) == Progress(100, "x" * 199 + "…")
    assert parse_child(encode(Failed("e\x00" * 3000, "invalid_spec")).rstrip(b"\n"), SPEC_WORKER) == \
        Failed("e" * 1999 + "…", "invalid_spec")
    for message in (JobProgress("a1", 5, "p\ud800"), Rendered("a1", "a1.pdf", {"kind": "pdf", "pages": 2,
                                                                             "firstPageText": "t\x00"}),
                    RenderFailed("a1", "RuntimeError: \x01", code="invalid_output"), Ready({"uid": "per job"}, 7)):
        parsed = parse_zygote(encode(message).rstrip(b"\n"))
        assert type(parsed) is type(message)
        assert "\x00" not in json.dumps(parsed.__dict__) and "\\u0001" not in json.dumps(parsed.__dict__)
