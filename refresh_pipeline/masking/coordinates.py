"""Latitude and longitude kept as two number columns, told by their names and paired by them: `home_lat` with
`home_lng`, `pickupLatitude` with `pickupLongitude`, `lat` with `lon`. One coordinate alone matches too many
values to say anything; the pair is a place."""

from __future__ import annotations

import re

from refresh_pipeline.masking.catalog import FRACTIONAL_TYPES, ColumnInfo, column_words

LATITUDE_WORDS = ("lat", "latitude")
LONGITUDE_WORDS = ("lng", "lon", "longitude")
# A coordinate's word in a column's words (column_words): what `geo` is suggested for.
COORDINATE_WORDS = re.compile(rf"(^|_)({'|'.join(LATITUDE_WORDS + LONGITUDE_WORDS)})(_|$)")


def _stem(column: ColumnInfo, coordinate_words: tuple[str, ...]) -> tuple[str, ...] | None:
    """The column's words with its one coordinate word blanked (None without exactly one)."""
    words = column_words(column.name).split("_")
    marked = [i for i, word in enumerate(words) if word in coordinate_words]
    if len(marked) != 1:
        return None
    return (*words[: marked[0]], "", *words[marked[0] + 1 :])


def coordinate_pairs(columns: list[ColumnInfo]) -> list[tuple[ColumnInfo, ColumnInfo]]:
    """(latitude, longitude) number columns among `columns` whose names differ only in that word."""
    numbers = [column for column in columns if not column.is_array and column.base_type in FRACTIONAL_TYPES]
    latitudes = {stem: column for column in numbers if (stem := _stem(column, LATITUDE_WORDS)) is not None}
    longitudes = {stem: column for column in numbers if (stem := _stem(column, LONGITUDE_WORDS)) is not None}
    return [(latitude, longitudes[stem]) for stem, latitude in latitudes.items() if stem in longitudes]
