"""Secrets by reference, resolved at call time, and the redactor that keeps their values out of every event,
audit entry and log line.

A pack only ever names a secret: `env:NAME` (an environment variable) or `file:NAME` (a key of the secrets
file named by $BREAKDESK_SECRETS_FILE, a JSON or YAML mapping). The value is read when a tool is called, so
rotating a secret needs no pack change and no restart (the file is re-read when its modification time changes).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

SECRETS_FILE_ENV = "BREAKDESK_SECRETS_FILE"
MASK = "***"
#: Shorter values are not treated as secrets by the redactor: masking every "a" would destroy the record.
MIN_SECRET_LENGTH = 4
#: Header names whose values are never recorded, whatever they hold.
SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"})


class SecretError(Exception):
    """A referenced secret cannot be resolved (unset variable, missing file or key). Never carries a value."""


class Redactor:
    """Replaces every known secret value in strings, nested lists and mappings with `***`.

    Values are registered when they are resolved, so anything recorded after a call (its error text, a
    response body that echoes a header) is masked too. Thread-safe; shared by all executors of a process.
    """

    def __init__(self) -> None:
        self._values: tuple[str, ...] = ()  # longest first, so a secret containing another is masked whole
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        if len(value) < MIN_SECRET_LENGTH or value in self._values:
            return
        with self._lock:
            if value not in self._values:
                self._values = tuple(sorted({*self._values, value}, key=len, reverse=True))

    @property
    def active(self) -> bool:
        return bool(self._values)

    def text(self, value: str) -> str:
        for secret in self._values:
            if secret in value:
                value = value.replace(secret, MASK)
        return value

    def redact(self, value: Any) -> Any:
        """A copy of `value` with secrets masked (inputs are never modified)."""
        if not self._values:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.redact(k) if isinstance(k, str) else k: self.redact(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact(v) for v in value]
        return value


def redact_headers(headers: Mapping[str, str], redactor: Redactor) -> dict[str, str]:
    """Headers safe to record: sensitive names masked, secret values masked anywhere else."""
    return {k: MASK if k.lower() in SENSITIVE_HEADERS else redactor.text(v) for k, v in headers.items()}


class SecretResolver:
    """Resolves `env:` and `file:` references; every value it returns is registered with the redactor."""

    def __init__(
        self,
        redactor: Redactor,
        *,
        environ: Mapping[str, str] | None = None,
        secrets_file: str | Path | None = None,
    ) -> None:
        self.redactor = redactor
        self._environ = environ
        self._file = Path(secrets_file) if secrets_file is not None else None
        self._cache: tuple[Path, float, dict[str, str]] | None = None
        self._lock = threading.Lock()

    def _env(self) -> Mapping[str, str]:
        return self._environ if self._environ is not None else os.environ

    def _secrets_path(self) -> Path | None:
        if self._file is not None:
            return self._file
        configured = self._env().get(SECRETS_FILE_ENV)
        return Path(configured) if configured else None

    def _file_values(self) -> dict[str, str]:
        path = self._secrets_path()
        if path is None:
            raise SecretError(f"no secrets file configured (set ${SECRETS_FILE_ENV})")
        try:
            mtime = path.stat().st_mtime
        except OSError as exc:
            raise SecretError(f"secrets file {path} cannot be read ({type(exc).__name__})") from None
        with self._lock:
            cached = self._cache
            if cached is not None and cached[0] == path and cached[1] == mtime:
                return cached[2]
            try:
                text = path.read_text(encoding="utf-8")
                data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
            except (OSError, ValueError, yaml.YAMLError) as exc:
                # The parser's message may quote file content (a secret): report only its type.
                raise SecretError(f"secrets file {path} is not valid JSON/YAML ({type(exc).__name__})") from None
            if not isinstance(data, dict):
                raise SecretError(f"secrets file {path} must hold a mapping of name to value")
            values = {str(k): str(v) for k, v in data.items() if v is not None}
            self._cache = (path, mtime, values)
            return values

    def resolve(self, ref: str) -> str:
        """The value behind `env:NAME` / `file:NAME`; raises SecretError naming only the reference."""
        kind, _, name = ref.partition(":")
        if kind == "env":
            value = self._env().get(name)
            if value is None or value == "":
                raise SecretError(f"secret {ref} is not set")
        elif kind == "file":
            value = self._file_values().get(name)
            if value is None or value == "":
                raise SecretError(f"secret {ref} is not in the secrets file")
        else:
            raise SecretError(f"secret reference {ref!r} must start with env: or file:")
        self.redactor.add(value)
        return value
