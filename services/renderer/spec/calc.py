"""Computed values for the formula cells of a spec workbook.

openpyxl writes a formula without its value, so any reader of cached values (pandas, openpyxl's
`data_only`, quick-look viewers, mail previews, our own preview) would see empty cells until Excel
recalculates. Here the spec's formulas are computed over its own values: plain arithmetic and SUM,
AVERAGE, MIN, MAX, COUNT, ROUND and ABS by the renderer itself (tens of microseconds a formula), any
other formula by the `formulas` package (Excel's functions in Python, compiled once per shape; about a
millisecond a formula). The values are written into the saved file's sheet XML, each (`<v>`, typed as a
number, text, boolean or error) beside its formula. Excel and LibreOffice still recalculate on opening
(openpyxl's `fullCalcOnLoad`); functions newer than the file format are stored with their `_xlfn.`
prefix, or they would read them as unknown names (excel_formula).

What cannot be computed is reported, not hidden: a formula that is wrong in the workbook (its value an
Excel error such as `#DIV/0!` or `#N/A`, a circular reference, a sheet that does not exist) is a
`formula_error` warning, and one the engine does not compute (a function it lacks, a formula reading more
than a million cells, a workbook past the CPU budget) a `formula_unsupported` warning, each naming the
cell and its place in the spec; a cell with no value is written without one.
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
# The engine takes 0.5-1 ms a formula (more over long ranges), the arithmetic path tens of microseconds:
# a workbook's formulas are computed up to these bounds, well inside a spec render's limits (240 s of CPU).
MAX_FORMULAS = 100_000
BUDGET_S = 30.0
EXCEL_EPOCH = datetime(1899, 12, 30)

# A cell or range reference (B2, B2:D9, whole columns B:D, whole rows 2:9), optionally on another sheet;
# outside string literals.
_REF = re.compile(r"(?<![\w.$])((?:'(?:[^']|'')+'|[A-Za-z_][\w.]*)!)?"
                  r"(\$?[A-Za-z]{1,3}\$?\d+(?::\$?[A-Za-z]{1,3}\$?\d+)?|\$?[A-Za-z]{1,3}:\$?[A-Za-z]{1,3}"
                  r"|\$?\d+:\$?\d+)(?![\w(!])")
_STRING = re.compile(r'"(?:[^"]|"")*"')
_CELL = re.compile(r"(\$?)([A-Za-z]{1,3})(\$?)(\d+)")
_COLUMN = re.compile(r"(\$?)([A-Za-z]{1,3})")
_ROW = re.compile(r"(\$?)(\d+)")
MAX_ROW, MAX_COLUMN = 1_048_576, 16_384  # Excel's sheet
MAX_NESTING = 64  # Excel's own limit on nested functions
MAX_CELLS = 1_000_000  # cells one formula reads (its ranges cut to the sheet's cells), all its ranges together
# Functions whose value depends on a range's size, not only on its cells: a range beyond the sheet's cells
# (a whole column) is cut to the cells the sheet has, so these would be wrong over one.
_SIZE_FUNCTIONS = re.compile(r"(?<![\w.])(ROWS|COLUMNS|ROW|COLUMN|COUNTBLANK)\s*\(", re.IGNORECASE)

Key = tuple[int, int, int]  # sheet index, row, column (1-based, as Excel's)


class _Unsupported(Exception):
    """A formula that is not computed here (a function the engine lacks)."""

    code = "formula_unsupported"


class _Invalid(_Unsupported):
    """A formula that is wrong in itself (a circular reference, a sheet that does not exist): no
    spreadsheet program computes it."""

    code = "formula_error"


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


def warm() -> None:
    """Load the engine and its function tables (1.5-2 s of CPU, most of it scipy): the spec zygote does it
    once, so that no spec worker forked from it pays for it in a job."""
    import formulas

    _silence()
    formulas.Parser().ast('=IF(A1>0,SUMIF(B1:B2,">0"),TEXT(A1,"0"))')[1].compile()


def _silence() -> None:
    logging.getLogger("formulas").setLevel(logging.CRITICAL)
    logging.getLogger("schedula").setLevel(logging.CRITICAL)


def compute(book: Workbook) -> Result:
    """Every formula's value, evaluated in dependency order (iteratively: a running total down
    10,000 rows is no recursion 10,000 deep)."""
    if not book.formulas:
        return Result({}, set(), [])
    _silence()
    engine = _Engine(book)
    started = time.process_time()  # CPU time: the same bound on a busy machine
    for n, key in enumerate(book.formulas):
        # The engine's first load in a process (when the zygote did not do it) is not the workbook's cost.
        if n >= MAX_FORMULAS or time.process_time() - engine.loading_s - started > BUDGET_S:
            left = len(book.formulas) - len(engine.done) - len(engine.failed)
            engine.warnings.append({"code": "formula_unsupported", "where": book.formulas[key][1], "message": (
                f"{left} formula cells from here on were not computed (at most {MAX_FORMULAS} formulas or "
                f"{BUDGET_S:.0f} s of CPU time computing a workbook): the file holds no value for them")})
            break
        engine.evaluate(key)
    return Result(engine.done, engine.errors, engine.warnings)


Ref = tuple[int, int, int, int, int]  # sheet, first row, first column, last row, last column


class _Engine:
    def __init__(self, book: Workbook) -> None:
        self.book = book
        self._parser: Any = None
        self.loading_s = 0.0
        self.sheet_index = {name.upper(): i for i, name in enumerate(book.names)}
        self.done: dict[Key, Any] = {}
        self.failed: dict[Key, str] = {}  # each cell not computed, and its warning's code
        self.errors: set[Key] = set()
        self.warnings: list[dict[str, str]] = []
        self.compiled: dict[str, _Compiled | None] = {}
        self.arithmetic: dict[str, Any] = {}
        self.parsed: dict[Key, tuple[list[Ref], str, str]] = {}
        # Ranges whose formula cells are all computed, and their values: a column of =B2/SUM($B$2:$B$999)
        # reads the range once, not once a formula.
        self.settled: set[Ref] = set()
        self.range_values: dict[tuple[Ref, bool], Any] = {}

    # --- references ---

    def _parse(self, formula: str, key: Key) -> tuple[list[Ref], str, str]:
        """The formula's references in order, each (sheet, first row, first column, last row, last
        column); its shape: the formula with its relative references as offsets from its cell, so one
        compiled function serves a whole column of `=B2*C2`, `=B3*C3`, ...; and the formula as the engine
        reads it, each reference past the sheet's cells cut to them."""
        if (known := self.parsed.get(key)) is not None:
            return known
        refs: list[Ref] = []
        clipped = False
        engine_refs: list[str] = []

        def reference(match: re.Match[str]) -> str:
            nonlocal clipped
            sheet_name, area = match.group(1), match.group(2)
            sheet = key[0]
            if sheet_name:
                name = sheet_name[:-1]
                if name.startswith("'"):
                    name = name[1:-1].replace("''", "'")
                if name.upper() not in self.sheet_index:
                    raise _Invalid(f"the sheet {name!r} does not exist")
                sheet = self.sheet_index[name.upper()]
            r1, c1, r2, c2, shape = _area(area, key)
            # Past the sheet's last row and column every cell is empty: a whole column (B:B) or a range as
            # large as the sheet (A1:XFD1048576) is read as far as the sheet has cells.
            last_row, last_column = self.book.sizes[sheet]
            cut = (max(r1, min(r2, last_row)), max(c1, min(c2, last_column)))
            refs.append((sheet, r1, c1, *cut))
            if cut == (r2, c2) and _CELL.match(area):
                engine_refs.append(match.group(0))
                return f"{sheet}!{shape}"
            clipped = True
            engine_refs.append(f"{sheet_name or ''}{get_column_letter(c1)}{r1}:{get_column_letter(cut[1])}{cut[0]}")
            return f"{sheet}!R{r1}C{c1}:R{cut[0]}C{cut[1]}"

        strings: list[str] = []

        def keep(match: re.Match[str]) -> str:
            strings.append(match.group())
            return f"\0{len(strings) - 1}\0"
        masked = _STRING.sub(keep, formula)
        depth = _nesting(masked)
        if depth > MAX_NESTING:
            raise _Invalid(f"it is nested {depth} levels deep, and Excel takes at most {MAX_NESTING}")
        shaped = _REF.sub(reference, masked)
        if clipped and _SIZE_FUNCTIONS.search(masked):
            raise _Unsupported("a range beyond the sheet's cells (a whole column or row) where its size counts")
        parts = iter(engine_refs)
        engine = _REF.sub(lambda _: next(parts), masked) if clipped else masked

        def unmask(text: str) -> str:
            return re.sub("\0(\\d+)\0", lambda m: strings[int(m.group(1))], text) if strings else text
        self.parsed[key] = (refs, unmask(shaped), unmask(engine))
        return self.parsed[key]

    def _compile(self, formula: str, key: Key) -> _Compiled:
        _, shape, formula = self._parse(formula, key)
        if shape in self.compiled:
            cached = self.compiled[shape]
            if cached is None:
                raise _Unsupported("the formula cannot be computed here")
            return cached
        try:
            if self._parser is None:
                loading = time.process_time()
                import formulas

                self._parser = formulas.Parser()
                self._parser.ast("=IF(1,2,3)")[1].compile()  # loads the function tables
                self.loading_s = time.process_time() - loading
            function = self._parser.ast("=" + formula)[1].compile()
        except Exception as exc:
            self.compiled[shape] = None
            raise _Unsupported(f"the formula cannot be read ({_short(exc)})") from None
        names = [_normal(m.group(0)) for m in _REF.finditer(_STRING.sub(lambda m: " " * len(m.group()), formula))]
        inputs = []
        for name in function.inputs:
            normal = _normal(name)
            if normal not in names:
                self.compiled[shape] = None
                raise _Unsupported(f"the reference {name} is not supported")
            inputs.append(names.index(normal))
        compiled = _Compiled(function, inputs)
        self.compiled[shape] = compiled
        return compiled

    # --- evaluation ---

    def _value(self, key: Key) -> Any:
        if key in self.book.formulas:
            return self.done.get(key)
        value = self.book.values.get(key)
        return _empty() if value is None else value

    def _input(self, ref: Ref, engine: bool = False) -> Any:
        """A reference's value: a cell's, or a range's values (a numpy array for the engine, a list for the
        arithmetic path, which needs no numpy)."""
        sheet, r1, c1, r2, c2 = ref
        if (r1, c1) == (r2, c2):
            value = self._value((sheet, r1, c1))
            return _engine_empty() if engine and value is _EMPTY_CELL else value
        if (cached := self.range_values.get((ref, engine))) is not None:
            return cached
        rows = [[self._value((sheet, r, c)) for c in range(c1, c2 + 1)] for r in range(r1, r2 + 1)]
        if not engine:
            value = _Range([v for row in rows for v in row])
        else:
            import numpy as np

            empty = _engine_empty()
            value = np.array([[empty if v is _EMPTY_CELL else v for v in row] for row in rows], dtype=object)
        if ref in self.settled:
            self.range_values[(ref, engine)] = value
        return value

    def _deps(self, refs: list[Ref]) -> list[Key]:
        """The formula cells the references take that are still to be computed; raises if one could not be."""
        if sum((r2 - r1 + 1) * (c2 - c1 + 1) for _, r1, c1, r2, c2 in refs) > MAX_CELLS:
            raise _Unsupported(f"it reads more than {MAX_CELLS:,} cells")
        deps = []
        for ref in refs:
            if ref in self.settled:
                continue
            sheet, r1, c1, r2, c2 = ref
            pending = []
            formulas = self.book.formulas
            for r in range(r1, r2 + 1):
                for c in range(c1, c2 + 1):
                    cell = (sheet, r, c)
                    if cell in formulas and cell not in self.done:
                        if cell in self.failed:
                            raise (_Invalid if self.failed[cell] == _Invalid.code else _Unsupported)(
                                f"it takes {self._cell_name(cell)[:-1]}, which has no value")
                        pending.append(cell)
            if pending:
                deps.extend(pending)
            else:
                self.settled.add(ref)
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
                self._fail(key, where, str(exc), exc.code)
                continue
            if not pending:
                stack.pop()
                on_stack.discard(key)
                self._run(key, formula, where, refs)
            elif key in on_stack or any(dep in on_stack or dep == key for dep in pending):
                self._fail(key, where, "a circular reference: it takes its own value, through the cells it "
                                       "refers to", _Invalid.code)
            else:
                on_stack.add(key)
                stack.extend(pending)

    def _run(self, key: Key, formula: str, where: str, refs: list[Ref]) -> None:
        shape = self._parse(formula, key)[1]
        arithmetic = self.arithmetic.get(shape, _UNSEEN)
        if arithmetic is _UNSEEN:
            arithmetic = self.arithmetic[shape] = _arithmetic(formula)
        if arithmetic is not None:
            value = _run_arithmetic(arithmetic, [self._input(ref) for ref in refs])
            self.done[key] = value
            if isinstance(value, str) and value in _ERROR_TEXTS:
                self.errors.add(key)
                self._warn("formula_error", where, f"{self._cell_name(key)} ={_shown(formula)} computes to {value}")
            return
        try:
            compiled = self._compile(formula, key)
            value = compiled.function(*(self._input(refs[i], engine=True) for i in compiled.inputs))
        except _Unsupported as exc:
            self._fail(key, where, str(exc), exc.code)
            return
        except Exception as exc:
            self._fail(key, where, _short(exc))
            return
        from formulas.functions import XlError

        value = _scalar(value)
        if isinstance(value, XlError):
            self.done[key] = str(value)
            self.errors.add(key)
            self._warn("formula_error", where, f"{self._cell_name(key)} ={_shown(formula)} computes to {value}")
            return
        self.done[key] = value

    def _fail(self, key: Key, where: str, why: str, code: str = _Unsupported.code) -> None:
        self.failed[key] = code
        self._warn(code, where, f"{self._cell_name(key)} ={_shown(self.book.formulas[key][0])} was not computed "
                                f"({why}): the file holds no value for it")

    def _cell_name(self, key: Key) -> str:
        return f"cell {get_column_letter(key[2])}{key[1]} of sheet {self.book.names[key[0]]!r}:"

    def _warn(self, code: str, where: str, message: str) -> None:
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append({"code": code, "message": message[:300], "where": where})


