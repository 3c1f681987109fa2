"""The app Deployment of deploy/kubernetes/base run by ``podman kube play``
(``make kube-test``): the manifests' own pod spec, probes and securityContext,
with only what a laptop lacks changed (the image, the host's network on a free
port, secrets and a database of the tests'). It serves and its probes pass."""

import base64
import json
import secrets
import time
from collections.abc import Iterator

import pytest
import requests
import yaml

from deploy import kube
from devtools.ports import free_port


@pytest.fixture(scope="module")
def played(
    engine, built_image, container_database_url, upstream, tmp_path_factory
) -> Iterator[tuple[dict, int]]:
    """The Deployment, played; yields it (as played) and its port."""
    if engine.name != "podman":
        pytest.skip("kube play needs podman")
    docs = kube.render(kube.KUBERNETES / "base")
    deployment = kube.documents_by_kind(docs, "Deployment")["gevent-django"]
    configs = kube.documents_by_kind(docs, "ConfigMap")
    secret = kube.documents_by_kind(docs, "Secret")["gevent-django"]
    port = free_port()
    pod = deployment["spec"]["template"]["spec"]
    deployment["spec"]["replicas"] = 1
    pod["hostNetwork"] = True  # the tests' PostgreSQL and upstream are on loopback
    # podman 4.3 fails the play removing its finished "once" init container
    # ("cannot remove container ... as it is running"): migrations are not run
    # here (/readyz needs none; tests/containers/test_image.py runs the image).
    pod.pop("initContainers")
    for container in pod["containers"] + pod.get("initContainers", []):
        container["image"] = built_image
        for entry in container.get("env", []):
            if entry["name"] == "ALLOWED_HOSTS":
                entry["value"] = "127.0.0.1,localhost"
            if entry["name"] == "POD_IP":  # podman 4 has no status.podIP
                entry.pop("valueFrom")
                entry["value"] = "127.0.0.1"
        # On the host's network podman refuses port mappings (it makes one per port).
        container.pop("ports", None)
    app = next(c for c in pod["containers"] if c["name"] == "app")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        app[probe]["httpGet"]["port"] = port  # podman resolves no port names
    configs["gevent-django"]["data"].update(
        BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="1"
    )
    configs["gevent-django-aggregations"]["data"]["aggregations.toml"] = (
        kube.KUBERNETES.parent / "aggregations.toml"
    ).read_text()
    secret["stringData"].update(
        SECRET_KEY=secrets.token_urlsafe(50),
        DATABASE_URL=container_database_url,
        MIGRATE_DATABASE_URL=container_database_url,
        DEMO_UPSTREAM_URL=upstream,
    )
    folder = tmp_path_factory.mktemp("kube")
    # podman 4 reads a Secret that kube play refers to from its own store, as
    # a JSON object of base64 values.
    secret["stringData"].pop("REDIS_URL")  # no Redis here: per-worker caches
    secret["data"] = {
        key: base64.b64encode(value.encode()).decode()
        for key, value in secret.pop("stringData").items()
    }
    (folder / "secret.json").write_text(json.dumps(secret["data"]))
    engine.run(["secret", "rm", "gevent-django"], check=False)
    engine.run(["secret", "create", "gevent-django", str(folder / "secret.json")])
    path = folder / "app.yaml"
    path.write_text(yaml.safe_dump_all([*configs.values(), deployment]))
    engine.run(["kube", "down", str(path)], check=False)
    result = engine.run(["kube", "play", str(path)], check=False)
    try:
        assert result.returncode == 0, result.stderr
        yield deployment, port
    finally:
        engine.run(["kube", "down", str(path)], check=False)
        engine.run(["secret", "rm", "gevent-django"], check=False)


def _get(port: int, path: str) -> requests.Response:
    return requests.get(f"http://127.0.0.1:{port}{path}", timeout=3)


def test_serves_and_its_probes_pass(played, engine) -> None:
    """Each probe's httpGet, as the manifest states it, answers 200; the pod
    runs as the manifest's user on a read-only root; it serves."""
    deployment, port = played
    app = deployment["spec"]["template"]["spec"]["containers"][0]
    deadline = time.monotonic() + 90
    while True:
        try:
            if _get(port, app["readinessProbe"]["httpGet"]["path"]).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, engine.run(
            ["pod", "ps"], check=False
        ).stdout
        time.sleep(0.5)
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert _get(port, app[probe]["httpGet"]["path"]).status_code == 200, probe
    names = engine.run(["ps", "--format", "{{.Names}}"]).stdout.split()
    (container,) = [
        n for n in names if n.startswith("gevent-django-pod") and n.endswith("-app")
    ]
    # Not `podman healthcheck run`: podman 4.3 turns an httpGet probe into a
    # `curl` command, and the image carries no curl; the probes' requests are
    # made above instead, exactly as the manifest states them.
    user = engine.run(["exec", container, "id", "-u"]).stdout.strip()
    assert user == str(
        deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    )
    written = engine.run(["exec", container, "touch", "/app/x"], check=False)
    assert written.returncode != 0  # readOnlyRootFilesystem honoured
    # Production settings from the ConfigMap: plain HTTP is sent to HTTPS
    # (SECURE_SSL_REDIRECT), probes are exempt.
    other = requests.get(
        f"http://127.0.0.1:{port}/api/aggregate/product/?id=1",
        timeout=3,
        allow_redirects=False,
    )
    assert other.status_code == 301 and other.headers["Location"].startswith("https://")
