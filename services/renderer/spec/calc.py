"""Computed values for the formula cells of a spec workbook.

openpyxl writes a formula without its value, so any reader of cached values (pandas, openpyxl's
`data_only`, quick-look viewers, mail previews, our own preview) would see empty cells until Excel
recalculates. Here the spec's formulas are computed over its own values: plain arithmetic and SUM,
AVERAGE, MIN, MAX, COUNT, ROUND and ABS by the renderer itself, any other formula by the `formulas`
package (Excel's functions in Python, compiled once per shape) where it is installed. It is not a
dependency: it brings numpy, which openpyxl then imports in every render process, and a code job forked
from a process holding numpy's OpenBLAS no longer meets its process limit cleanly (a fork bomb hangs
to its deadline instead of failing at once). The values are written into the saved file's sheet XML,
each (`<v>`, typed as a number, text, boolean or error) beside its formula. Excel and LibreOffice still
recalculate on opening (openpyxl's `fullCalcOnLoad`).

What cannot be computed is reported, not hidden: a formula whose value is an Excel error (`#DIV/0!`,
`#REF!`, `#NAME?`, ...) is a `formula_error` warning, and one the engine cannot evaluate (a function it
lacks, a circular reference) a `formula_unsupported` warning, each naming the cell and its place in the
spec; such a cell is written without a value, as before.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from openpyxl.utils import column_index_from_string, get_column_letter

MAX_WARNINGS = 30
# The engine takes about half a millisecond a formula, the arithmetic path tens of microseconds: a
# workbook's formulas are computed up to these bounds, well inside the render's CPU limit (30 s).
MAX_FORMULAS = 100_000
BUDGET_S = 8.0
EXCEL_EPOCH = datetime(1899, 12, 30)

# A cell or range reference, optionally on another sheet; outside string literals (see _refs).
_REF = re.compile(r"(?<![\w.])((?:'(?:[^']|'')+'|[A-Za-z_][\w.]*)!)?"
                  r"(\$?[A-Za-z]{1,3}\$?\d+(?::\$?[A-Za-z]{1,3}\$?\d+)?)(?![\w(!])")
_STRING = re.compile(r'"(?:[^"]|"")*"')
_CELL = re.compile(r"(\$?)([A-Za-z]{1,3})(\$?)(\d+)")

Key = tuple[int, int, int]  # sheet index, row, column (1-based, as Excel's)


class _Unsupported(Exception):
    pass


@dataclass
class _Compiled:
    function: Callable[..., Any]
    inputs: list[int]  # for each input of the function, the index of its reference in the formula


@dataclass
class Workbook:
    """The spec's cells: each sheet's header row (row 1) and rows, and its formulas."""

    names: list[str] = field(default_factory=list)
    values: dict[Key, Any] = field(default_factory=dict)
    formulas: dict[Key, tuple[str, str]] = field(default_factory=dict)  # formula (no "="), place in the spec
    sizes: list[tuple[int, int]] = field(default_factory=list)  # each sheet's last row and column

    def add_sheet(self, name: str, header: list[str], rows: list[list[Any]], kinds: list[str | None],
                  index: int) -> None:
        sheet = len(self.names)
        self.names.append(name)
        for c, text in enumerate(header, start=1):
            self.values[(sheet, 1, c)] = text
        for r, row in enumerate(rows, start=2):
            for c, value in enumerate(row, start=1):
                if isinstance(value, dict):
                    formula = str(value["formula"])
                    self.formulas[(sheet, r, c)] = (formula[1:] if formula.startswith("=") else formula,
                                                    f"sheets[{index}].rows[{r - 2}][{c - 1}]")
                elif value is not None:
                    kind = kinds[c - 1] if c - 1 < len(kinds) else None
                    self.values[(sheet, r, c)] = _number_of_date(value) if kind in ("date", "datetime") else value
        self.sizes.append((len(rows) + 1, len(header)))


def _number_of_date(value: Any) -> Any:
    """A date cell as Excel holds it: days since 1899-12-30."""
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return value
        return (parsed - EXCEL_EPOCH).total_seconds() / 86400
    if isinstance(value, datetime):
        return (value - EXCEL_EPOCH).total_seconds() / 86400
    if isinstance(value, date):
        return (value - EXCEL_EPOCH.date()).days
    return value


@dataclass
class Result:
    values: dict[Key, Any]  # each computed formula cell's value (an error as its text, e.g. "#DIV/0!")
    errors: set[Key]
    warnings: list[dict[str, str]]


def compute(book: Workbook) -> Result:
    """Every formula's value, evaluated in dependency order (iteratively: a running total down
    10,000 rows is no recursion 10,000 deep)."""
    if not book.formulas:
        return Result({}, set(), [])
    logging.getLogger("formulas").setLevel(logging.CRITICAL)
    logging.getLogger("schedula").setLevel(logging.CRITICAL)
    engine = _Engine(book)
    deadline = time.process_time() + BUDGET_S  # CPU time: the same bound on a busy machine
    for n, key in enumerate(book.formulas):
        if n >= MAX_FORMULAS or time.process_time() > deadline:
            left = len(book.formulas) - len(engine.done) - len(engine.failed)
            engine.warnings.append({"code": "formula_unsupported", "where": book.formulas[key][1], "message": (
                f"{left} formula cells from here on were not computed (at most {MAX_FORMULAS} formulas or "
                f"{BUDGET_S:.0f} s of CPU time computing a workbook): the file holds no value for them")})
            break
        engine.evaluate(key)
    return Result(engine.done, engine.errors, engine.warnings)


class _Engine:
    def __init__(self, book: Workbook) -> None:
        self.book = book
        self._parser: Any = None
        self.sheet_index = {name.upper(): i for i, name in enumerate(book.names)}
        self.done: dict[Key, Any] = {}
        self.failed: set[Key] = set()
        self.errors: set[Key] = set()
        self.warnings: list[dict[str, str]] = []
        self.compiled: dict[str, _Compiled | None] = {}
        self.arithmetic: dict[str, Any] = {}
        self.parsed: dict[Key, tuple[list[tuple[int, int, int, int, int]], str]] = {}

    # --- references ---

    def _parse(self, formula: str, key: Key) -> tuple[list[tuple[int, int, int, int, int]], str]:
        """The formula's references in order, each (sheet, first row, first column, last row, last
        column), and its shape: the formula with its relative references as offsets from its cell, so one
        compiled function serves a whole column of `=B2*C2`, `=B3*C3`, ..."""
        if (known := self.parsed.get(key)) is not None:
            return known
        refs = []

        def reference(match: re.Match[str]) -> str:
            sheet_name, area = match.group(1), match.group(2)
            sheet = key[0]
            if sheet_name:
                name = sheet_name[:-1]
                if name.startswith("'"):
                    name = name[1:-1].replace("''", "'")
                if name.upper() not in self.sheet_index:
                    raise _Unsupported(f"sheet {name!r} does not exist")
                sheet = self.sheet_index[name.upper()]
            first, _, last = area.partition(":")
            (r1, c1, shape1), (r2, c2, shape2) = _cell(first, key), _cell(last or first, key)
            refs.append((sheet, min(r1, r2), min(c1, c2), max(r1, r2), max(c1, c2)))
            return f"{sheet}!{shape1}:{shape2}"

        strings: list[str] = []

        def keep(match: re.Match[str]) -> str:
            strings.append(match.group())
            return f"\0{len(strings) - 1}\0"
        shaped = _REF.sub(reference, _STRING.sub(keep, formula))
        if strings:
            shaped = re.sub("\0(\\d+)\0", lambda m: strings[int(m.group(1))], shaped)
        self.parsed[key] = (refs, shaped)
        return refs, shaped

    def _compile(self, formula: str, key: Key) -> _Compiled:
        shape = self._parse(formula, key)[1]
        if shape in self.compiled:
            cached = self.compiled[shape]
            if cached is None:
                raise _Unsupported("the formula cannot be computed here")
            return cached
        try:
            if self._parser is None:
                try:
                    import formulas
                except ImportError:
                    raise _Unsupported("only arithmetic, SUM, AVERAGE, MIN, MAX, COUNT, ROUND and ABS are "
                                       "computed here") from None
                self._parser = formulas.Parser()
            function = self._parser.ast("=" + formula)[1].compile()
        except _Unsupported:
            self.compiled[shape] = None
            raise
        except Exception as exc:
            self.compiled[shape] = None
            raise _Unsupported(f"the formula cannot be read ({_short(exc)})") from None
        names = [_normal(m.group(0)) for m in _REF.finditer(_STRING.sub(lambda m: " " * len(m.group()), formula))]
        inputs = []
        for name in function.inputs:
            normal = _normal(name)
            if normal not in names:
                raise _Unsupported(f"the reference {name} is not supported")
            inputs.append(names.index(normal))
        compiled = _Compiled(function, inputs)
        self.compiled[shape] = compiled
        return compiled

    # --- evaluation ---

    def _value(self, key: Key) -> Any:
        if key in self.book.formulas:
            if key in self.failed:
                return None
            return self.done.get(key)
        value = self.book.values.get(key)
        return _empty() if value is None else value

    def _input(self, ref: tuple[int, int, int, int, int], engine: bool = False) -> Any:
        """A reference's value: a cell's, or a range's values (a numpy array for the engine, a list for the
        arithmetic path, which imports no numpy: a process that forks after importing numpy has OpenBLAS's
        threads rebuilt in every child, and code jobs are forked from a process that rendered a sample)."""
        sheet, r1, c1, r2, c2 = ref
        if (r1, c1) == (r2, c2):
            value = self._value((sheet, r1, c1))
            return _engine_empty() if engine and value is _EMPTY_CELL else value
        rows = [[self._value((sheet, r, c)) for c in range(c1, c2 + 1)] for r in range(r1, r2 + 1)]
        if not engine:
            return _Range([v for row in rows for v in row])
        import numpy as np

        return np.array([[_engine_empty() if v is _EMPTY_CELL else v for v in row] for row in rows], dtype=object)

    def _deps(self, refs: list[tuple[int, int, int, int, int]]) -> list[Key]:
        deps = []
        for sheet, r1, c1, r2, c2 in refs:
            if (r2 - r1 + 1) * (c2 - c1 + 1) > 1_000_000:
                raise _Unsupported("a range of more than a million cells")
            for r in range(r1, r2 + 1):
                for c in range(c1, c2 + 1):
                    if (sheet, r, c) in self.book.formulas and (sheet, r, c) not in self.done \
                            and (sheet, r, c) not in self.failed:
                        deps.append((sheet, r, c))
        return deps

    def evaluate(self, start: Key) -> None:
        stack = [start]
        on_stack: set[Key] = set()
        while stack:
            key = stack[-1]
            if key in self.done or key in self.failed:
                stack.pop()
                on_stack.discard(key)
                continue
            formula, where = self.book.formulas[key]
            try:
                refs = self._parse(formula, key)[0]
                pending = self._deps(refs)
            except _Unsupported as exc:
                self._fail(key, where, str(exc))
                continue
            if not pending:
                stack.pop()
                on_stack.discard(key)
                self._run(key, formula, where, refs)
            elif key in on_stack or any(dep in on_stack or dep == key for dep in pending):
                self._fail(key, where, "a circular reference")
            else:
                on_stack.add(key)
                stack.extend(pending)

    def _run(self, key: Key, formula: str, where: str, refs: list[tuple[int, int, int, int, int]]) -> None:
        shape = self._parse(formula, key)[1]
        arithmetic = self.arithmetic.get(shape, _UNSEEN)
        if arithmetic is _UNSEEN:
            arithmetic = self.arithmetic[shape] = _arithmetic(formula)
        if arithmetic is not None:
            value = _run_arithmetic(arithmetic, [self._input(ref) for ref in refs])
            self.done[key] = value
            if isinstance(value, str) and value in _ERROR_TEXTS:
                self.errors.add(key)
                self._warn("formula_error", where, f"{self._cell_name(key)} ={formula} computes to {value}")
            return
        try:
            compiled = self._compile(formula, key)
            value = compiled.function(*(self._input(refs[i], engine=True) for i in compiled.inputs))
        except _Unsupported as exc:
            self._fail(key, where, str(exc))
            return
        except Exception as exc:
            self._fail(key, where, _short(exc))
            return
        from formulas.functions import XlError

        value = _scalar(value)
        if isinstance(value, XlError):
            self.done[key] = str(value)
            self.errors.add(key)
            self._warn("formula_error", where, f"{self._cell_name(key)} ={formula} computes to {value}")
            return
        self.done[key] = value

    def _fail(self, key: Key, where: str, why: str) -> None:
        self.failed.add(key)
        self._warn("formula_unsupported", where, f"{self._cell_name(key)} ={self.book.formulas[key][0]} was not "
                                                 f"computed ({why}): the file holds no value for it")

    def _cell_name(self, key: Key) -> str:
        return f"cell {get_column_letter(key[2])}{key[1]} of sheet {self.book.names[key[0]]!r}:"

    def _warn(self, code: str, where: str, message: str) -> None:
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append({"code": code, "message": message[:300], "where": where})


_UNSEEN = object()


class _Empty:
    """An empty cell, for the arithmetic path (schedula's EMPTY is the engine's; it is imported only when
    a formula needs the engine)."""

    def __repr__(self) -> str:
        return "EMPTY"


_EMPTY_CELL = _Empty()


def _empty() -> Any:
    return _EMPTY_CELL


def _engine_empty() -> Any:
    import schedula

    return schedula.EMPTY


# The arithmetic most spec formulas are (=B2*C2, =SUM(D2:D40)/4, =(B2-C2)/C2): evaluated here, in
# microseconds, where the engine takes half a millisecond. Anything else goes to the engine.
_ARITHMETIC_FUNCTIONS = {"SUM", "AVERAGE", "MIN", "MAX", "COUNT", "ROUND", "ABS"}
_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|([A-Za-z]+)\(|(\x00\d+\x00)"
                    r"|([-+*/^(),]))")


def _arithmetic(formula: str) -> Any:
    """The formula as a checked Python expression over its references r[0], r[1], ..., or None when it
    is not plain arithmetic."""
    import ast

    if '"' in formula:
        return None
    count = 0

    def name(_: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return f"\x00{count - 1}\x00"
    masked = _REF.sub(name, formula)
    out, at = [], 0
    while at < len(masked):
        match = _TOKEN.match(masked, at)
        if match is None:
            return None
        number, function, ref, operator = match.groups()
        if function is not None:
            if function.upper() not in _ARITHMETIC_FUNCTIONS:
                return None
            out.append(f"_{function.upper()}(")
        elif ref is not None:
            out.append(f"r[{ref[1:-1]}]")
        elif number is not None:
            out.append(repr(float(number)))
        else:
            out.append("**" if operator == "^" else operator)
        at = match.end()
        while at < len(masked) and masked[at].isspace():
            at += 1
    try:
        tree = ast.parse("".join(out), mode="eval")
    except SyntaxError:
        return None
    allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Subscript, ast.Load,
               ast.Call, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.USub, ast.UAdd)
    for node in ast.walk(tree):
        if not isinstance(node, allowed):
            return None
        if isinstance(node, ast.Name) and node.id != "r" and node.id.lstrip("_") not in _ARITHMETIC_FUNCTIONS:
            return None
        if isinstance(node, ast.Call) and (node.keywords or not isinstance(node.func, ast.Name)):
            return None
    return compile(tree, "<formula>", "eval")


class _Error(Exception):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def _number(value: Any) -> float:
    """A cell as an operand of arithmetic, as Excel takes it."""
    if value is _EMPTY_CELL or value is None:
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        if value in _ERROR_TEXTS:
            raise _Error(value)
        try:
            return float(value)
        except ValueError:
            raise _Error("#VALUE!") from None
    raise _Error("#VALUE!")


def _range_numbers(values: Any) -> list[float]:
    """The numbers of a range as SUM and AVERAGE take them: text, booleans and empty cells are skipped,
    an error is the result."""
    out = []
    for value in values:
        if isinstance(value, str) and value in _ERROR_TEXTS:
            raise _Error(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out.append(float(value))
    return out


def _arguments(args: tuple[Any, ...]) -> list[float]:
    numbers: list[float] = []
    for arg in args:
        if isinstance(arg, _Range):
            numbers.extend(_range_numbers(arg.values))
        else:
            numbers.append(float(arg))
    return numbers


class _Range:
    def __init__(self, values: list[Any]) -> None:
        self.values = values


def _average(*args: Any) -> float:
    numbers = _arguments(args)
    if not numbers:
        raise _Error("#DIV/0!")
    return sum(numbers) / len(numbers)


_GLOBALS: dict[str, Any] = {
    "__builtins__": {},
    "_SUM": lambda *a: float(sum(_arguments(a))),
    "_AVERAGE": _average,
    "_MIN": lambda *a: min(_arguments(a), default=0.0),
    "_MAX": lambda *a: max(_arguments(a), default=0.0),
    "_COUNT": lambda *a: float(len(_arguments(a))),
    "_ROUND": lambda x, digits=0.0: _round(float(x), int(digits)),
    "_ABS": lambda x: abs(float(x)),
}


def _round(value: float, digits: int) -> float:
    """Excel's ROUND: halves away from zero (Python's round() takes them to even)."""
    from decimal import ROUND_HALF_UP, Decimal

    return float(Decimal(repr(value)).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def _run_arithmetic(code: Any, inputs: list[Any]) -> Any:
    refs: list[Any] = []
    try:
        for value in inputs:
            refs.append(value if isinstance(value, _Range) else _number(value))
        result = eval(code, _GLOBALS, {"r": refs})  # a checked expression (_arithmetic): numbers only
    except _Error as exc:
        return exc.text
    except ZeroDivisionError:
        return "#DIV/0!"
    except OverflowError:
        return "#NUM!"
    except TypeError:  # a range where a number goes (=B2:B4*2)
        return "#VALUE!"
    if isinstance(result, _Range):
        return "#VALUE!"
    if isinstance(result, complex) or result != result or result in (float("inf"), float("-inf")):
        return "#NUM!"
    return float(result)


def _cell(text: str, at: Key) -> tuple[int, int, str]:
    """A cell reference's row and column, and its shape relative to the cell at `at`."""
    m = _CELL.fullmatch(text)
    if m is None:
        raise _Unsupported(f"the reference {text} is not supported")
    col, row = column_index_from_string(m.group(2).upper()), int(m.group(4))
    return row, col, (f"R{row}" if m.group(3) else f"R[{row - at[1]}]") + (
        f"C{col}" if m.group(1) else f"C[{col - at[2]}]")


