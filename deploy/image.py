"""Build the service's OCI image with podman or docker: ``make image``.

Standard library only: it runs before any virtualenv exists.

``python -m deploy.image build`` builds ``Dockerfile`` as ``IMAGE`` (default
``localhost/gevent-django:latest``) and prints its size and the build time.
The base image is ``BASE_IMAGE`` when set; otherwise, where a registry may be
unreachable, a Python base made from Debian's own packages
(``localhost/debian-py:bookworm``, debootstrap; built once, then reused) when
this runs as root with debootstrap installed, else ``python:3.11-slim-bookworm``
from the registry.

podman runs with ``deploy/containers.conf`` (no default ulimits, cgroupfs) and
with runc when it is installed: on hosts whose cgroups are hybrid, crun
refuses to start containers and setting default ulimits is refused.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
IMAGE = "localhost/gevent-django:latest"
REGISTRY_BASE = "python:3.11-slim-bookworm"
LOCAL_BASE = "localhost/debian-py:bookworm"
CONTAINERS_CONF = Path(__file__).resolve().parent / "containers.conf"
DEFAULT_MIRROR = "http://deb.debian.org/debian"


class ImageError(RuntimeError):
    """No engine, or a build step failed: the message says which and why."""


@dataclass(frozen=True)
class Engine:
    """A container engine that answers: its command prefix and environment."""

    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def run(
        self, args: list[str], check: bool = True, **kwargs
    ) -> subprocess.CompletedProcess:
        """Run ``ENGINE args`` (text); ``ImageError`` on failure if ``check``."""
        kwargs.setdefault("capture_output", True)
        result = subprocess.run(
            self.command + args,
            env={**os.environ, **self.env},
            text=True,
            **kwargs,
        )
        if check and result.returncode != 0:
            raise ImageError(
                f"{' '.join(self.command + args[:3])} ... failed "
                f"({result.returncode}): {(result.stderr or '').strip()[-2000:]}"
            )
        return result

    def popen(self, args: list[str], **kwargs) -> subprocess.Popen:
        """Start ``ENGINE args`` without waiting."""
        return subprocess.Popen(
            self.command + args, env={**os.environ, **self.env}, **kwargs
        )

    def exists(self, image: str) -> bool:
        """Whether ``image`` is in the engine's local store."""
        return (
            self.run(
                ["image", "exists" if self.name == "podman" else "inspect", image],
                check=False,
            ).returncode
            == 0
        )

    def size(self, image: str) -> int:
        """The image's size in bytes, as the engine reports it."""
        out = self.run(["image", "inspect", "--format", "{{.Size}}", image]).stdout
        return int(out.strip())


