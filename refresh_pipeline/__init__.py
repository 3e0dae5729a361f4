"""refresh_pipeline: a weekly, automated refresh of a production-like, PII-free staging PostgreSQL database."""

__version__ = "0.1.0"
