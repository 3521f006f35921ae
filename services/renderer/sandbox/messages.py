"""The messages of a render's processes, as typed values, and the only way they are read: strictly.

Two streams of JSON lines carry them:

* a child to the zygote, one pipe per child: a code job's child (which runs model-written code, so it
  may write anything on its pipe: it can find the descriptor), a spec worker, or an output check
  (checker.py); each may say only what its kind says (`Sender`);
* the zygote to the renderer, on the zygote's stdout.

A line is parsed into one of the classes below, or refused with `BadMessage` saying what is wrong: it is
bounded in bytes, valid UTF-8, one JSON object, with known keys only, each of its type and within its
bounds. What a reader does with a refusal is its own business (the zygote fails that job and kills its
child; the renderer restarts its zygote); a refusal never raises anything else.

Text is judged differently from structure: a progress note, an error message or a preview's text with
a control character or a lone surrogate is not refused but cleaned (`clean_text`), because the jobstore
refuses such text and a refused Heartbeat or Fail would let the job's lease lapse. Our own senders go
through `encode`, which cleans and bounds what they say, so they never write a line the reader refuses.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, TypeAlias

MAX_CHILD_LINE = 1024 * 1024  # bytes of one line from a child (a spec worker's done carries a preview)
MAX_ZYGOTE_LINE = 2 * 1024 * 1024  # bytes of one line from the zygote
MAX_PROGRESS_CHARS = 200  # a progress note
MAX_ERROR_CHARS = 2000  # an error message
MAX_PREVIEW_CHARS = 300  # each text of a preview
MAX_WARNINGS = 50  # warnings of one spec render (a glyph no font draws, a formula error), ...
MAX_WARNING_CHARS = 300  # ... each message and place
MAX_ISOLATION_ENTRIES = 32
MAX_ISOLATION_CHARS = 500
MAX_COUNT = 10**9  # pages or slides
MAX_PHASES = 16
# How much of a document a preview shows (preview.py makes them to these bounds).
PREVIEW_SHEETS, PREVIEW_ROWS, PREVIEW_CELLS = 10, 5, 8
PREVIEW_HEADINGS, PREVIEW_PARAGRAPHS, PREVIEW_TITLES = 11, 3, 30

ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
FILE = re.compile(r"[0-9A-Za-z_-]{1,64}\.[0-9a-z]{1,8}")
CODE = re.compile(r"[a-z][a-z_]{0,39}")
# Removed from text: C0 and C1 controls (but the whitespace ones, which become a space or stay a
# newline), DEL, and lone surrogates (no character: neither UTF-8 nor protobuf nor jsonb can carry them).
_WHITESPACE = re.compile("[\t\n\r\x0b\x0c\x85\u2028\u2029]")
_WHITESPACE_BUT_NEWLINE = re.compile("[\t\r\x0b\x0c\x85\u2028\u2029]")
_UNWANTED = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff]")


class BadMessage(ValueError):
    """A line that is not a message its sender may send; the text says what is wrong with it."""


# --- text ---------------------------------------------------------------------------------------------


def clean_text(value: str, max_chars: int, *, newlines: bool = False) -> str:
    """value as text the jobstore and any client take: no control characters (whitespace ones become a
    space, or stay newlines where `newlines`), no lone surrogates, at most max_chars characters (cut
    with an ellipsis)."""
    if len(value) <= max_chars and value.isprintable():
        return value  # most text: no control character, surrogate or separator but the space
    value = value[: 4 * max_chars]  # the cleaning below is linear; nothing past this can be kept anyway
    value = (_WHITESPACE_BUT_NEWLINE if newlines else _WHITESPACE).sub(" ", value)
    if newlines:
        value = value.replace("\x0c", " ")
    value = _UNWANTED.sub("", value)
    return value if len(value) <= max_chars else value[: max_chars - 1] + "…"


# --- children to the zygote ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    percent: int
    text: str


@dataclass(frozen=True)
class Done:
    """The render says it has saved its document (a spec worker adds the preview it made)."""

    preview: dict[str, Any] | None = None


@dataclass(frozen=True)
class Failed:
    error: str
    code: str | None = None


@dataclass(frozen=True)
class Checked:
    """The output check opened the document; this is its preview."""

    preview: dict[str, Any]


ChildMessage: TypeAlias = Progress | Done | Failed | Checked


@dataclass(frozen=True)
class Sender:
    """What one kind of child may say."""

    name: str
    progress: bool  # may report progress
    done: bool  # may say Done
    done_preview: bool  # ... and then must give a preview (and otherwise must not)
    checked: bool  # may say Checked
    failure_codes: frozenset[str]  # the codes its Failed may carry (None is always allowed)


CODE_CHILD = Sender("code child", progress=True, done=True, done_preview=False, checked=False,
                    failure_codes=frozenset())
SPEC_WORKER = Sender("spec worker", progress=True, done=True, done_preview=True, checked=False,
                     failure_codes=frozenset({"invalid_spec"}))
CHECKER = Sender("output check", progress=False, done=False, done_preview=False, checked=True,
                 failure_codes=frozenset({"invalid_output"}))


def parse_child(line: bytes, sender: Sender) -> ChildMessage:
    """One line (without its newline) from a child of the given kind, or BadMessage."""
    data = _object(line, MAX_CHILD_LINE)
    if "progress" in data:
        if not sender.progress:
            raise BadMessage(f"a {sender.name} does not report progress")
        _keys(data, {"progress"}, {"message"})
        return Progress(_percent(data["progress"]),
                        _text(data.get("message", ""), "message", MAX_PROGRESS_CHARS))
    if "done" in data:
        if not sender.done:
            raise BadMessage(f"a {sender.name} does not say done")
        if data["done"] is not True:
            raise BadMessage("done must be true")
        if sender.done_preview:
            _keys(data, {"done", "preview"})
            return Done(parse_preview(data["preview"]))
        _keys(data, {"done"})
        return Done()
    if "checked" in data:
        if not sender.checked:
            raise BadMessage(f"a {sender.name} does not say checked")
        if data["checked"] is not True:
            raise BadMessage("checked must be true")
        _keys(data, {"checked", "preview"})
        return Checked(parse_preview(data["preview"]))
    if "error" in data:
        _keys(data, {"error"}, {"code"})
        code = data.get("code")
        if code is not None and (not isinstance(code, str) or code not in sender.failure_codes):
            raise BadMessage(f"code {_shown(code)} is not one a {sender.name} may give")
        return Failed(_text(data["error"], "error", MAX_ERROR_CHARS, newlines=True), code)
    raise BadMessage(f"no known message (keys: {_shown(sorted(data)[:5])})")


# --- the zygote to the renderer -----------------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    isolation: dict[str, str]
    pid: int


@dataclass(frozen=True)
class NotReady:
    """The zygote cannot start (code mode is on and code jobs cannot be isolated here): why."""

    error: str


@dataclass(frozen=True)
class JobProgress:
    id: str
    percent: int
    text: str


@dataclass(frozen=True)
class Rendered:
    id: str
    file: str  # a plain file name in the renderer's output directory
    preview: dict[str, Any]
    # Milliseconds per phase of a code job, as the zygote timed them, when it was started to say so
    # (bench/render.py); empty otherwise.
    phases: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RenderFailed:
    id: str
    error: str
    # Not the job's doing: the sandbox could not run it or check its output (a box that could not be built,
    # a code box that refused it): the job is to be given back, no attempt counted.
    given_back: bool = False
    code: str | None = None
    cancelled: bool = False


ZygoteMessage: TypeAlias = Ready | NotReady | JobProgress | Rendered | RenderFailed


def parse_zygote(line: bytes) -> ZygoteMessage:
    """One line (without its newline) from the zygote, or BadMessage."""
    return zygote_message(_object(line, MAX_ZYGOTE_LINE))


def zygote_message(data: dict[str, Any]) -> ZygoteMessage:
    """The zygote's message in its dict form, or BadMessage."""
    if data.get("ready") is False:
        _keys(data, {"ready", "error"})
        return NotReady(_text(data["error"], "error", MAX_ERROR_CHARS, newlines=True))
    if "ready" in data:
        _keys(data, {"ready", "isolation", "pid"})
        if data["ready"] is not True:
            raise BadMessage("ready must be true or false")
        isolation = data["isolation"]
        if not isinstance(isolation, dict) or len(isolation) > MAX_ISOLATION_ENTRIES:
            raise BadMessage(f"isolation must be an object of at most {MAX_ISOLATION_ENTRIES} entries")
        return Ready({_text(k, "isolation", 64): _text(v, "isolation", MAX_ISOLATION_CHARS)
                      for k, v in isolation.items()}, _integer(data["pid"], "pid", 1, 2**31))
    job_id = data.get("id")
    if not isinstance(job_id, str) or not ID.fullmatch(job_id):
        raise BadMessage(f"id must be a render id, not {_shown(job_id)}")
    if "progress" in data:
        _keys(data, {"id", "progress"}, {"message"})
        return JobProgress(job_id, _percent(data["progress"]),
                           _text(data.get("message", ""), "message", MAX_PROGRESS_CHARS))
    ok = data.get("ok")
    if ok is True:
        _keys(data, {"id", "ok", "file", "preview"}, {"phases"})
        file = data["file"]
        if not isinstance(file, str) or not FILE.fullmatch(file):
            raise BadMessage(f"file must be a plain file name, not {_shown(file)}")
        return Rendered(job_id, file, parse_preview(data["preview"]), _phases(data.get("phases", {})))
    if ok is False:
        _keys(data, {"id", "ok", "error"}, {"given_back", "code", "cancelled"})
        code = data.get("code")
        if code is not None and (not isinstance(code, str) or not CODE.fullmatch(code)):
            raise BadMessage(f"code must be an error code, not {_shown(code)}")
        return RenderFailed(job_id, _text(data["error"], "error", MAX_ERROR_CHARS, newlines=True),
                            _flag(data, "given_back"), code, _flag(data, "cancelled"))
    raise BadMessage("no known message: neither progress nor an answer (ok true or false)")


