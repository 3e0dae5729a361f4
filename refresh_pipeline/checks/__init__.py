"""Asset checks: the PII audit and policy coverage. Thin Dagster shells over audit/ and masking/."""