def _shown(formula: str) -> str:
    """A formula as a warning quotes it: its start, when it is long."""
    return formula if len(formula) <= 80 else formula[:77] + "..."


def _nesting(masked: str) -> int:
    """How deep the formula's parentheses go (its string literals masked)."""
    depth = deepest = 0
    for char in masked:
        if char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    return deepest


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
    except (SyntaxError, RecursionError, MemoryError):  # a chain of thousands of terms: the engine's then
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
    try:
        return compile(tree, "<formula>", "eval")
    except (RecursionError, MemoryError):
        return None


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


def _area(text: str, at: Key) -> tuple[int, int, int, int, str]:
    """A reference's first and last row and column, and its shape relative to the cell at `at` (a whole
    column spans every row of the sheet, a whole row every column)."""
    first, _, last = text.partition(":")
    last = last or first
    if _CELL.fullmatch(first):
        (r1, c1, shape1), (r2, c2, shape2) = _cell(first, at), _cell(last, at)
    elif (m1 := _COLUMN.fullmatch(first)) and (m2 := _COLUMN.fullmatch(last)):
        c1, shape1 = _axis(m1, at[2], "C", column_index_from_string)
        c2, shape2 = _axis(m2, at[2], "C", column_index_from_string)
        r1, r2 = 1, MAX_ROW
    elif (m1 := _ROW.fullmatch(first)) and (m2 := _ROW.fullmatch(last)):
        r1, shape1 = _axis(m1, at[1], "R", int)
        r2, shape2 = _axis(m2, at[1], "R", int)
        c1, c2 = 1, MAX_COLUMN
    else:
        raise _Unsupported(f"the reference {text} is not supported")
    if not (1 <= min(r1, r2) and max(r1, r2) <= MAX_ROW and 1 <= min(c1, c2) and max(c1, c2) <= MAX_COLUMN):
        raise _Invalid(f"the reference {text} is outside the sheet")
    return min(r1, r2), min(c1, c2), max(r1, r2), max(c1, c2), f"{shape1}:{shape2}"


