"""The PII audit: fingerprints of production's originals and scans of masked tables. No Dagster imports."""
