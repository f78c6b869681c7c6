"""Secret references in templates, and masking of secret values.

A workflow document only ever holds *references* (`{{ secrets.token }}`,
`{{ secrets['my-name'] }}`), so neither the stored spec nor the generated flow source contains a
value. A job loads just the secrets its own templates name, right before it runs (the runtime's
`secrets` module); every value loaded in a run is registered with the run's `Masker`, which
replaces it with `***` in job log lines, outputs and errors before any of them leaves the
process (Prefect logs, the run summary artifact, the API).

References must name secrets literally: the job loads what its templates name, so a computed
name (`secrets[inputs.which]`) could not be resolved, and is rejected at validation.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any, Final

from flowforge.core import templates

MASK: Final = "***"
#: Lines of a multi-line secret (a PEM key) are masked one by one when at least this long, so a
#: script printing the key line by line does not leak it, while short lines ("}") stay readable.
_MIN_LINE_MASK: Final = 8


def secret_refs(source: str) -> set[str]:
    """Names of the secrets a template reads; `TemplateError` if one is not named literally."""
    found = templates.analyze(source)
    if found.computed_secret:
        raise templates.TemplateError(
            "secrets must be named literally, as secrets.name or secrets['name']")
    return set(found.secrets)


def template_secret_refs(value: Any) -> set[str]:
    """Every secret named by the templates inside a (nested) value."""
    if isinstance(value, dict):
        return set().union(*(template_secret_refs(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(template_secret_refs(v) for v in value))
    return secret_refs(value) if templates.is_template(value) else set()


class Masker:
    """Replaces known secret values with `***` in strings and nested JSON values (thread-safe)."""

    def __init__(self) -> None:
        self._values: list[str] = []
        self._lock = threading.Lock()

    def add(self, values: Iterable[str]) -> None:
        with self._lock:
            found = set(self._values)
            for value in values:
                if not value:
                    continue
                found.add(value)
                found.update(line.strip() for line in value.splitlines()
                             if len(line.strip()) >= _MIN_LINE_MASK)
            # Longest first, so a secret containing another is masked whole.
            self._values = sorted(found, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._values)

    def mask(self, value: Any) -> Any:
        if not self._values or value is None:
            return value
        if isinstance(value, str):
            for secret in self._values:
                if secret in value:
                    value = value.replace(secret, MASK)
            return value
        if isinstance(value, dict):
            return {self.mask(k): self.mask(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.mask(v) for v in value]
        return value


__all__ = ["MASK", "Masker", "secret_refs", "template_secret_refs"]
