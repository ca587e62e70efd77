"""Signing secrets at rest: AES-GCM with a key derived (HKDF-SHA256) from the server's SECRET_KEY, so a database
dump alone reveals no secret. Each ciphertext is bound to its endpoint's id (the associated data): copied onto
another row it does not decrypt. Keys in SECRET_KEY_FALLBACKS still decrypt, as Django's signing does."""

from __future__ import annotations

import base64
import os
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

NONCE_BYTES = 12


class SecretUnreadable(Exception):
    """The secret was encrypted under a SECRET_KEY this server no longer has."""


@lru_cache(maxsize=8)
def _cipher(secret_key: str) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"batchserver webhook signing secrets v1").derive(
        secret_key.encode()
    )
    return AESGCM(key)


def encrypt(plaintext: str, *, context: str) -> str:
    nonce = os.urandom(NONCE_BYTES)
    sealed = _cipher(settings.SECRET_KEY).encrypt(nonce, plaintext.encode(), context.encode())
    return base64.b64encode(nonce + sealed).decode()


def decrypt(token: str, *, context: str) -> str:
    raw = base64.b64decode(token)
    for secret_key in (settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", ())):
        try:
            return _cipher(secret_key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode()).decode()
        except InvalidTag:
            continue
    raise SecretUnreadable(
        "The endpoint's signing secret was encrypted under another DJANGO_SECRET_KEY. Set the "
        "old key again (or add it to SECRET_KEY_FALLBACKS), or rotate the endpoint's secret."
    )
