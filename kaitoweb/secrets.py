"""Secrets at rest (kubeconfigs, API keys, Hugging Face tokens), encrypted with ENCRYPTION_KEYS.

`EncryptedTextField` stores Fernet tokens; the first key encrypts and every key decrypts, so keys
rotate by putting a new one first and re-saving rows (`SecretBox.rotate`). A value that no key
opens raises `SecretUnreadable` naming the field, never returns garbage.
"""

from __future__ import annotations

from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models

from kaitoweb.redaction import remember_secret

_PREFIX = "fernet:"


class SecretUnreadable(Exception):
    """No configured key decrypts a stored secret (wrong or removed ENCRYPTION_KEYS)."""


class SecretBox:
    def __init__(self, keys: list[bytes] | None = None) -> None:
        self._fernet = MultiFernet([Fernet(k) for k in (keys or settings.ENCRYPTION_KEYS)])

    def seal(self, plaintext: str) -> str:
        return _PREFIX + self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, sealed: str) -> str:
        if not sealed.startswith(_PREFIX):
            raise SecretUnreadable("not an encrypted value")
        try:
            return self._fernet.decrypt(sealed[len(_PREFIX) :].encode()).decode()
        except InvalidToken:
            raise SecretUnreadable(
                "no key in ENCRYPTION_KEYS decrypts this secret (was a key removed?)"
            ) from None

    def rotate(self, sealed: str) -> str:
        """Re-encrypt with the first key."""
        return _PREFIX + self._fernet.rotate(sealed[len(_PREFIX) :].encode()).decode()


class EncryptedTextField(models.TextField):
    """A text column whose value is encrypted before it reaches the database."""

    description = "Text encrypted at rest with ENCRYPTION_KEYS"

    def get_prep_value(self, value: Any) -> Any:
        if value in (None, ""):
            return value
        remember_secret(str(value))  # redacted from logs and error messages from now on
        return SecretBox().seal(str(value))

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value in (None, ""):
            return value
        try:
            plaintext = SecretBox().open(value)
        except SecretUnreadable as exc:
            raise SecretUnreadable(f"{self.model.__name__}.{self.name}: {exc}") from None
        remember_secret(plaintext)  # redacted from logs and error messages from now on
        return plaintext
