"""The masking engine: policy, key, SQL planner and runner. Plain Python, no Dagster imports."""
