"""Masked values and the length limits of their columns (varchar(n), char(n))."""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
from psycopg import sql

from refresh_pipeline.errors import RefreshError
from refresh_pipeline.masking.catalog import ColumnInfo, TableInfo
from refresh_pipeline.masking.patterns import (
    ANY_PII_PATTERN,
    PHONE_SHAPED_UPI_LOCAL,
    PLACEHOLDER_CHARACTERS,
    pii_kind,
    url_decoded_at,
)
from refresh_pipeline.masking.policy import REDACTED, ArrayRule, TablePolicy, TransformRule
from refresh_pipeline.row_data_in_errors import first_line_without_row_data

# Transforms whose every value is this long (email) or as long as asked (hash): a shorter column is refused
# by the policy check before any work.
EMAIL_LENGTH = 28
# The longest value these transforms produce (from their lists in functions.sql; a test holds them to it).
# In a shorter column their trailing words are dropped until the value fits: `Lakshmi Srinivasan` is
# `Lakshmi` in a varchar(14), `12, Gandhi Nagar Lane, Andheri East` `12, Gandhi Nagar Lane` in a varchar(24).
FITTED_MAX_LENGTHS = {"first_name": 7, "last_name": 10, "name": 18, "address": 36}
FIT_ADVICE = "Use a transform whose values fit (`hash` with a `length`, `redact`), or widen the column."
# Transforms whose values may be longer than the original, by how much depending on the value: measured on
# production by `validate` (masked_lengths_too_long). A UPI handle's local part becomes this many letters
# (unless it is a phone: phones keep their spelling), an email EMAIL_LENGTH characters; a masked IPv4
# address has at most IPV4_LENGTH characters, an IPv6 one always IPV6_LENGTH, before a kept /prefix.
GROWING_TRANSFORMS = frozenset({"upi", "scrub", "phone", "ip"})
UPI_LOCAL_LENGTH = 10
IPV4_LENGTH = 14
IPV6_LENGTH = 39
EMAIL_AT_ITS_DOMAIN = "{transform: email, keep_domain: true}"  # measured as the GROWING_TRANSFORMS are


def length_problem(column: ColumnInfo, rule: TransformRule) -> str | None:
    """A transform whose values never fit the column (or an array's elements): refused before any work."""
    if column.max_length is None:
        return None
    # `email` at its own domain is as long as that domain makes it: measured by validate (masked_length).
    email = None if rule.keeps_domains else EMAIL_LENGTH
    minimum = {"email": email, "hash": rule.param_dict.get("length", 64)}.get(rule.transform)
    if minimum and column.max_length < minimum:
        return f"`{rule.transform}` produces up to {minimum} characters; the column holds {column.max_length}"
    if rule.transform == "redact":
        value = rule.param_dict.get("value", REDACTED)
        if len(value) > column.max_length:
            return f"the redact value is {len(value)} characters; the column holds {column.max_length}"
    return None


def fitted(column: ColumnInfo, rule: TransformRule, expression: sql.Composable) -> sql.Composable:
    """`expression` cut to the column's length by whole words, when its transform could overflow it."""
    longest = FITTED_MAX_LENGTHS.get(rule.transform)
    if longest is None or column.max_length is None or column.max_length >= longest:
        return expression
    return sql.SQL("refresh_pipeline.fit_words({}, {})").format(expression, sql.Literal(column.max_length))


def too_long_for_their_columns(
    conn: psycopg.Connection, table: TableInfo, masked: list[str], staging: sql.Composable
) -> list[str]:
    """For masked rows computed into `staging` (text columns), which masked columns hold values longer than
    the table's column allows (for arrays: an element longer than the elements' limit): how many rows and
    how long, never the values."""
    limited = [c for c in table.columns if c.name in masked and c.max_length is not None]
    if not limited:
        return []

    def longest(column: ColumnInfo) -> sql.Composable:
        if column.is_array:  # the longest element of each row's array
            return sql.SQL("(SELECT max(length(e)) FROM unnest({}::text[]) AS e)").format(sql.Identifier(column.name))
        return sql.SQL("length({}::text)").format(sql.Identifier(column.name))

    measures = sql.SQL(", ").join(
        sql.SQL("count(*) FILTER (WHERE {v} > {n}), max({v})").format(v=longest(c), n=sql.Literal(c.max_length))
        for c in limited
    )
    row = conn.execute(sql.SQL("SELECT {} FROM {}").format(measures, staging)).fetchone()
    return [
        f"{table.qualified_name}.{column.name}: {too_long:,} masked value(s) longer than its {column.max_length} "
        f"characters (up to {length})"
        for column, too_long, length in zip(limited, row[0::2], row[1::2], strict=True)
        if too_long
    ]