# --- previews -----------------------------------------------------------------------------------------


def parse_preview(value: Any) -> dict[str, Any]:
    """A preview as the renderer hands it on (the shapes preview.py makes), its text cleaned, or
    BadMessage. An empty object is no preview (a job type without one). A spec render's preview may
    carry the job's `warnings` (moved to the result by the worker)."""
    if not isinstance(value, dict):
        raise BadMessage("preview must be an object")
    if "warnings" in value:
        rest = {k: v for k, v in value.items() if k != "warnings"}
        return {**parse_preview(rest), "warnings": [
            _warning(w) for w in _list(value["warnings"], "preview.warnings", MAX_WARNINGS)]}
    if not value:
        return {}
    kind = value.get("kind")
    if kind == "spreadsheet":
        _keys(value, {"kind", "sheets"})
        return {"kind": kind, "sheets": [
            _sheet(sheet) for sheet in _list(value["sheets"], "preview.sheets", PREVIEW_SHEETS)]}
    if kind == "document":
        _keys(value, {"kind", "headings", "paragraphs"})
        return {"kind": kind, "headings": _texts(value["headings"], "preview.headings", PREVIEW_HEADINGS),
                "paragraphs": _texts(value["paragraphs"], "preview.paragraphs", PREVIEW_PARAGRAPHS)}
    if kind == "pdf":
        _keys(value, {"kind", "pages", "firstPageText"})
        return {"kind": kind, "pages": _integer(value["pages"], "preview.pages", 0, MAX_COUNT),
                "firstPageText": _text(value["firstPageText"], "preview.firstPageText", MAX_PREVIEW_CHARS)}
    if kind == "presentation":
        _keys(value, {"kind", "slides", "titles"})
        return {"kind": kind, "slides": _integer(value["slides"], "preview.slides", 0, MAX_COUNT),
                "titles": _texts(value["titles"], "preview.titles", PREVIEW_TITLES)}
    raise BadMessage(f"preview.kind {_shown(kind)} is no document kind")


