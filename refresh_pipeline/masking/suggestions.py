"""The rule a policy snippet proposes for a column nobody classified yet: from a sample of its values, its type
and its name.

Only a starting point a person reviews (every line says `# REVIEW`). A suggestion is never weaker than the
old default: text starts as `redact` unless its name says which mask keeps it useful; a date named like a
birth date is masked instead of kept; a JSON, XML or hstore document is scrubbed instead of kept; a location
(PostGIS, or a latitude/longitude number) is moved instead of kept; a file named like a person's photo or
scan is emptied instead of kept."""

from __future__ import annotations

import math
import re

from refresh_pipeline.masking.catalog import (
    NUMBER_TYPES,
    PHONE_NUMBER_TYPES,
    TEXT_CASTABLE,
    TEXT_TYPES,
    ColumnInfo,
    column_words,
)
from refresh_pipeline.masking.constraints import collision_reason
from refresh_pipeline.masking.coordinates import COORDINATE_WORDS, is_whole_number, scale_in_name, step_metres
from refresh_pipeline.masking.lengths import length_problem
from refresh_pipeline.masking.policy import DEFAULT_RADIUS_M, TransformRule, json_path_text
from refresh_pipeline.masking.value_hints import ValueHint

# Checked in order on the column name's words (`passenger_email` -> passenger, email; `homeAddress` -> home,
# address). Names alone, of people only: `route_name` or `stop_name` stay `redact` for a person to decide.
_PERSON_NAME = re.compile(
    r"^(full_)?name$|(^|_)(customer|passenger|user|contact|holder|owner|person|member)_(full_)?name$"
)
# A payment card's number. The audit cannot tell one kept in a number column from an id (one random 16-digit
# number in ten passes the Luhn check), so only its name can.
_CARD_NUMBER = re.compile(
    r"(^|_)(card|cc|credit_card|debit_card)_?(no|num|number)s?(_|$)|(^|_)(credit|debit)_cards?(_|$)"
)
# A card number kept as a number: another one of 16 digits.
_CARD_AS_NUMBER = "{transform: number, min: 4000000000000000, max: 4999999999999999}"
_TEXT_BY_NAME: list[tuple[str, re.Pattern[str]]] = [
    ("email", re.compile(r"(^|_)e_?mail(_|$)|(^|_)email")),
    ("upi", re.compile(r"(^|_)(upi|vpa)s?(_|$)")),  # plurals too: arrays are named so (`phones bigint[]`)
    ("phone", re.compile(r"(^|_)(phone|mobile|msisdn|cell|tel|telephone|whatsapp)s?(_|$)")),
    ("aadhaar", re.compile(r"(^|_)aadh?aars?(_|$)")),
    ("pan", re.compile(r"(^|_)pan(_no|_number)?$")),
    ("fpe", _CARD_NUMBER),  # digits stay digits, the length stays: never the card
    ("ip", re.compile(r"(^|_)ip(_addr|_address)?(_|$)|remote_addr")),
    ("first_name", re.compile(r"(^|_)(first_name|given_name|fname|forename)(_|$)")),
    ("last_name", re.compile(r"(^|_)(last_name|surname|family_name|lname)(_|$)")),
    ("name", _PERSON_NAME),
    ("address", re.compile(r"(^|_)(address|addr|street)(_line_?\d)?(_|$)")),
    ("scrub", re.compile(r"(^|_)(notes?|comments?|body|description|message|remarks?|feedback|details)(_|$)")),
]
# A bare `name` is a person's only in a table of people; in `routes` or `stops` it is a thing's, as `route_name` is.
_PEOPLE = re.compile(
    r"(^|_)(customer|passenger|rider|commuter|traveller|user|member|person|people|contact|driver|employee|staff"
    r"|account|profile|guest|nominee|beneficiar(y|ies))s?(_|$)"
)
_THING_NAME_WHY = "a name, but maybe of a thing (a route, a stop): `keep` for a thing, `name` for a person"
_BIRTH_DATE = re.compile(r"(^|_)(dob|birth|birthday)(_|$)")  # birth_date, date_of_birth too
# Files of a person kept in bytea: a photo, an ID or KYC scan, a signature. The audit reads a kept file's text
# only, never an image, so these are emptied rather than kept.
_PERSONAL_FILE = re.compile(
    r"(^|_)(photo|picture|image|img|avatar|selfie|scan|kyc|id_proof|passport|licen[cs]e|signature|document|doc"
    r"|attachment|file)s?(_|$)"
)
_ADDRESS_WHY = "an IP address: a customer's is personal data; keep only a server's"
_LOCATION_WHY = "a location: `geo` moves it up to 500 m; keep only a public place (a stop, a depot)"


