"""PostgreSQL error text without the row values it quotes.

A server error can quote the data it failed on: `Failing row contains (...)`, `Key (email)=(...)`,
`COPY customers, line 3: "<the whole row>"`, `invalid input syntax for type integer: "<value>"`. Before
masking, that data is production's. Such text goes to Dagster's event log, the CLI and exceptions, none of
which may hold customer data, so it passes through `withhold_row_data` first: values are replaced and the
rest (what failed, where, which constraint) is kept.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import psycopg

WITHHELD = "(withheld)"

# Where a field of an error message starts: libpq's labels (two spaces after the colon), the client tools'
# own lines, optionally after the embedded server's log line prefix. A field runs until the next one, so a
# value with line breaks in it is withheld whole.
_LOG_PREFIX = r"(?:\d{4}-\d\d-\d\d [\d:.]+ \w+ \[\d+\] )?"
_FIELD_START = re.compile(
    rf"^{_LOG_PREFIX}"
    r"(?:(?:ERROR|WARNING|FATAL|PANIC|LOG|NOTICE|INFO|DETAIL|HINT|QUERY|CONTEXT|STATEMENT|LOCATION):  "
    r"|LINE \d+: |pg_(?:restore|dump|dumpall|ctl): |Command was: )",
    re.MULTILINE,
)

_KEY_SUFFIX = r'(?: already exists| is duplicated| is (?:not present in|still referenced from) table "[^"\n]*")\.'
_RULES: list[tuple[re.Pattern[str], str]] = [
    # DETAIL of NOT NULL and CHECK violations: the whole new row.
    (re.compile(r"Failing row contains .*", re.DOTALL), f"Failing row contains {WITHHELD}."),
    # DETAIL of unique, foreign key and exclusion violations: the columns stay, the values go.
    (re.compile(rf"(Key \(.*?\))=\(.*\)({_KEY_SUFFIX})?.*", re.DOTALL), rf"\1={WITHHELD}\2"),
    # CONTEXT of a COPY: the line (or the column's value) it stopped at.
    (re.compile(r"(\bCOPY [^\s,]+, line \d+(?:, column [^:\n]+)?): .*", re.DOTALL), rf"\1: {WITHHELD}"),
    # CONTEXT of a bad JSON value: its first characters.
    (re.compile(r"(JSON data, line \d+): .*", re.DOTALL), rf"\1: {WITHHELD}"),
    (re.compile(r'Token ".*" is invalid', re.DOTALL), f'Token "{WITHHELD}" is invalid'),
    (re.compile(r'(\bvalue )".*"( is out of range| for ")', re.DOTALL), rf'\1"{WITHHELD}"\2'),
    # CONTEXT of an error while binding: the parameter's value when the server is set to show it
    # (log_parameter_max_length_on_error).
    (re.compile(r"(parameter \$\d+ = )'.*'", re.DOTALL), rf"\1'{WITHHELD}'"),
    # Input functions: `invalid input syntax for type date: "<value>"`, `malformed array literal: "<value>"`.
    (re.compile(r': ".*"', re.DOTALL), f': "{WITHHELD}"'),
]


# Fields that belong to the message before them; any other field starts a message of its own.
_PART_OF_MESSAGE = re.compile(rf"^{_LOG_PREFIX}(?:(?:DETAIL|HINT|QUERY|CONTEXT|STATEMENT|LOCATION):  |LINE \d+: )")
_SAID_BY_FUNCTION = re.compile(rf"^({_LOG_PREFIX}(?:DETAIL|HINT):  ).*", re.DOTALL)
# The primary message: after the last "ERROR:  " of its line (client tools, server logs), else all of it.
_PRIMARY = re.compile(r"^(.*(?:ERROR|WARNING|FATAL|PANIC):  |)(.*)$", re.DOTALL)
_RAISED = re.compile(rf"^{_LOG_PREFIX}CONTEXT:  .*\bat RAISE\b", re.DOTALL)
_OWN_MESSAGE_PREFIX = "refresh_pipeline."


def withhold_row_data(text: str) -> str:
    """`text` (a PostgreSQL error, a client tool's stderr, server log lines) with quoted row values replaced
    by "(withheld)"; the message, constraint, table and column names stay. A message a database function
    raised itself (RAISE EXCEPTION in a CHECK's function, say) says whatever that function put in it: its
    message, detail and hint are withheld whole, unless the function is one of ours."""
    starts = sorted({0, *(match.start() for match in _FIELD_START.finditer(text))})
    fields = [text[start:end] for start, end in zip(starts, [*starts[1:], len(text)], strict=True)]
    messages: list[list[str]] = []
    for field in fields:
        if messages and _PART_OF_MESSAGE.match(field):
            messages[-1].append(field)
        else:
            messages.append([field])
    return "".join(_withhold_in_message(message) for message in messages)


def _withhold_in_message(fields: list[str]) -> str:
    opening, *rest = fields
    prefix, primary = _PRIMARY.match(opening).groups()
    if any(_RAISED.match(field) for field in rest) and not primary.startswith(_OWN_MESSAGE_PREFIX):
        opening = _in_body(opening, lambda _body: f"{prefix}{WITHHELD} (raised by a database function)")
        rest = [_in_body(field, lambda body: _SAID_BY_FUNCTION.sub(rf"\1{WITHHELD}", body)) for field in rest]
    return "".join(_in_body(field, _withhold_in_body) for field in [opening, *rest])


def _in_body(field: str, change: Callable[[str], str]) -> str:
    """`change` applied to the field without its line breaks at the end, which stay."""
    body = field.rstrip("\n")
    return change(body) + field[len(body) :]


def _withhold_in_body(body: str) -> str:
    for pattern, replacement in _RULES:
        body = pattern.sub(replacement, body)
    return body


def first_line_without_row_data(error: psycopg.Error) -> str:
    """The error's type and message line, row values withheld; when a function raised it (so its own text is
    withheld too), also where."""
    lines = withhold_row_data(str(error)).splitlines()
    raised_in = next((line for line in lines if _RAISED.match(line)), None)
    return f"{type(error).__name__}: {lines[0]}" + (f" ({raised_in.removeprefix('CONTEXT:  ')})" if raised_in else "")


def log_tail_without_row_data(log_file: Path, lines: int = 8, read_bytes: int = 65536) -> list[str]:
    """The last `lines` lines of a server log, row values withheld. Only the file's end is read; text before
    the first field that starts in it is dropped (it may be the rest of a value whose start was not read)."""
    with log_file.open("rb") as log:
        size = log.seek(0, os.SEEK_END)
        log.seek(max(0, size - read_bytes))
        text = log.read().decode(errors="replace")
    if size > read_bytes:
        first = _FIELD_START.search(text)
        text = text[first.start() :] if first else ""
    return withhold_row_data(text).splitlines()[-lines:]


class DatabaseStepError(Exception):
    """A PostgreSQL error raised by a step, its message without row values (`withhold_row_data`)."""


P = ParamSpec("P")
R = TypeVar("R")


def without_row_data_in_errors(compute: Callable[P, R]) -> Callable[P, R]:
    """Wrap a Dagster asset or check function: a PostgreSQL error leaving it is raised again as a
    DatabaseStepError whose message holds no row values. The original is not chained (Dagster would record its
    message too); its traceback is kept."""

    @functools.wraps(compute)
    def compute_without_row_data(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return compute(*args, **kwargs)
        except psycopg.Error as error:
            message = f"{type(error).__name__} (SQLSTATE {error.sqlstate}): {withhold_row_data(str(error))}"
            raise DatabaseStepError(message).with_traceback(error.__traceback__) from None

    compute_without_row_data.withholds_row_data = True  # type: ignore[attr-defined]
    return compute_without_row_data