def _normal(name: str) -> str:
    return name.replace("$", "").upper()


def _short(exc: BaseException) -> str:
    """Why the engine could not compute a formula, in a few words."""
    args = exc.args
    # schedula's DispatcherError: (message, the function's name, the exception it raised)
    if len(args) >= 3 and isinstance(args[1], str) and isinstance(args[2], BaseException):
        if isinstance(args[2], NotImplementedError):
            return f"the function {args[1]} is not supported"
        return f"{args[1]}: {type(args[2]).__name__}: {str(args[2])[:120]}"
    return f"{type(exc).__name__}: {str(exc)[:120]}"


def _scalar(value: Any) -> Any:
    """A formula's result as one cell holds it (an array's first value), in Python's own types."""
    import numpy as np

    if isinstance(value, np.ndarray):
        value = value.ravel()[0] if value.size else None
    if isinstance(value, np.generic):
        value = value.item()
    return value


# --- the saved file -------------------------------------------------------------------------------------


def write_values(path: Path, result: Result, sheet_count: int) -> None:
    """Put each computed value beside its formula in the saved workbook (openpyxl writes `<v></v>`)."""
    by_sheet: dict[int, dict[str, Any]] = {}
    for (sheet, row, col), value in result.values.items():
        by_sheet.setdefault(sheet, {})[f"{get_column_letter(col)}{row}"] = value
    if not by_sheet:
        return
    patched = path.with_suffix(".calc")
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(patched, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            data = source.read(info.filename)
            match = re.fullmatch(r"xl/worksheets/sheet(\d+)\.xml", info.filename)
            if match is not None and (values := by_sheet.get(int(match.group(1)) - 1)) and \
                    int(match.group(1)) <= sheet_count:
                data = _fill(data.decode("utf-8"), values, result.errors).encode("utf-8")
            target.writestr(info, data)
    shutil.move(patched, path)


_FORMULA_CELL = re.compile(r'<c r="([A-Z]+\d+)"([^>]*)><f>(.*?)</f><v\s*(?:/>|></v>)</c>', re.S)


def _fill(xml: str, values: dict[str, Any], errors: set[Key]) -> str:
    def cell(match: re.Match[str]) -> str:
        ref, attrs, formula = match.groups()
        if ref not in values:
            return match.group(0)
        value = values[ref]
        attrs = re.sub(r'\s+t="[^"]*"', "", attrs)
        if isinstance(value, bool):
            kind, text = "b", "1" if value else "0"
        elif isinstance(value, int | float):
            if value != value or value in (float("inf"), float("-inf")):
                kind, text = "e", "#NUM!"
            else:
                kind, text = "n", repr(float(value)).removesuffix(".0")
        elif isinstance(value, str) and value.startswith("#") and value.endswith(("!", "?", "A")) and \
                value in _ERROR_TEXTS:
            kind, text = "e", value
        elif value is None:
            return match.group(0)
        else:
            kind, text = "str", escape(str(value))
        type_attr = "" if kind == "n" else f' t="{kind}"'
        return f'<c r="{ref}"{attrs}{type_attr}><f>{formula}</f><v>{text}</v></c>'
    return _FORMULA_CELL.sub(cell, xml)


_ERROR_TEXTS = {"#NULL!", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#N/A"}


def preview_value(value: Any) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