def _placeholder(v: sql.Composable) -> sql.Composed:
    return sql.SQL("btrim({}, {}) = ''").format(v, sql.Literal(PLACEHOLDER_CHARACTERS))


def _upi_length(v: sql.Composable) -> sql.Composed:
    local = sql.SQL("substring({} FROM '^(.*)@')").format(v)
    return sql.SQL(
        "CASE WHEN strpos({v}, '@') = 0 THEN {letters}"
        " ELSE length({v}) - length({local}) + CASE WHEN {local} ~ {phone} THEN length({local}) ELSE {letters} END END"
    ).format(v=v, local=local, phone=sql.Literal(PHONE_SHAPED_UPI_LOCAL), letters=sql.Literal(UPI_LOCAL_LENGTH))


def _scrub_length(v: sql.Composable) -> sql.Composed:
    """Each token of the pattern replaced: an email by EMAIL_LENGTH characters, a UPI handle's local part by
    its letters, a phone by a phone spelled alike. One in a URL ('%40' for its '@') grows as much as it would
    with its '@'."""
    token = url_decoded_at(sql.SQL("m[1]"))
    delta = sql.SQL(
        "CASE {kind} WHEN 'phone' THEN 0 WHEN 'email' THEN {email} - length({t}) ELSE {upi} - length({t}) END"
    ).format(kind=pii_kind(token), t=token, email=sql.Literal(EMAIL_LENGTH), upi=_upi_length(token))
    tokens = sql.SQL("regexp_matches({}, {}, 'g') AS m").format(v, sql.Literal(ANY_PII_PATTERN))
    return sql.SQL("length({v}) + coalesce((SELECT sum({delta}) FROM {tokens}), 0)").format(
        v=v, delta=delta, tokens=tokens
    )


def masked_length(transform: str, v: sql.Composable, domains: tuple[str, ...] = ()) -> sql.Composed:
    """The length of `v` once masked with one of GROWING_TRANSFORMS (or EMAIL_AT_ITS_DOMAIN, at every domain or
    only at those of `domains`, keep_domains), without the key: exact but for `ip` (IPV4_LENGTH at most). NULL
    stays NULL, and placeholders (spaces and punctuation) stay as they are."""
    if transform == EMAIL_AT_ITS_DOMAIN:  # 16 letters, then the domain after the last '@', spaces around kept
        # functions.sql email_domain, spelled here: validate reads production without the functions
        domain = sql.SQL("substring(btrim({v}) FROM '@([^@]*)$')").format(v=v)
        at_its_domain = sql.SQL("{local} + length({domain})").format(
            local=sql.Literal(len("abcdefghijklmnop@")), domain=domain
        )
        if domains:
            at_its_domain = sql.SQL("CASE WHEN lower({domain}) = ANY({domains}) THEN {kept} ELSE {email} END").format(
                domain=domain, domains=sql.Literal(list(domains)), kept=at_its_domain, email=sql.Literal(EMAIL_LENGTH)
            )
        grown = sql.SQL(
            "CASE WHEN strpos({v}, '@') = 0 THEN {email} ELSE {at_its_domain} + length({v}) - length(btrim({v})) END"
        ).format(v=v, email=sql.Literal(EMAIL_LENGTH), at_its_domain=at_its_domain)
    elif transform == "upi":
        grown = _upi_length(v)
    elif transform == "scrub":
        grown = _scrub_length(v)
    elif transform == "phone":  # digits keep their places; an email typed in is scrubbed
        grown = sql.SQL("CASE WHEN strpos({v}, '@') > 0 THEN {scrub} ELSE length({v}) END").format(
            v=v, scrub=_scrub_length(v)
        )
    elif transform == "ip":
        grown = sql.SQL(
            "CASE WHEN {v} ~ '^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+' THEN {v4} ELSE {v6} END"
            " + coalesce(length('/' || substring({v} FROM '/([0-9]{{1,3}})$')), 0)"
        ).format(v=v, v4=sql.Literal(IPV4_LENGTH), v6=sql.Literal(IPV6_LENGTH))
    else:
        raise ValueError(f"{transform} does not change a value's length by the value")
    return sql.SQL("CASE WHEN {v} IS NULL OR {placeholder} THEN length({v}) ELSE {grown} END").format(
        placeholder=_placeholder(v), v=v, grown=grown
    )


