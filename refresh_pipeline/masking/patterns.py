"""The PII patterns the scrubber and the audit share, installed as refresh_pipeline.pii_pattern(),
unicode_pii_pattern() and any_pii_pattern() and read from here by whatever cannot call them (production,
through a read-only session)."""

import string

import psycopg
from psycopg import sql

# Emails, UPI handles and Indian phone numbers in any common spelling, as one pattern without capture groups:
# regexp_matches() returns the whole match of such a pattern as m[1] (a group around it gives the same, a
# few % slower). A phone's country code may come without its '+' (919876543210: WhatsApp links, SMS
# gateways), as the number audit and UPI handles' local parts read it too.
_EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
_UPI = r"[A-Za-z0-9._-]+@[A-Za-z]{2,}(?![A-Za-z0-9])"
# A national number's 10 digits as 10, 5-5, 4-3-3, 4-6 or 3-3-4 (`9876543210`, `98765 43210`, `9876 543 210`,
# `9876 543210`, `987-654-3210`), one space or hyphen between groups. One alternative from a shared first three
# digits: separate alternatives per grouping made all tokenising ~30% slower, this one 4-8%.
_NATIONAL = r"[6-9][0-9]{2}(?:[0-9]{2}[ -]?[0-9]{5}|[0-9][ -][0-9]{3}[ -]?[0-9]{3}|[ -][0-9]{3}[ -][0-9]{4})"
_PHONE = rf"(?<![0-9A-Za-z+])(?:\+?91[ -]?|0)?{_NATIONAL}(?![0-9A-Za-z])"
PII_PATTERN = f"{_EMAIL}|{_UPI}|{_PHONE}"

# Letters beyond ASCII, for addresses written in them (`राम@gmail.com`, `सीता@डाटामेल.भारत`, `ravi@exämple.com`):
# PostgreSQL's [[:alpha:]] holds ASCII letters only under the C locale. Latin to the end of the Indic scripts
# and on to Greek Extended (their vowel signs and the joiners ZWNJ, ZWJ within words included), kana, CJK and
# Hangul. Left out is the punctuation an address ends before in a sentence: the multiplication and division
# signs, the Arabic comma, semicolon, question mark and full stop, the dandas । ॥, and the quotes and dashes of
# General Punctuation (“ ” — …).
_NON_ASCII_LETTERS = (
    r"\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u060B\u060D-\u061A\u061C-\u061E\u0620-\u06D3\u06D5-\u0963"
    r"\u0966-\u1FFF\u200C\u200D\u3040-\u9FFF\uAC00-\uD7AF"
)
_UNICODE_EMAIL = (
    rf"[{_NON_ASCII_LETTERS}A-Za-z0-9._%+-]+@[{_NON_ASCII_LETTERS}A-Za-z0-9-]+(?:\.[{_NON_ASCII_LETTERS}A-Za-z0-9-]+)+"
)
# PII_PATTERN with those addresses (on ASCII text the same tokens), for texts holding letters beyond ASCII: the
# wider classes cost every text ~20% more time to tokenise.
UNICODE_PII_PATTERN = f"{_UNICODE_EMAIL}|{_UPI}|{_PHONE}"

# The same in a URL's query string, where '@' is '%40' and '+' '%2B' (`?email=ravi%40gmail.com&phone=
# %2B919876543210`, `upi://pay?pa=ravi%40okaxis`), and a phone after an encoded separator (`Call%20driver%20at
# %209876543210`, whose digits follow a digit): what PII_PATTERN does not match, so that the two never find the
# same token. Read only in texts holding a '%' (ANY_PII_PATTERN): in PII_PATTERN its alternatives cost every
# text ~20% more time to tokenise.
URL_PII_PATTERN = (
    r"[A-Za-z0-9._%+-]+%40[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
    r"|[A-Za-z0-9._-]+%40[A-Za-z]{2,}(?![A-Za-z0-9])"
    r"|(?<![0-9A-Za-z+])%2[Bb]91[6-9][0-9]{9}(?![0-9A-Za-z])"
    rf"|(?<=%[0-9A-Fa-f]{{2}})(?:91[ -]?|0)?{_NATIONAL}(?![0-9A-Za-z])"
)
# All of them: for texts holding a '%', and where one pattern matters more than speed (validate reading
# production). On a text without '%' it finds what UNICODE_PII_PATTERN does, on an ASCII one what PII_PATTERN does.
ANY_PII_PATTERN = f"{UNICODE_PII_PATTERN}|{URL_PII_PATTERN}"


