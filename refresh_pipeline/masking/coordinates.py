"""Latitude and longitude kept as two number columns, told by their names and paired by them: `home_lat` with
`home_lng`, `pickupLatitude` with `pickupLongitude`, `lat` with `lon`, `lat_e6` with `lng_e6`. One coordinate
alone matches too many values to say anything; the pair is a place. Whole-number columns hold degrees times a
scale (`lat_e6 = 19072830` is 19.072830°), which `geo` is told (`scale`) and a name may say (`e6`)."""

from __future__ import annotations

import re

from psycopg import sql

from refresh_pipeline.masking.catalog import INTEGER_TYPES, NUMBER_TYPES, ColumnInfo, column_words

LATITUDE_WORDS = ("lat", "latitude")
LONGITUDE_WORDS = ("lng", "lon", "longitude")
# A coordinate's word in a column's words (column_words): what `geo` is suggested for.
COORDINATE_WORDS = re.compile(rf"(^|_)({'|'.join(LATITUDE_WORDS + LONGITUDE_WORDS)})(_|$)")
METRES_PER_DEGREE = 111_320  # as mask_geo (functions.sql) converts radius_m
# How whole-number coordinates are commonly stored: degrees times 10^5 (~1 m), 10^6 or 10^7 (GPS devices).
COMMON_SCALES = (100_000, 1_000_000, 10_000_000)
_SCALE_WORD = re.compile(r"(?:^|_)e([5-7])(?:_|$)")


def is_whole_number(column: ColumnInfo) -> bool:
    """An integer, or a numeric(p) / numeric(p, 0): a coordinate in it must be scaled."""
    if column.base_type in INTEGER_TYPES:
        return True
    before_point, after_point = column.numeric_digits
    return column.base_type == "numeric" and before_point is not None and after_point == 0


def scale_in_name(column: ColumnInfo) -> int | None:
    """The scale a whole-number coordinate's name says: `lat_e6` -> 1,000,000."""
    match = _SCALE_WORD.search(column_words(column.name))
    return 10 ** int(match[1]) if match else None


def _stem(column: ColumnInfo, coordinate_words: tuple[str, ...]) -> tuple[str, ...] | None:
    """The column's words with its one coordinate word blanked (None without exactly one)."""
    words = column_words(column.name).split("_")
    marked = [i for i, word in enumerate(words) if word in coordinate_words]
    if len(marked) != 1:
        return None
    return (*words[: marked[0]], "", *words[marked[0] + 1 :])


def coordinate_pairs(columns: list[ColumnInfo]) -> list[tuple[ColumnInfo, ColumnInfo]]:
    """(latitude, longitude) number columns among `columns` whose names differ only in that word."""
    numbers = [column for column in columns if not column.is_array and column.base_type in NUMBER_TYPES]
    latitudes = {stem: column for column in numbers if (stem := _stem(column, LATITUDE_WORDS)) is not None}
    longitudes = {stem: column for column in numbers if (stem := _stem(column, LONGITUDE_WORDS)) is not None}
    return [(latitude, longitudes[stem]) for stem, latitude in latitudes.items() if stem in longitudes]


def step_metres(column: ColumnInfo, scale: float | None) -> float | None:
    """The smallest move a column can hold, in metres (None: as small as matters, a float or unbounded numeric)."""
    if is_whole_number(column):
        return METRES_PER_DEGREE / scale if scale else None
    decimals = column.numeric_digits[1]
    return METRES_PER_DEGREE * 10**-decimals / (scale or 1) if decimals else None


def in_degrees(value: sql.Composable, scale: float | None) -> sql.Composable:
    """A coordinate as exact degrees: stored as they are, or as degrees times `scale`."""
    exact = sql.SQL("CAST({} AS numeric)").format(value)
    return exact if scale is None else sql.SQL("{} / {}").format(exact, sql.Literal(scale))
