"""The names of FlowForge's own images, which the runtime runs and the image builder makes."""

from __future__ import annotations

from typing import Final

from flowforge import __version__

RUNNER_REPOSITORY: Final = "flowforge-runner"
SERVICE_REPOSITORY: Final = "flowforge"


def runner_image_name(version: str = __version__) -> str:
    """The image container jobs and docker-pool flow runs use unless a document names another."""
    return f"{RUNNER_REPOSITORY}:{version}"


def service_image_name(version: str = __version__) -> str:
    return f"{SERVICE_REPOSITORY}:{version}"


__all__ = ["RUNNER_REPOSITORY", "SERVICE_REPOSITORY", "runner_image_name", "service_image_name"]
