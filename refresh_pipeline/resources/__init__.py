"""Dagster resources: the thin bridge from assets to config, platform, policy and key."""

from refresh_pipeline.resources.refresh import RefreshResource

__all__ = ["RefreshResource"]
