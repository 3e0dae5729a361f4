"""The secret masking key: read from the environment, never printed, turned into HMAC pads for SQL."""

from __future__ import annotations

import hashlib
import hmac
import os

from refresh_pipeline.errors import RefreshError

MIN_KEY_LENGTH = 16
_BLOCK = 64  # SHA-256 block size


def _hmac_pads(key: bytes) -> bytes:
    """(key ⊕ ipad) ‖ (key ⊕ opad): with these, SQL computes real HMAC-SHA256 from two sha256() calls."""
    padded = key.ljust(_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in padded) + bytes(b ^ 0x5C for b in padded)


class MaskingKey:
    """Derives the per-purpose keys; the master key itself never leaves this object."""

    def __init__(self, secret: str) -> None:
        if len(secret) < MIN_KEY_LENGTH:
            raise RefreshError(f"the masking key must be at least {MIN_KEY_LENGTH} characters long.")
        self._secret = secret.encode()

    @classmethod
    def from_env(cls, variable: str) -> MaskingKey:
        secret = os.environ.get(variable)
        if not secret:
            raise RefreshError(
                f"the masking key is not set: export {variable}=<secret of {MIN_KEY_LENGTH}+ characters> "
                "(keep it in a secret store; the same key gives the same masked values every week)."
            )
        if len(secret) < MIN_KEY_LENGTH:
            raise RefreshError(
                f"the masking key in {variable} is {len(secret)} characters long; it needs {MIN_KEY_LENGTH} or more."
            )
        return cls(secret)

    def derive(self, purpose: str) -> bytes:
        return hmac.new(self._secret, f"refresh_pipeline/v1/{purpose}".encode(), hashlib.sha256).digest()

    def sql_pads(self, purpose: str) -> bytes:
        """The value handed to SQL functions as their `key` argument for this purpose."""
        return _hmac_pads(self.derive(purpose))

    def __repr__(self) -> str:
        return "MaskingKey(<hidden>)"

    __str__ = __repr__


MASKING_PURPOSE = "masking"
AUDIT_PURPOSE = "audit"
RESTORED_PASSWORD_PURPOSE = "restored-instance-password"


def restored_instance_password(key: MaskingKey, instance: str) -> str:
    """The master password of a restored instance until it is promoted: only holders of the masking key
    (the worker's step processes) can derive it, and each instance has its own."""
    return hmac.new(key.derive(RESTORED_PASSWORD_PURPOSE), instance.encode(), hashlib.sha256).hexdigest()