def _axis(match: re.Match[str], at: int, letter: str, number: Callable[[str], int]) -> tuple[int, str]:
    value = number(match.group(2).upper())
    return value, f"{letter}{value}" if match.group(1) else f"{letter}[{value - at}]"


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


# Functions newer than the file format's first edition: a file stores each with its `_xlfn.` prefix, or
# Excel and LibreOffice read an unknown name (#NAME?) when they recalculate it. (FILTER and SORT: below.)
_NEWER = frozenset("""
ACOT ACOTH ARABIC ARRAYTOTEXT BETA.DIST BETA.INV BINOM.DIST BINOM.DIST.RANGE BINOM.INV BITAND BITLSHIFT BITOR
BITRSHIFT BITXOR BYCOL BYROW CEILING.MATH CEILING.PRECISE CHISQ.DIST CHISQ.DIST.RT CHISQ.INV CHISQ.INV.RT
CHISQ.TEST CHOOSECOLS CHOOSEROWS CONCAT CONFIDENCE.NORM CONFIDENCE.T COT COTH COVARIANCE.P COVARIANCE.S CSC
CSCH DAYS DECIMAL DROP ERF.PRECISE ERFC.PRECISE EXPAND EXPON.DIST F.DIST F.DIST.RT F.INV F.INV.RT F.TEST
FLOOR.MATH FLOOR.PRECISE FORECAST.ETS FORECAST.ETS.CONFINT FORECAST.ETS.SEASONALITY FORECAST.ETS.STAT
FORECAST.LINEAR GAMMA GAMMA.DIST GAMMA.INV GAMMALN.PRECISE GAUSS GROUPBY HSTACK HYPGEOM.DIST IFNA IFS IMCOSH
IMCOT IMCSC IMCSCH IMSEC IMSECH IMSINH IMTAN ISFORMULA ISOWEEKNUM LAMBDA LET LOGNORM.DIST LOGNORM.INV
MAKEARRAY MAP MAXIFS MINIFS MODE.MULT MODE.SNGL MUNIT NEGBINOM.DIST NORM.DIST NORM.INV NORM.S.DIST NORM.S.INV
NUMBERVALUE PDURATION PERCENTILE.EXC PERCENTILE.INC PERCENTOF PERCENTRANK.EXC PERCENTRANK.INC PERMUTATIONA PHI
PIVOTBY POISSON.DIST QUARTILE.EXC QUARTILE.INC RANDARRAY RANK.AVG RANK.EQ REDUCE REGEXEXTRACT REGEXREPLACE
REGEXTEST RRI SCAN SEC SECH SEQUENCE SINGLE SKEW.P SORTBY STDEV.P STDEV.S SWITCH T.DIST T.DIST.2T T.DIST.RT
T.INV T.INV.2T T.TEST TAKE TEXTAFTER TEXTBEFORE TEXTJOIN TEXTSPLIT TOCOL TOROW TRIMRANGE UNICHAR UNICODE
UNIQUE VALUETOTEXT VAR.P VAR.S VSTACK WEIBULL.DIST WRAPCOLS WRAPROWS XLOOKUP XMATCH XOR Z.TEST
""".split())
_NEWER_WORKSHEET = frozenset({"FILTER", "SORT"})  # `_xlfn._xlws.`
_FUNCTION = re.compile(r"(?<![\w.])([A-Za-z][\w.]*)(?=\s*\()")


def excel_formula(formula: str) -> str:
    """A spec's formula as the file stores it: with its "=", and each newer function prefixed."""
    text = formula[1:] if formula.startswith("=") else formula
    strings: list[str] = []

    def keep(match: re.Match[str]) -> str:
        strings.append(match.group())
        return f"\0{len(strings) - 1}\0"

    def prefix(match: re.Match[str]) -> str:
        name = match.group(1).upper()
        if name in _NEWER:
            return "_xlfn." + match.group(1)
        return "_xlfn._xlws." + match.group(1) if name in _NEWER_WORKSHEET else match.group(1)
    stored = _FUNCTION.sub(prefix, _STRING.sub(keep, text))
    return "=" + re.sub("\0(\\d+)\0", lambda m: strings[int(m.group(1))], stored)


_ERROR_TEXTS = {"#NULL!", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#N/A"}


def preview_value(value: Any) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