# Built-in types no transform changes and the audit does not read: what they hold, and when to keep them.
_UNREAD_TYPES = {
    "point": (
        "a location as a built-in point: no transform moves it (`geo` takes PostGIS and latitude/longitude "
        "numbers) and the audit does not read it",
        "keep only a public place (a stop, a depot)",
    ),
    "macaddr": (
        "a device's hardware address: no transform changes it and the audit does not read it",
        "keep only a vehicle's or a server's",
    ),
}
_UNREAD_TYPES["macaddr8"] = _UNREAD_TYPES["macaddr"]

# What a key's name can say that `scrub`, which masks emails, phones and UPI handles, leaves as it is.
_NOT_SCRUBBED = frozenset({"name", "first_name", "last_name", "address", "ip", "aadhaar", "pan"})


# Number columns named like these hold the same PII as text ones (a phone as a bigint).
_NUMBER_BY_NAME = [(transform, pattern) for transform, pattern in _TEXT_BY_NAME if transform in ("phone", "aadhaar")]


def suggested_rule(column: ColumnInfo, table: str = "", hint: ValueHint | None = None) -> tuple[str, str]:
    """(rule as YAML, why) for the snippet line of an unclassified column of `table`; the rule applies as
    pasted. What a sample of its values says (value_hints.py) goes before what its name says."""
    if column.generated:
        return "keep", "generated: recomputed from the columns it is computed from, once they are masked"
    if column.partition_key:
        why = "a partition key: masked values would belong in other partitions, so only `keep` applies"
        return "keep", "; ".join(filter(None, [why, hint.note if hint else ""]))
    rule, why = _suggested(column, table, hint)
    if rule == "email" and hint is not None and hint.refuses_masked_emails:
        own = "a CHECK refuses @example.com, so each address is masked at its own domain (right for work addresses)"
        return "{transform: email, keep_domain: true}", "; ".join(filter(None, [own, why]))
    return rule, why


def _suggested(column: ColumnInfo, table: str, hint: ValueHint | None) -> tuple[str, str]:
    if hint is not None and hint.transform is not None:
        return _from_values(column, hint.transform, hint.note)
    rule, why = _from_type_and_name(column, table)
    clash = collision_reason(TransformRule(rule)) if column.unique_alone and rule.isidentifier() else None
    if clash and column.is_text:
        unique = f"unique: `{rule}` {clash}, `hash` keeps values apart"
        rule, too_short = _fitting(column, "hash")
        why = "; ".join(filter(None, [unique, why, too_short]))
    kept_by_scrub = _kept_by_scrub(hint.json_paths) if hint and rule == "scrub" else ""
    return rule, "; ".join(filter(None, [why, hint.note if hint else "", kept_by_scrub]))


def _kept_by_scrub(paths: tuple[tuple[str, ...], ...]) -> str:
    """A note naming the documents' keys that look like personal data `scrub` does not mask (a name, an
    address, a birth date), each with the transform its path would take."""
    found: dict[str, str] = {}
    for steps in paths:
        keys = [step for step in steps if step != "*"]
        words = column_words(keys[-1]) if keys else ""
        # A birth date inside JSON is text: `date` applies to date columns only.
        transform = "redact" if _BIRTH_DATE.search(words) else _text_transform(words)[0]
        personal = transform in _NOT_SCRUBBED or _BIRTH_DATE.search(words)
        if personal and (path := json_path_text(steps)) is not None:
            found.setdefault(path, transform)
    if not found:
        return ""
    listed = ", ".join(f"{path} ({transform})" for path, transform in sorted(found.items()))
    return (
        f"sampled documents have keys named like personal data scrub keeps: {listed}; "
        "list JSON paths instead (each path changes only its own values)"
    )