URL_AT = "%40"  # '@' in a URL's query string


def url_decoded_at(token: sql.Composable) -> sql.Composed:
    """functions.sql's url_decoded_at, for sessions without it (production, read-only): a token with a URL's
    '%40' read as '@'. Its '%' is a literal's, so not for a query that takes parameters."""
    return sql.SQL("replace({}, {}, '@')").format(token, sql.Literal(URL_AT))


def pii_kind(token: sql.Composable) -> sql.Composed:
    """functions.sql's pii_kind, for sessions without it (production, read-only): 'phone', 'email' or 'upi' of
    a token of the pattern whose '@' is one (a URL's '%40' replaced first). A token holds at most one '@': an
    email has a '.' after it, a UPI handle none."""
    return sql.SQL(
        "CASE WHEN strpos({t}, '@') = 0 THEN 'phone' WHEN strpos(substr({t}, strpos({t}, '@')), '.') > 0 THEN 'email'"
        " ELSE 'upi' END"
    ).format(t=token)


# A PAN as a whole value (the audit's detector, functions.sql id_pattern: the 4th letter is the holder type).
PAN_WHOLE = r"^[A-Z]{3}[ABCFGHLJPT][A-Z][0-9]{4}[A-Z]$"

# A UPI handle's local part masked like a phone (functions.sql: mask_upi_local); any other takes letters.
PHONE_SHAPED_UPI_LOCAL = r"^(\+?91|0)?[6-9][0-9]{9}$"
# What is_placeholder() strips: spaces and ASCII punctuation.
PLACEHOLDER_CHARACTERS = " \t\r\n" + string.punctuation

_CREATE = """
CREATE SCHEMA IF NOT EXISTS refresh_pipeline;
CREATE OR REPLACE FUNCTION refresh_pipeline.pii_pattern() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS {body};
CREATE OR REPLACE FUNCTION refresh_pipeline.unicode_pii_pattern() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS {unicode_body};
CREATE OR REPLACE FUNCTION refresh_pipeline.any_pii_pattern() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS {any_body};
-- The pattern a text is tokenised with: the wider ones only where they can find more, as they cost time.
CREATE OR REPLACE FUNCTION refresh_pipeline.pii_pattern_for(v text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN strpos(v, '%') > 0 THEN refresh_pipeline.any_pii_pattern()
                WHEN {beyond_ascii} THEN refresh_pipeline.unicode_pii_pattern()
                ELSE refresh_pipeline.pii_pattern() END
$$
"""
# A text holding a character beyond ASCII. In UTF-8 its bytes outnumber its characters, as cheap to ask as a
# length (a regular expression made pii_tokens 10% slower); a single-byte encoding needs the expression.
_BEYOND_ASCII_UTF8 = "octet_length(v) > length(v)"
_BEYOND_ASCII_OTHER = r"v ~ '[^\x01-\x7F]'"


def install_pii_pattern(conn: psycopg.Connection) -> None:
    """Create refresh_pipeline.pii_pattern(), unicode_pii_pattern(), any_pii_pattern() and pii_pattern_for(text)
    (before the functions that call them)."""
    body, unicode_body, any_body = (
        sql.Literal(f"SELECT {sql.Literal(p).as_string(conn)}")
        for p in (PII_PATTERN, UNICODE_PII_PATTERN, ANY_PII_PATTERN)
    )
    utf8 = conn.execute("SHOW server_encoding").fetchone()[0] == "UTF8"
    beyond_ascii = sql.SQL(_BEYOND_ASCII_UTF8 if utf8 else _BEYOND_ASCII_OTHER)
    conn.execute(
        sql.SQL(_CREATE).format(body=body, unicode_body=unicode_body, any_body=any_body, beyond_ascii=beyond_ascii)
    )