def masked_length_bound(transform: str, v: sql.Composable) -> sql.Composed:
    """Cheap: at least the masked length of `v` (or of any element, for an array's text). An email or UPI
    token holds one '@' and grows by at most EMAIL_LENGTH - 5 (`a@b.c`); a phone keeps its length."""
    if transform == "ip":
        return sql.SQL("{}").format(sql.Literal(IPV6_LENGTH + len("/128")))
    if transform == "upi":
        return sql.SQL("length({}) + {}").format(v, sql.Literal(UPI_LOCAL_LENGTH))
    if transform == EMAIL_AT_ITS_DOMAIN:  # a local part of one letter becomes 16
        return sql.SQL("length({}) + {}").format(v, sql.Literal(EMAIL_LENGTH))
    ats = url_decoded_at(v)  # a URL's '@' grows as much
    return sql.SQL("length({v}) + {growth} * (length({ats}) - length(replace({ats}, '@', '')))").format(
        v=v, ats=ats, growth=sql.Literal(EMAIL_LENGTH - len("a@b.c"))
    )


def masked_lengths_too_long(
    conn: psycopg.Connection,
    table: TableInfo,
    table_policy: TablePolicy,
    log: Callable[[str], None] = lambda _message: None,
) -> list[str]:
    """Which of the table's limited columns would hold masked values longer than they allow, measured on the
    values `conn` reads (production, read-only, before any work): how many rows and how long, never the values.
    One scan of the table for all of them (values that cannot outgrow the limit are not measured, so long
    free text costs little); none when no such column is masked with a GROWING_TRANSFORM."""
    measured: list[tuple[ColumnInfo, str, tuple[str, ...]]] = []
    for column in table.columns:
        rule = table_policy.columns.get(column.name)
        element = rule.element if isinstance(rule, ArrayRule) else rule
        if column.max_length is not None and isinstance(element, TransformRule):
            if element.transform in GROWING_TRANSFORMS:
                measured.append((column, element.transform, ()))
            elif element.keeps_domains:
                measured.append((column, EMAIL_AT_ITS_DOMAIN, element.param_dict.get("keep_domains", ())))
    if not measured:
        return []
    started = time.monotonic()
    names = ", ".join(column.name for column, _transform, _domains in measured)
    log(f"{table.qualified_name}: measuring how long {names} will be once masked (one read-only scan)")

    def longest(column: ColumnInfo, transform: str, domains: tuple[str, ...]) -> sql.Composable:
        if column.is_array:  # the longest element of each row's array
            return sql.SQL("(SELECT max({}) FROM unnest({}::text[]) AS e)").format(
                masked_length(transform, sql.SQL("e"), domains), sql.Identifier(column.name)
            )
        return masked_length(transform, sql.SQL("{}::text").format(sql.Identifier(column.name)), domains)

    measures = sql.SQL(", ").join(
        sql.SQL("count(*) FILTER (WHERE {bound} > {n} AND {v} > {n}), max({v}) FILTER (WHERE {bound} > {n})").format(
            v=longest(column, transform, domains),
            bound=masked_length_bound(transform, sql.SQL("{}::text").format(sql.Identifier(column.name))),
            n=sql.Literal(column.max_length),
        )
        for column, transform, domains in measured
    )
    try:
        with conn.transaction():  # a savepoint when the session's transaction is open: it stays usable
            row = conn.execute(sql.SQL("SELECT {} FROM {}").format(measures, table.ident)).fetchone()
    except psycopg.Error as error:
        raise RefreshError(
            f"{table.qualified_name}: cannot read its values to measure how long masked ones will be "
            f"({first_line_without_row_data(error)}); the snapshot reads them too"
        ) from None
    log(f"{table.qualified_name}: measured in {time.monotonic() - started:.1f} s")
    return [
        f"{table.qualified_name}.{column.name}: {too_long:,} value(s) would be longer than its {column.max_length} "
        f"characters once masked with `{_rule_text(transform, domains)}` (up to {length})"
        for (column, transform, domains), too_long, length in zip(measured, row[0::2], row[1::2], strict=True)
        if too_long
    ]


def _rule_text(transform: str, domains: tuple[str, ...]) -> str:
    return f"{{transform: email, keep_domains: [{', '.join(domains)}]}}" if domains else transform
