"""Picks the platform implementation a config asks for."""

from refresh_pipeline.config import RefreshConfig
from refresh_pipeline.platforms.base import Platform


def platform_for(config: RefreshConfig) -> Platform:
    if config.platform == "aws":
        from refresh_pipeline.platforms.aws import AwsPlatform  # boto3 clients only when asked for

        return AwsPlatform(config)
    from refresh_pipeline.platforms.local import LocalPlatform

    return LocalPlatform(config)
