"""Where databases live: the platform protocol and its implementations. No Dagster imports here."""