def find_engine() -> tuple[Engine | None, str]:
    """podman if it can run containers here, else docker with a daemon.

    Returns the engine, or None and why neither can be used.
    """
    reasons = []
    podman = shutil.which("podman")
    if podman:
        command = [podman]
        if shutil.which("runc"):
            command += ["--runtime", "runc"]
        env = {}
        if not os.environ.get("CONTAINERS_CONF"):
            env["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
        engine = Engine("podman", command, env)
        info = engine.run(
            ["info", "--format", "{{.Host.OCIRuntime.Name}}"], check=False
        )
        if info.returncode == 0:
            return engine, ""
        reasons.append(f"podman info failed: {info.stderr.strip()[-300:]}")
    else:
        reasons.append("podman is not installed")
    docker = shutil.which("docker")
    if docker:
        engine = Engine("docker", [docker])
        info = engine.run(["info", "--format", "{{.ServerVersion}}"], check=False)
        if info.returncode == 0:
            return engine, ""
        reasons.append(f"docker has no daemon: {info.stderr.strip()[-200:]}")
    else:
        reasons.append("docker is not installed")
    return None, "; ".join(reasons) + (
        " (as root on Debian: apt-get install -y --no-install-recommends "
        "podman runc catatonit debootstrap uidmap)"
    )


def require_engine() -> Engine:
    """The engine, or ``ImageError`` saying why there is none."""
    engine, reason = find_engine()
    if engine is None:
        raise ImageError(f"no container engine: {reason}")
    return engine


def debian_mirror() -> str:
    """The Debian mirror apt already uses (deb822 or one-line sources)."""
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    sources += [Path("/etc/apt/sources.list")]
    sources += sorted(Path("/etc/apt/sources.list.d").glob("*.list"))
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for match in re.finditer(
            r"^\s*(?:URIs:|deb)\s+(?:\[[^]]*\]\s*)?(\S+)", text, re.M
        ):
            uri = match.group(1)
            if re.search(r"/debian/?$", uri):
                return uri
    return DEFAULT_MIRROR


def build_local_base(engine: Engine, tag: str = LOCAL_BASE) -> None:
    """Make ``tag`` from Debian bookworm's python3 and python3-venv (debootstrap)."""
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not Path(debootstrap).exists():
        raise ImageError("debootstrap is not installed (apt-get install debootstrap)")
    started = time.monotonic()
    print(f"image: building the base {tag} with debootstrap (about 70 s)", flush=True)
    with tempfile.TemporaryDirectory(prefix="debian-py-") as scratch:
        root = Path(scratch) / "rootfs"
        result = subprocess.run(
            [debootstrap, "--variant=minbase", "--include=python3,python3-venv"]
            + ["bookworm", str(root), debian_mirror()],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise ImageError(
                f"debootstrap failed: {result.stdout[-2000:]}{result.stderr[-2000:]}"
            )
        # Package caches and lists are of no use in an image.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(root / junk, ignore_errors=True)
        tar = subprocess.Popen(
            ["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE
        )
        imported = engine.run(["import", "-", tag], check=False, stdin=tar.stdout)
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise ImageError(f"importing the base failed: {imported.stderr[-2000:]}")
    print(f"image: base {tag} built in {time.monotonic() - started:.0f} s", flush=True)


def choose_base(engine: Engine, requested: str | None) -> str:
    """The base image to build on (see the module docstring), made if need be."""
    if requested:
        return requested
    if engine.exists(LOCAL_BASE):
        return LOCAL_BASE
    if os.geteuid() == 0 and (
        shutil.which("debootstrap") or Path("/usr/sbin/debootstrap").exists()
    ):
        build_local_base(engine)
        return LOCAL_BASE
    return REGISTRY_BASE


def pip_ca() -> str | None:
    """The CA bundle the host's pip is told to trust (a proxy's), if any."""
    for name in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        value = os.environ.get(name, "")
        if value and Path(value).is_file():
            return value
    return None


def build(engine: Engine, tag: str = IMAGE, base: str | None = None) -> dict:
    """Build ``Dockerfile`` as ``tag``: its base, size (bytes) and build seconds."""
    base = choose_base(engine, base)
    args = ["build", "--tag", tag, "--build-arg", f"BASE_IMAGE={base}"]
    args += ["--network", "host"]  # pip reaches the index as the host does
    if engine.name == "podman":
        args += ["--format", "docker"]  # the OCI format has no HEALTHCHECK
    ca = pip_ca()
    if ca:
        args += ["--secret", f"id=pip-ca,src={ca}"]
    env = {"DOCKER_BUILDKIT": "1"} if engine.name == "docker" else {}
    print(f"image: {engine.name} build {tag} on {base}", flush=True)
    started = time.monotonic()
    result = subprocess.run(
        engine.command + args + [str(BASE_DIR)],
        env={**os.environ, **engine.env, **env},
    )
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise ImageError(f"{engine.name} build failed ({result.returncode})")
    return {"image": tag, "base": base, "size": engine.size(tag), "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    """``build`` (the image; its size printed), ``base`` (the base only), ``engine``."""
    parser = argparse.ArgumentParser(prog="python -m deploy.image", description=__doc__)
    parser.add_argument("command", choices=("build", "base", "engine"))
    parser.add_argument("--tag", default=os.environ.get("IMAGE") or IMAGE)
    parser.add_argument("--base", default=os.environ.get("BASE_IMAGE") or None)
    args = parser.parse_args(argv)
    try:
        if args.command == "engine":
            engine, reason = find_engine()
            print(" ".join(engine.command) if engine else f"none: {reason}")
            return 0 if engine else 1
        engine = require_engine()
        if args.command == "base":
            if not engine.exists(LOCAL_BASE):
                build_local_base(engine)
            print(LOCAL_BASE)
            return 0
        built = build(engine, args.tag, args.base)
    except ImageError as error:
        print(f"image: {error}", file=sys.stderr)
        return 1
    print(
        f"image: {built['image']} on {built['base']}: {built['size'] / 1e6:.0f} MB, "
        f"built in {built['seconds']:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
