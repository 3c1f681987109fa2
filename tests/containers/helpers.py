"""Running the image under podman or docker for the tests of this directory."""

import json
import secrets
import subprocess
import time
from dataclasses import dataclass

import requests

from deploy.image import Engine
from tests.helpers import BASE_DIR

# The registry the containers serve (mounted read-only; production needs one).
REGISTRY = BASE_DIR / "deploy" / "aggregations.toml"
REGISTRY_IN_CONTAINER = "/etc/gevent-django/aggregations.toml"


def production_env(database_url: str, upstream: str, port: int) -> dict[str, str]:
    """A production environment for a container on the host's network."""
    return {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": database_url,
        "AGGREGATIONS_FILE": REGISTRY_IN_CONTAINER,
        "BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "1",
        "SECURE_SSL_REDIRECT": "false",
        "DEMO_ENDPOINTS": "true",
        "DEMO_UPSTREAM_URL": upstream,
        "METRICS_TOKENS": secrets.token_urlsafe(24),
        "GUNICORN_GRACEFUL_TIMEOUT": "20",
    }


@dataclass
class Container:
    """A container of the image, started detached on the host's network."""

    engine: Engine
    name: str
    port: int

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://127.0.0.1:{self.port}"

    def inspect(self) -> dict:
        """``ENGINE inspect`` of it."""
        return json.loads(self.engine.run(["inspect", self.name]).stdout)[0]

    def exec(self, *command: str) -> subprocess.CompletedProcess:
        """Run ``command`` inside it (not checked)."""
        return self.engine.run(["exec", self.name, *command], check=False)

    def logs(self) -> str:
        """What it wrote, stdout and stderr."""
        result = self.engine.run(["logs", self.name], check=False)
        return result.stdout + result.stderr

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until ``/readyz`` answers 200; fails with its logs otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if not self.inspect()["State"]["Running"]:
                break
            time.sleep(0.3)
        raise AssertionError(
            f"{self.name} did not become ready:\n{self.logs()[-3000:]}"
        )

    def exit_code(self, timeout: float = 60.0) -> int:
        """Wait for it to exit; its exit code."""
        out = self.engine.run(["wait", self.name], timeout=timeout).stdout
        return int(out.strip().splitlines()[-1])

    def remove(self) -> None:
        """Stop (if need be) and remove it."""
        self.engine.run(["rm", "--force", "--time", "1", self.name], check=False)


def run_container(
    engine: Engine, image: str, env: dict[str, str], port: int, name: str
) -> Container:
    """Start ``image`` as the cluster would: read-only root, /tmp on a tmpfs,
    no capabilities, no privilege escalation, the image's own user."""
    args = ["run", "--detach", "--name", name, "--network", "host"]
    args += ["--read-only", "--tmpfs", "/tmp:rw,size=64m,mode=1777"]
    args += ["--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    args += ["--volume", f"{REGISTRY}:{REGISTRY_IN_CONTAINER}:ro"]
    for key, value in env.items():
        args += ["--env", f"{key}={value}"]
    engine.run(["rm", "--force", name], check=False)
    engine.run(args + [image])
    return Container(engine, name, port)
