"""Secrets out of logs, error messages and Django's error reports.

`redact(text)` replaces what looks like a credential (bearer tokens, ``api-key`` headers,
``sk-`` and ``hf_`` keys, a kubeconfig's ``token``, ``client-key-data`` and
``client-certificate-data``, PEM private keys, passwords in URLs) and the literal value of every
secret this process has seen: the configured keys (SECRET_KEY, ENCRYPTION_KEYS, the database and
Redis passwords) and each value an `EncryptedTextField` decrypted or encrypted (kubeconfigs,
Foundry API keys, Hugging Face tokens), so a provider that echoes a key of any shape back in its
error is caught too.

`install_log_redaction()` (called by settings, so in every process: web, worker, beat,
manage.py) makes every log record redacted as it is made, whatever logger or handler it goes to;
`RedactingFilter` does the same as a logging filter. `kaitoweb.security.
SecretsExceptionReporterFilter` (DEFAULT_EXCEPTION_REPORTER_FILTER) applies it to Django's error
reports. This module imports nothing from Django at load time, so settings can use it.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

MASK = "[redacted]"
# Shorter values are too likely to occur by chance ("true", a port number) to be replaced.
MIN_SECRET_LENGTH = 8
MAX_REMEMBERED = 2000

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # PEM private keys, whole.
    (
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL
        ),
        MASK,
    ),
    # Authorization: Bearer <token> / Basic <credentials>, in headers, reprs and messages.
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9\-._~+/=:]{8,}"), r"\1\2" + MASK),
    # key: value and key=value for the names that hold credentials (headers, YAML, JSON, query).
    (
        re.compile(
            r"(?i)(\b(?:api[-_]?key|x-api-key|ocp-apim-subscription-key|access[-_]?token|"
            r"refresh[-_]?token|id[-_]?token|token|password|passwd|secret|client[-_]?secret|"
            r"client-key-data|client-certificate-data|hf[-_]?token|authorization)"
            r"\b[\"']?\s*[:=]\s*[\"']?)(?!\[redacted\])([^\s\"',;&}\]]{4,})"
        ),
        r"\1" + MASK,
    ),
    # OpenAI-style and Hugging Face keys wherever they stand.
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"), MASK),
    (re.compile(r"\bhf_[A-Za-z0-9]{16,}"), MASK),
    # user:password@ in URLs.
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.\-]*://)[^/\s:@]+:[^/\s@]+@"), r"\1" + MASK + "@"),
]

# Kubeconfig fields whose values are credentials, to remember from a decrypted kubeconfig.
_KUBECONFIG_SECRET = re.compile(
    r"^\s*(?:token|client-key-data|client-certificate-data|password)\s*:\s*[\"']?([^\s\"']+)",
    re.MULTILINE,
)

_lock = threading.Lock()
_remembered: OrderedDict[str, None] = OrderedDict()
_settings_loaded = False


def remember_secret(value: str | None) -> None:
    """Redact this value (and, in a kubeconfig, each credential in it) from now on."""
    if not value:
        return
    candidates = [value.strip()]
    if "\n" in value:
        candidates += _KUBECONFIG_SECRET.findall(value)
    with _lock:
        for item in candidates:
            if len(item) >= MIN_SECRET_LENGTH:
                _remembered[item] = None
                _remembered.move_to_end(item)
        while len(_remembered) > MAX_REMEMBERED:
            _remembered.popitem(last=False)


def _remember_configured_secrets() -> None:
    """The secrets in settings: Django's key, the Fernet keys, database and Redis passwords."""
    global _settings_loaded
    if _settings_loaded:
        return
    from django.conf import settings

    if not settings.configured:
        return
    _settings_loaded = True
    values: list[str] = [str(getattr(settings, "SECRET_KEY", "") or "")]
    values += [k.decode() if isinstance(k, bytes) else str(k) for k in settings.ENCRYPTION_KEYS]
    for db in settings.DATABASES.values():
        values.append(str(db.get("PASSWORD") or ""))
    redis_url = str(getattr(settings, "REDIS_URL", "") or "")
    if redis_url:
        values.append(urlsplit(redis_url).password or "")
    for value in values:
        remember_secret(value)


def redact(text: str, *, secrets: Iterable[str | None] = ()) -> str:
    """`text` with every credential it holds replaced by [redacted]."""
    if not text:
        return text
    _remember_configured_secrets()
    with _lock:
        literals = list(_remembered)
    literals += [s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH]
    # Longest first, so a whole kubeconfig goes before the token inside it.
    for literal in sorted(set(literals), key=len, reverse=True):
        if literal in text:
            text = text.replace(literal, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_value(value: Any) -> Any:
    """`redact` through strings, lists, tuples and dicts (for JSON-like data)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v) for v in value)
    return value


class RedactingFilter(logging.Filter):
    """The same redaction as a logging filter (for a handler configured outside settings)."""

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record)
        return True


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a malformed record: leave it to the handler to report
        return
    cleaned = redact(message)
    if cleaned != message:
        record.msg, record.args = cleaned, None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)


_installed = False


def install_log_redaction() -> None:
    """Redact every log record of this process as it is made (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    make_record = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        _redact_record(record)
        return record

    logging.setLogRecordFactory(factory)


def yaml_error_text(exc: Exception) -> str:
    """A YAML parser error without the quoted source line (which can hold a token or key):
    "mapping values are not allowed here (line 9, column 46)"."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if not problem:
        return redact(str(exc).split("\n", 1)[0])
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    context = getattr(exc, "context", None)
    return redact(f"{context + ': ' if context else ''}{problem}{where}")