def _warning(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise BadMessage("preview.warnings[] must be objects")
    _keys(value, {"code", "message", "where"})
    code = _text(value["code"], "preview.warnings[].code", 40)
    if not code.replace("_", "").isalnum():
        raise BadMessage(f"preview.warnings[].code {_shown(code)} is no code")
    return {"code": code, "message": _text(value["message"], "preview.warnings[].message", MAX_WARNING_CHARS),
            "where": _text(value["where"], "preview.warnings[].where", MAX_WARNING_CHARS)}


def _sheet(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadMessage("preview.sheets[] must be objects")
    _keys(value, {"name", "rows"})
    return {"name": _text(value["name"], "preview.sheets[].name", MAX_PREVIEW_CHARS),
            "rows": [_texts(row, "preview.sheets[].rows[]", PREVIEW_CELLS)
                     for row in _list(value["rows"], "preview.sheets[].rows", PREVIEW_ROWS)]}


def bounded_preview(preview: dict[str, Any]) -> dict[str, Any]:
    """A preview our own code made, cut to the bounds parse_preview keeps (a spec's formula or title
    may be longer than a preview shows), its text cleaned."""
    def text(value: Any) -> str:
        value = "" if value is None else value if isinstance(value, str) else str(value)
        return value if len(value) <= MAX_PREVIEW_CHARS and value.isprintable() else clean_text(
            value, MAX_PREVIEW_CHARS)

    def texts(values: Any, most: int) -> list[str]:
        return [text(v) for v in list(values)[:most]]

    if "warnings" in preview:
        return {**bounded_preview({k: v for k, v in preview.items() if k != "warnings"}), "warnings": [
            {"code": str(w["code"])[:40], "message": clean_text(str(w["message"]), MAX_WARNING_CHARS),
             "where": clean_text(str(w["where"]), MAX_WARNING_CHARS)} for w in preview["warnings"][:MAX_WARNINGS]]}
    kind = preview.get("kind")
    if kind == "spreadsheet":
        return {"kind": kind, "sheets": [{"name": text(s.get("name")),
                                          "rows": [texts(r, PREVIEW_CELLS) for r in s.get("rows", [])[:PREVIEW_ROWS]]}
                                         for s in preview.get("sheets", [])[:PREVIEW_SHEETS]]}
    if kind == "document":
        return {"kind": kind, "headings": texts(preview.get("headings", []), PREVIEW_HEADINGS),
                "paragraphs": texts(preview.get("paragraphs", []), PREVIEW_PARAGRAPHS)}
    if kind == "pdf":
        return {"kind": kind, "pages": min(int(preview.get("pages", 0)), MAX_COUNT),
                "firstPageText": text(preview.get("firstPageText", ""))}
    if kind == "presentation":
        return {"kind": kind, "slides": min(int(preview.get("slides", 0)), MAX_COUNT),
                "titles": texts(preview.get("titles", []), PREVIEW_TITLES)}
    return {}


# --- writing ------------------------------------------------------------------------------------------


def encode(message: ChildMessage | ZygoteMessage) -> bytes:
    """The line (with its newline) for a message of ours, its text cleaned and cut to the bounds the
    reader keeps."""
    data: dict[str, Any]
    match message:
        case Progress(percent, text):
            data = {"progress": max(0, min(100, percent)), "message": clean_text(text, MAX_PROGRESS_CHARS)}
        case Done(preview):
            data = {"done": True} if preview is None else {"done": True, "preview": bounded_preview(preview)}
        case Failed(error, code):
            data = {"error": clean_text(error, MAX_ERROR_CHARS, newlines=True), "code": code}
        case Checked(preview):
            data = {"checked": True, "preview": bounded_preview(preview)}
        case Ready(isolation, pid):
            data = {"ready": True, "pid": pid, "isolation": {
                clean_text(k, 64): clean_text(v, MAX_ISOLATION_CHARS) for k, v in isolation.items()}}
        case NotReady(error):
            data = {"ready": False, "error": clean_text(error, MAX_ERROR_CHARS, newlines=True)}
        case JobProgress(job_id, percent, text):
            data = {"id": job_id, "progress": max(0, min(100, percent)),
                    "message": clean_text(text, MAX_PROGRESS_CHARS)}
        case Rendered(job_id, file, preview, phases):  # a preview parsed from a child's message: bounded already
            data = {"id": job_id, "ok": True, "file": file, "preview": preview}
            if phases:
                data["phases"] = phases
        case RenderFailed(job_id, error, given_back, code, cancelled):
            data = {"id": job_id, "ok": False, "error": clean_text(error, MAX_ERROR_CHARS, newlines=True),
                    "given_back": given_back, "code": code, "cancelled": cancelled}
        case _:
            raise TypeError(f"not a message: {message!r}")
    return (json.dumps(data, ensure_ascii=False) + "\n").encode()


# --- the parts --------------------------------------------------------------------------------------


def _object(line: bytes, max_bytes: int) -> dict[str, Any]:
    if len(line) > max_bytes:
        raise BadMessage(f"a line longer than {max_bytes} bytes")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadMessage(f"not UTF-8 (at byte {exc.start})") from None
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise BadMessage("nested too deep") from None
    except ValueError as exc:
        raise BadMessage(f"not JSON ({str(exc)[:100]})") from None
    if not isinstance(data, dict):
        raise BadMessage(f"not a JSON object but {type(data).__name__}")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is no JSON number")


def _keys(data: dict[str, Any], required: set[str], optional: frozenset[str] | set[str] = frozenset()) -> None:
    missing = required - data.keys()
    if missing:
        raise BadMessage(f"missing {', '.join(sorted(missing))}")
    unknown = data.keys() - required - optional
    if unknown:
        raise BadMessage(f"unknown key {_shown(sorted(unknown)[0])}")


def _percent(value: Any) -> int:
    return _integer(value, "progress", 0, 100)


def _integer(value: Any, name: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise BadMessage(f"{name} must be an integer from {low} to {high}, not {_shown(value)}")
    return value


def _flag(data: dict[str, Any], name: str) -> bool:
    value = data.get(name, False)
    if type(value) is not bool:
        raise BadMessage(f"{name} must be true or false, not {_shown(value)}")
    return value


def _text(value: Any, name: str, max_chars: int, *, newlines: bool = False) -> str:
    if not isinstance(value, str):
        raise BadMessage(f"{name} must be a string, not {_shown(value)}")
    if len(value) > max_chars:
        raise BadMessage(f"{name} is longer than {max_chars} characters")
    return value if value.isprintable() else clean_text(value, max_chars, newlines=newlines)


def _phases(value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or len(value) > MAX_PHASES:
        raise BadMessage(f"phases must be an object of at most {MAX_PHASES} entries")
    phases = {}
    for name, ms in value.items():
        if type(ms) not in (int, float) or not 0 <= ms < 1e9:
            raise BadMessage(f"a phase must last from 0 to 1e9 ms, not {_shown(ms)}")
        phases[_text(name, "phases", 40)] = float(ms)
    return phases


def _list(value: Any, name: str, most: int) -> list[Any]:
    if not isinstance(value, list) or len(value) > most:
        raise BadMessage(f"{name} must be a list of at most {most}")
    return value


def _texts(value: Any, name: str, most: int) -> list[str]:
    return [_text(item, name, MAX_PREVIEW_CHARS) for item in _list(value, name, most)]


def _shown(value: Any) -> str:
    """A value for an error message: short, and only its type when it is big."""
    text = repr(value)
    return text if len(text) <= 60 else f"a {type(value).__name__} of {len(text)} characters"
