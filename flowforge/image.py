"""Building FlowForge's images with no registry: debootstrap -> `docker import` -> `docker build`.

No image registry is reachable where FlowForge is meant to run, so nothing is pulled. The base
is a Debian root filesystem made by `debootstrap` from the mirror apt already uses (with
python3, bash and node included, so the build itself needs no network), imported as
`flowforge-base:<suite>`. The repository's `Dockerfile` then installs FlowForge from wheels
that `pip wheel` built on this host (pip's own configuration, indexes and cache apply), with
`--no-index` inside the build. `--base IMAGE` skips debootstrap for an image the user has.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from flowforge import __version__
from flowforge.core.errors import ImageBuildError
from flowforge.core.images import runner_image_name, service_image_name

DEFAULT_SUITE: Final = "bookworm"
DEFAULT_MIRROR: Final = "http://deb.debian.org/debian"
BASE_PACKAGES: Final = ("python3", "bash", "nodejs", "ca-certificates")
#: async-timeout: redis needs it on Python < 3.11.3 (bookworm has 3.11.2); `pip wheel` on a
#: newer host evaluates that marker as false and would leave it out.
EXTRA_WHEELS: Final = ("pip", "async-timeout")

Log = Callable[[str], None]


def base_image_name(suite: str = DEFAULT_SUITE) -> str:
    return f"flowforge-base:{suite}"


def source_root() -> Path:
    """The FlowForge checkout this package runs from (the build needs its Dockerfile)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "Dockerfile").is_file() or not (root / "pyproject.toml").is_file():
        raise ImageBuildError(f"no FlowForge source tree at {root}: building images needs the "
                              "repository (its Dockerfile and pyproject.toml)")
    return root


def source_hash(root: Path | None = None) -> str:
    """A digest of everything an image is built from (the packages, Dockerfile, pyproject),
    recorded as the image label `flowforge.source`, so a stale cached image can be told apart."""
    import hashlib

    root = root or source_root()
    digest = hashlib.sha256()
    files = [root / "Dockerfile", root / "pyproject.toml"]
    for package in ("flowforge", "api"):
        files.extend(p for p in (root / package).rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts)
    for file in sorted(files):
        digest.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


def debian_mirror(sources: tuple[Path, ...] = (Path("/etc/apt/sources.list"),
                                               Path("/etc/apt/sources.list.d"))) -> str:
    """The first Debian archive URI apt is configured with (deb822 or one-line format)."""
    files: list[Path] = []
    for path in sources:
        if path.is_dir():
            files.extend(sorted(path.glob("*.sources")) + sorted(path.glob("*.list")))
        elif path.is_file():
            files.append(path)
    for file in files:
        text = file.read_text(errors="replace")
        for uri in re.findall(r"^\s*URIs:\s*(\S+)", text, re.MULTILINE) + re.findall(
                r"^\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.MULTILINE):
            if uri.rstrip("/").endswith("/debian"):
                return uri.rstrip("/")
    return DEFAULT_MIRROR


def _docker_client() -> Any:
    import docker

    try:
        return docker.from_env(version="auto", timeout=600)
    except docker.errors.DockerException as exc:
        raise ImageBuildError(f"cannot reach the Docker engine (DOCKER_HOST): {exc}") from exc


def _run(argv: list[str], what: str, log: Log) -> None:
    log(f"$ {' '.join(argv)}")
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise ImageBuildError(f"{what} failed (exit {result.returncode}):\n{tail}")


def build_base_image(client: Any, suite: str = DEFAULT_SUITE, mirror: str | None = None,
                     log: Log = print) -> str:
    """debootstrap a minimal Debian with python3, bash and node and `docker import` it."""
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("debootstrap is not installed (apt-get install debootstrap), or "
                              "pass --base IMAGE")
    name = base_image_name(suite)
    with tempfile.TemporaryDirectory(prefix="flowforge-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
              suite, str(rootfs), mirror or debian_mirror()], "debootstrap", log)
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / cache).glob("*"):
                if entry.is_file():
                    entry.unlink()
        archive = Path(tmp) / "rootfs.tar"
        _run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(archive), "."], "tar", log)
        log(f"importing {name}")
        repository, tag = name.split(":")
        client.api.import_image_from_file(str(archive), repository=repository, tag=tag)
    return name


def _wheels(into: Path, log: Log) -> None:
    import sys

    root = source_root()
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(into),
          str(root), *EXTRA_WHEELS], "pip wheel", log)


def build_image(target: str = "runner", base: str | None = None, tag: str | None = None,
                log: Log = print, client: Any = None) -> str:
    """Build the Dockerfile's `target` stage (runner or service) and return the image name.

    Without `base`, the debootstrap base is used, built first if the engine lacks it.
    """
    import docker

    client = client or _docker_client()
    tag = tag or (runner_image_name() if target == "runner" else service_image_name())
    if base is None:
        base = base_image_name()
        try:
            client.images.get(base)
        except docker.errors.ImageNotFound:
            build_base_image(client, log=log)
    else:
        try:
            client.images.get(base)
        except docker.errors.ImageNotFound as exc:
            raise ImageBuildError(f"base image {base!r} is not in the Docker engine "
                                  "(no registry is used: build or load it first)") from exc
    try:
        previous = client.images.get(tag).id
    except docker.errors.ImageNotFound:
        previous = None
    with tempfile.TemporaryDirectory(prefix="flowforge-build-") as tmp:
        context = Path(tmp)
        shutil.copyfile(source_root() / "Dockerfile", context / "Dockerfile")
        log("building wheels of FlowForge and its dependencies (pip wheel)")
        _wheels(context / "wheels", log)
        log(f"docker build --target {target} --build-arg BASE={base} -t {tag}")
        try:
            _, output = client.images.build(
                path=str(context), tag=tag, target=target, buildargs={"BASE": base},
                network_mode="host", rm=True, forcerm=True, pull=False,
                labels={"flowforge.version": __version__, "flowforge.source": source_hash()})
        except docker.errors.BuildError as exc:
            lines = [str(c.get("stream", c.get("error", ""))).rstrip() for c in exc.build_log]
            raise ImageBuildError(f"docker build failed: {exc.msg}\n"
                                  + "\n".join(lines[-30:])) from exc
        except docker.errors.APIError as exc:
            raise ImageBuildError(f"docker build failed: {exc}") from exc
        for chunk in output:
            if "stream" in chunk and chunk["stream"].strip():
                log(chunk["stream"].rstrip())
    # The install stage (wheels and all) is left untagged by every build, and so is the image
    # this build replaced; both go (the old one only if no container still uses it).
    client.images.prune(filters={"dangling": True, "label": "flowforge.stage=install"})
    if previous is not None and previous != client.images.get(tag).id:
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(previous)
    return tag


def build_runner_image(base: str | None = None, log: Log = print) -> str:
    return build_image("runner", base=base, log=log)


__all__ = [
    "build_base_image",
    "build_image",
    "build_runner_image",
    "debian_mirror",
    "runner_image_name",
    "service_image_name",
    "source_hash",
    "source_root",
]
