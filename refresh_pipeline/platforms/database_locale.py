"""Production's encoding and locale, recorded beside a pg_dump snapshot so that the database restored from
it has the same: a LATIN1 or SQL_ASCII database restored as UTF8 holds bytes that fail to mask, and another
collation sorts text differently from production."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from refresh_pipeline.errors import RefreshError

LOCALE_FILE = "database.json"  # in the snapshot folder, beside pg_dump's toc.dat
_PROVIDERS = {"c": "libc", "i": "icu", "b": "builtin"}

# to_jsonb reads the columns a version has: datlocprovider since 15, daticulocale 15-16, datlocale 17.
_READ = """
SELECT pg_encoding_to_char(d.encoding), d.datcollate, d.datctype,
       coalesce(to_jsonb(d) ->> 'datlocprovider', 'c'),
       coalesce(to_jsonb(d) ->> 'datlocale', to_jsonb(d) ->> 'daticulocale')
FROM pg_database AS d WHERE d.datname = current_database()
"""


@dataclass(frozen=True)
class DatabaseLocale:
    encoding: str
    collate: str
    ctype: str
    provider: str = "libc"  # libc, icu or builtin
    locale: str | None = None  # the ICU or builtin locale

    def describe(self) -> str:
        provided = f", {self.provider} locale {self.locale}" if self.provider != "libc" else ""
        return f"encoding {self.encoding}, LC_COLLATE {self.collate}, LC_CTYPE {self.ctype}{provided}"


def read_locale(conn: psycopg.Connection) -> DatabaseLocale:
    """From a session of connections.connect(), which asks for UTF-8 (a SQL_ASCII one would return bytes)."""
    encoding, collate, ctype, provider, locale = conn.execute(_READ).fetchone()
    return DatabaseLocale(encoding, collate, ctype, _PROVIDERS.get(provider, provider), locale)


def save_locale(locale: DatabaseLocale, snapshot_folder: Path) -> None:
    (snapshot_folder / LOCALE_FILE).write_text(json.dumps(asdict(locale), indent=2))


def load_locale(snapshot_folder: Path) -> DatabaseLocale | None:
    """None for a snapshot taken before the locale was recorded."""
    path = snapshot_folder / LOCALE_FILE
    return DatabaseLocale(**json.loads(path.read_text())) if path.is_file() else None


def _create(conn: psycopg.Connection, name: str, options: sql.Composable) -> None:
    conn.execute(sql.SQL("CREATE DATABASE {} ").format(sql.Identifier(name)) + options)


def _exact(locale: DatabaseLocale) -> sql.Composable:
    options = sql.SQL("TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
        sql.Literal(locale.encoding), sql.Literal(locale.collate), sql.Literal(locale.ctype)
    )
    if locale.provider == "icu":
        options += sql.SQL(" LOCALE_PROVIDER icu ICU_LOCALE {}").format(sql.Literal(locale.locale))
    elif locale.provider == "builtin":
        options += sql.SQL(" LOCALE_PROVIDER builtin BUILTIN_LOCALE {}").format(sql.Literal(locale.locale))
    return options


# What a server says when it cannot create a database with a locale: not installed (42809), not matching
# the encoding (22023), a provider it was built without (0A000) or does not know (42601, `builtin` before 17).
_LOCALE_REFUSED = (
    psycopg.errors.WrongObjectType,
    psycopg.errors.InvalidParameterValue,
    psycopg.errors.FeatureNotSupported,
    psycopg.errors.SyntaxError,
)


def _fallbacks(locale: DatabaseLocale) -> list[DatabaseLocale]:
    """Production's encoding with a locale every server has: C.UTF-8 for UTF8 (case rules of Unicode), C."""
    plain = ["C.UTF-8", "C"] if locale.encoding == "UTF8" else ["C"]
    return [DatabaseLocale(locale.encoding, name, name) for name in plain]


def create_database_like(conn: psycopg.Connection, name: str, locale: DatabaseLocale | None) -> list[str]:
    """CREATE DATABASE with production's encoding and locale or, where this server cannot (a locale it does
    not have installed), with production's encoding and a locale every server has. Returns notes on what
    differs from production, none when nothing does. `conn` is in autocommit mode."""
    if locale is None:
        _create(conn, name, sql.SQL(""))
        return [
            "the snapshot does not record production's encoding and locale (taken by an earlier version): "
            "the database has this server's defaults"
        ]
    refusals = []
    for candidate in [locale, *_fallbacks(locale)]:
        try:
            _create(conn, name, _exact(candidate))
        except _LOCALE_REFUSED as exc:
            refusals.append(str(exc).strip().splitlines()[0])
            continue
        if candidate == locale:
            return []
        return [
            f"this server cannot create production's {locale.describe()} ({refusals[0]}); staging has "
            f"{candidate.describe()}, so text may sort and compare differently from production"
        ]
    raise RefreshError(f"cannot create a database with production's encoding {locale.encoding}: {'; '.join(refusals)}")
