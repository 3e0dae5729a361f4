"""Picks the platform implementation a config asks for."""

from collections.abc import Callable

from refresh_pipeline.config import RefreshConfig
from refresh_pipeline.masking.keys import MaskingKey
from refresh_pipeline.platforms.base import Platform


def platform_for(config: RefreshConfig, key: Callable[[], MaskingKey] | None = None) -> Platform:
    """`key`: where the masking key comes from, for a platform that needs it (AWS: to reach a restored
    instance before promotion)."""
    if config.platform == "aws":
        from refresh_pipeline.platforms.aws import AwsPlatform  # boto3 clients only when asked for

        return AwsPlatform(config, key)
    from refresh_pipeline.platforms.local import LocalPlatform

    return LocalPlatform(config)