def _from_type_and_name(column: ColumnInfo, table: str) -> tuple[str, str]:
    words = column_words(column.name)
    unqualified = column.unqualified_type
    if column.is_text and words == "name" and not _PEOPLE.search(column_words(table)):
        rule, too_short = _fitting(column, "redact")
        return rule, "; ".join(filter(None, [_THING_NAME_WHY, too_short]))
    if column.is_array and (number := _number_transform(column, words)):
        return f"{{array: {number[0]}}}", number[1]
    if unqualified in TEXT_CASTABLE["ip"]:
        return ("{array: ip}" if column.is_array else "ip"), _ADDRESS_WHY
    if column.is_array and unqualified in TEXT_CASTABLE["scrub"]:  # documents: the audit reads them
        return "{array: scrub}", "documents: scrub masks every email, phone and UPI handle in each"
    if unqualified == "tsvector" or column.composite:  # an array of them too
        return _derived_or_composite(column)
    if column.is_array:
        if unqualified not in TEXT_TYPES:
            return "keep", ""
        transform, why = _text_transform(words)
        return f"{{array: {_fitting(column, transform)[0]}}}", why
    if unqualified in TEXT_CASTABLE["scrub"]:
        return "scrub", "a document: scrub masks every email, phone and UPI handle in it, or list JSON paths"
    if column.is_spatial:
        return "geo", _LOCATION_WHY
    if column.base_type in NUMBER_TYPES and not column.is_array and COORDINATE_WORDS.search(words):
        if not is_whole_number(column):
            step = step_metres(column, None)
            if step is None or step < DEFAULT_RADIUS_M:
                return "geo", _LOCATION_WHY
            radius = math.ceil(step / 100) * 100 + 100  # moved at least half of it: never back onto itself
            return f"{{transform: geo, radius_m: {radius}}}", f"{_LOCATION_WHY}; {column.type_name} keeps ~{step:.0f} m"
        scale = scale_in_name(column)
        said = "as its name says" if scale else "check it: 19.072830 stored as 19072830"
        return f"{{transform: geo, scale: {scale or 1_000_000}}}", f"{_LOCATION_WHY}; degrees times the scale, {said}"
    if number := _number_transform(column, words):
        return number
    if column.is_text:
        transform, why = _text_transform(words)
        rule, too_short = _fitting(column, transform)
        return rule, "; ".join(filter(None, [why, too_short]))
    if column.is_date and _BIRTH_DATE.search(words):
        return "date", "named like a birth date"
    if column.is_bytes and _PERSONAL_FILE.search(words):
        why = "a file of a person (photo, scan, document): the audit cannot read an image; keep only public files"
        return ("null" if column.nullable else "redact"), why
    if not column.is_array and unqualified in _UNREAD_TYPES:
        what, keep_only = _UNREAD_TYPES[unqualified]
        if not _PEOPLE.search(column_words(table)):
            return "keep", f"{what}; {keep_only}"
        if column.nullable:
            return '"null"', f"{what}; in a table of people it is a person's: {keep_only}"
        return "keep", f"{what}; in a table of people, but NOT NULL: {keep_only}, or rebuild it in staging"
    return "keep", ""


def _from_values(column: ColumnInfo, transform: str, note: str) -> tuple[str, str]:
    if column.unqualified_type not in TEXT_TYPES:  # a whole number holding phones
        return transform, note
    rule, too_short = _fitting(column, transform)
    return (f"{{array: {rule}}}" if column.is_array else rule), "; ".join(filter(None, [note, too_short]))


def _number_transform(column: ColumnInfo, words: str) -> tuple[str, str] | None:
    """A whole number (or an array of them) named like a phone or an Aadhaar number."""
    if column.base_type in PHONE_NUMBER_TYPES and column.numeric_digits[1] == 0:
        for transform, pattern in _NUMBER_BY_NAME:
            if pattern.search(words):
                return transform, f"named like {transform}"
        if not column.is_array and _CARD_NUMBER.search(words):
            return _CARD_AS_NUMBER, "named like a card number"
    return None


def _text_transform(words: str) -> tuple[str, str]:
    for transform, pattern in _TEXT_BY_NAME:
        if pattern.search(words):
            said = {"scrub": "free text", "fpe": "a card number"}.get(transform, transform.replace("_", " "))
            return transform, f"named like {said}"
    return "redact", ""


def _fitting(column: ColumnInfo, transform: str) -> tuple[str, str]:
    """The transform, or the nearest one whose values fit the column's length (an email in a varchar(20))."""
    problem = length_problem(column, TransformRule(transform))
    if problem is None or column.max_length is None:
        return transform, ""
    if column.max_length >= 8:
        return f"{{transform: hash, length: {column.max_length}}}", problem
    return f'{{transform: redact, value: "{"X" * column.max_length}"}}', problem


def _derived_or_composite(column: ColumnInfo) -> tuple[str, str]:
    """A search vector holds the words of the columns it indexes, names too, which the audit cannot tell
    from other words; no transform reaches inside a row type's fields. Neither is safe to keep unread."""
    what = (
        "a row type: no transform reaches its fields (emails and phones in them fail the audit, names do not)"
        if column.composite
        else "a search vector: it holds the words of the columns it indexes, names too, which the audit "
        "cannot recognise"
    )
    if column.nullable and not column.generated:
        return '"null"', f"{what}; rebuild it in staging if tests need it"
    return "keep", f"{what}; NOT NULL or generated, so keep it only if it holds no personal data"
