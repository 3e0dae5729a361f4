"""The rule a policy snippet proposes for a column nobody classified yet: from its type and its name.

Only a starting point a person reviews (every line says `# REVIEW`). A suggestion is never weaker than the
old default: text starts as `redact` unless its name says which mask keeps it useful; a date named like a
birth date is masked instead of kept; a JSON, XML or hstore document is scrubbed instead of kept."""

from __future__ import annotations

import re

# Checked in order on the column name's words (`passenger_email` -> passenger, email; `homeAddress` -> home,
# address). Names alone, of people only: `route_name` or `stop_name` stay `redact` for a person to decide.
_PERSON_NAME = re.compile(
    r"^(full_)?name$|(^|_)(customer|passenger|user|contact|holder|owner|person|member)_(full_)?name$"
)
_TEXT_BY_NAME: list[tuple[str, re.Pattern[str]]] = [
    ("email", re.compile(r"(^|_)e_?mail(_|$)|(^|_)email")),
    ("upi", re.compile(r"(^|_)(upi|vpa)(_|$)")),
    ("phone", re.compile(r"(^|_)(phone|mobile|msisdn|cell|tel|telephone|whatsapp)(_|$)")),
    ("aadhaar", re.compile(r"(^|_)aadh?aar(_|$)")),
    ("pan", re.compile(r"(^|_)pan(_no|_number)?$")),
    ("ip", re.compile(r"(^|_)ip(_addr|_address)?(_|$)|remote_addr")),
    ("first_name", re.compile(r"(^|_)(first_name|given_name|fname|forename)(_|$)")),
    ("last_name", re.compile(r"(^|_)(last_name|surname|family_name|lname)(_|$)")),
    ("name", _PERSON_NAME),
    ("address", re.compile(r"(^|_)(address|addr|street)(_line_?\d)?(_|$)")),
    ("scrub", re.compile(r"(^|_)(notes?|comments?|body|description|message|remarks?|feedback|details)(_|$)")),
]
_BIRTH_DATE = re.compile(r"(^|_)(dob|birth|birthday)(_|$)")  # birth_date, date_of_birth too


def _words(column: str) -> str:
    """`homeAddress` -> `home_address`; `Passenger Email` -> `passenger_email`."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", column)
    return re.sub(r"[^a-z0-9]+", "_", snake.lower()).strip("_")


# Number columns named like these hold the same PII as text ones (a phone as a bigint).
_NUMBER_BY_NAME = [(transform, pattern) for transform, pattern in _TEXT_BY_NAME if transform in ("phone", "aadhaar")]


def suggested_rule(
    column: str, is_text: bool, is_date: bool, is_whole_number: bool = False, is_document: bool = False
) -> tuple[str, str]:
    """(rule, why) for the snippet line of an unclassified column."""
    words = _words(column)
    if is_document:
        return "scrub", "a document: scrub masks every email, phone and UPI handle in it, or list JSON paths"
    if is_whole_number:
        for transform, pattern in _NUMBER_BY_NAME:
            if pattern.search(words):
                return transform, f"named like {transform}"
    if is_text:
        for transform, pattern in _TEXT_BY_NAME:
            if pattern.search(words):
                return transform, f"named like {'free text' if transform == 'scrub' else transform.replace('_', ' ')}"
        return "redact", ""
    if is_date and _BIRTH_DATE.search(words):
        return "date", "named like a birth date"
    return "keep", ""
