"""The one exception tree of FlowForge.

Every error the library raises on purpose is a `FlowForgeError` with a stable `code`. The
exceptions know nothing of HTTP (as httpx's do not): the API maps each class to a status and
the JSON shape `{"error": {"code", "message", "details"}}` in one place (`api/errors.py`).
`retryable` marks errors where trying the same thing later may succeed (Prefect briefly
unreachable), which is what the sync loop looks at.
"""

from __future__ import annotations

from typing import Any


class FlowForgeError(Exception):
    """Base of every deliberate FlowForge error."""

    code = "flowforge_error"
    retryable = False

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class SpecError(FlowForgeError):
    """A workflow document is invalid; `details` lists every problem, each naming its field."""

    code = "invalid_workflow"

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        self.problems = problems
        first = problems[0]["message"] if problems else "invalid workflow"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{first}{more}", details=problems)


class InputError(FlowForgeError):
    """Run inputs do not match the workflow's declared inputs."""

    code = "invalid_inputs"

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        self.problems = problems
        super().__init__("; ".join(p["message"] for p in problems), details=problems)


class InvalidRequestError(FlowForgeError):
    """A request names or sends something invalid (a variable key, a secret name, a value too
    large); `details` lists `{"field", "message"}` for each problem."""

    code = "invalid_request"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", details=[{"field": field, "message": message}])


class NotFoundError(FlowForgeError):
    code = "not_found"


class ConflictError(FlowForgeError):
    code = "conflict"


class BadSignatureError(FlowForgeError):
    """A webhook delivery whose HMAC signature is missing or wrong: nothing was started."""

    code = "bad_signature"


class PayloadTooLargeError(FlowForgeError):
    code = "payload_too_large"


class PrefectUnavailableError(FlowForgeError):
    """Prefect's API could not be reached or answered with a server error."""

    code = "prefect_unavailable"
    retryable = True


class JobError(FlowForgeError):
    """A job ran and failed (non-zero exit, timeout, delivery error); raised inside a flow run."""

    code = "job_failed"


class ImageBuildError(FlowForgeError):
    """`flowforge image build` failed: debootstrap, pip wheel or docker build said why."""

    code = "image_build_failed"


class SshError(JobError):
    """Reaching or using an SSH server failed; `reason` says how, in one stable word.

    Reasons: `refused`, `timeout`, `unreachable`, `auth_failed`, `host_key_unknown`,
    `host_key_mismatch`, `circuit_open`, `lost` (the connection dropped mid-job), `no_server`
    (an unknown server name or a tag no server carries), `no_sftp` (the server has no SFTP
    subsystem). Only a server that could not be
    reached at all is worth trying again later.
    """

    code = "ssh_failed"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, details={"reason": reason})
        self.reason = reason

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return self.reason in ("refused", "timeout", "unreachable", "lost", "circuit_open")


__all__ = [
    "BadSignatureError",
    "ConflictError",
    "FlowForgeError",
    "ImageBuildError",
    "InputError",
    "InvalidRequestError",
    "JobError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PrefectUnavailableError",
    "SpecError",
    "SshError",
]
