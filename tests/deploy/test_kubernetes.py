"""deploy/kubernetes/: every rendered manifest is valid against the Kubernetes
API schemas (offline, kubernetes-validate), and the properties a rollout
without errors depends on hold. Each test reads the real manifests."""

import re
import shutil
from pathlib import Path

import pytest
import yaml

from deploy import kube
from tests.helpers import BASE_DIR

kubernetes_validate = pytest.importorskip("kubernetes_validate")

KUBERNETES_VERSION = "1.33"
KUSTOMIZATIONS = ["base", "overlays/production", "monitoring"]
# Custom resources: no schema in kubernetes-validate; checked below instead.
CUSTOM_KINDS = {"ServiceMonitor"}
# Settings that are secrets or carry one: never in a ConfigMap.
SECRET_NAMES = re.compile(r"SECRET|PASSWORD|TOKEN|DATABASE_URL|REDIS_URL|userlist")


def rendered(name: str = "overlays/production") -> list[dict]:
    """The manifests of a kustomization."""
    return kube.render(kube.KUBERNETES / name)


def one(docs: list[dict], kind: str, name: str) -> dict:
    """The manifest of ``kind`` named ``name``."""
    return kube.documents_by_kind(docs, kind)[name]


def app_deployment(docs: list[dict] | None = None) -> dict:
    """The service's Deployment."""
    return one(docs or rendered(), "Deployment", "gevent-django")


def app_container(deployment: dict | None = None) -> dict:
    """The service's container in its Deployment."""
    spec = (deployment or app_deployment())["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == "app")


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_manifest_is_valid(name: str) -> None:
    """Each rendered document validates against the API schema of its kind (strict:
    an unknown field is an error)."""
    docs = rendered(name)
    assert docs
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_the_python_renderer_agrees_with_kubectl(name: str) -> None:
    """Where kubectl is installed, deploy.kube's own renderer gives what it gives."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")

    def key(doc: dict) -> tuple:
        return doc["kind"], doc["metadata"]["name"]

    path = kube.KUBERNETES / name
    assert sorted(kube.render_python(path), key=key) == sorted(
        kube.render(path), key=key
    )


def test_probes_point_at_healthz_and_readyz() -> None:
    """Liveness (and startup) on /healthz, which does no IO; readiness on /readyz,
    which checks the database; on the container's own port."""
    container = app_container()
    port_names = {port["name"] for port in container["ports"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in port_names


def test_a_rollout_cuts_no_request() -> None:
    """preStop pauses; the grace period outlasts the pause plus gunicorn's graceful
    timeout; no pod goes before its successor is ready; a PDB bounds drains."""
    docs = rendered()
    deployment = app_deployment(docs)
    container = app_container(deployment)
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pause = int(command[1])
    assert pause >= 5
    graceful = int(
        one(docs, "ConfigMap", "gevent-django")["data"]["GUNICORN_GRACEFUL_TIMEOUT"]
    )
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > pause + graceful
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pdb = one(docs, "PodDisruptionBudget", "gevent-django")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]


def test_pods_run_least_privileged() -> None:
    """Every container of every Deployment: non-root, read-only root filesystem,
    all capabilities dropped, no privilege escalation, resources set."""
    for deployment in kube.documents_by_kind(rendered(), "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, container["name"]
            assert context["capabilities"]["drop"] == ["ALL"], container["name"]
            assert context["allowPrivilegeEscalation"] is False, container["name"]
            assert {"cpu", "memory"} <= set(container["resources"]["limits"])
            assert {"cpu", "memory"} <= set(container["resources"]["requests"])


def test_the_app_writes_only_to_a_memory_backed_tmp() -> None:
    """/tmp, where the image puts everything it writes, is an emptyDir in memory."""
    deployment = app_deployment()
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in app_container(deployment)["volumeMounts"]}
    tmp = volumes[mounts["/tmp"]["name"]]
    assert tmp["emptyDir"]["medium"] == "Memory"
    dockerfile = (BASE_DIR / "Dockerfile").read_text()
    assert "XDG_RUNTIME_DIR=/tmp" in dockerfile and "TMPDIR=/tmp" in dockerfile
    writable = [m for m in mounts.values() if not m.get("readOnly")]
    assert [m["mountPath"] for m in writable] == ["/tmp"]


def test_workers_match_the_cpu_limit() -> None:
    """WEB_CONCURRENCY is the CPU limit (else gunicorn counts the node's cores)."""
    docs = rendered()
    workers = int(one(docs, "ConfigMap", "gevent-django")["data"]["WEB_CONCURRENCY"])
    assert workers == int(
        app_container(app_deployment(docs))["resources"]["limits"]["cpu"]
    )


def test_secrets_are_never_in_a_configmap() -> None:
    """No ConfigMap key names a secret and no value holds a URL with a password;
    the app gets its secrets from a Secret."""
    docs = rendered()
    for config in kube.documents_by_kind(docs, "ConfigMap").values():
        for key, value in config.get("data", {}).items():
            assert not SECRET_NAMES.search(key), (config["metadata"]["name"], key)
            assert not re.search(r"://[^/\s:@]*:[^/\s@]+@", value), key
    secret = one(docs, "Secret", "gevent-django")["stringData"]
    for key in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", "METRICS_TOKENS"):
        assert key in secret
    env_from = app_container()["envFrom"]
    assert {"secretRef": {"name": "gevent-django"}} in env_from


def test_env_references_are_defined_before_use() -> None:
    """A $(VAR) in a container's env names a variable listed before it (or from
    envFrom): Kubernetes leaves a forward reference unexpanded."""
    for deployment in kube.documents_by_kind(rendered(), "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"] + pod.get("initContainers", []):
            listed = [entry["name"] for entry in container.get("env", [])]
            for index, entry in enumerate(container.get("env", [])):
                for used in re.findall(r"\$\((\w+)\)", entry.get("value", "")):
                    # Listed before this entry, or not listed at all but
                    # possibly from envFrom (the Secret or the ConfigMap).
                    assert used in listed[:index] or (
                        used not in listed and container.get("envFrom")
                    ), (container["name"], entry["name"], used)


def test_allowed_hosts_let_in_probes_and_scrapers() -> None:
    """Probes and Prometheus send the pod's IP as Host: ALLOWED_HOSTS has it."""
    env = {e["name"]: e for e in app_container()["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert "$(POD_IP)" in env["ALLOWED_HOSTS"]["value"].split(",")


def test_pgbouncer_pools_transactions_with_scram_for_a_non_superuser() -> None:
    """PgBouncer: transaction pooling, SCRAM, its auth file from a Secret; the
    app's URL goes through it without server-side cursors, as role app."""
    docs = rendered()
    ini = one(docs, "ConfigMap", "pgbouncer")["data"]["pgbouncer.ini"]
    assert re.search(r"^pool_mode = transaction$", ini, re.M)
    assert re.search(r"^auth_type = scram-sha-256$", ini, re.M)
    assert "postgres" not in re.findall(r"user=(\w+)", ini)
    volumes = one(docs, "Deployment", "pgbouncer")["spec"]["template"]["spec"][
        "volumes"
    ]
    assert any(v.get("secret", {}).get("secretName") == "pgbouncer" for v in volumes)
    url = one(docs, "Secret", "gevent-django")["stringData"]["DATABASE_URL"]
    assert "@pgbouncer:6432/" in url and "disable_server_side_cursors=true" in url
    assert not url.startswith("postgres://postgres:")


def test_redis_wants_a_password() -> None:
    """Redis starts with --requirepass from the Secret; the app's URL carries it."""
    docs = rendered()
    redis = one(docs, "Deployment", "redis")["spec"]["template"]["spec"]["containers"][
        0
    ]
    assert (
        redis["args"][redis["args"].index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    )
    env = {e["name"]: e for e in redis["env"]}
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "gevent-django"
    assert re.match(
        r"redis://:[^@]+@redis:",
        one(docs, "Secret", "gevent-django")["stringData"]["REDIS_URL"],
    )


def test_network_policies_admit_only_the_app_to_its_backends() -> None:
    """PgBouncer and Redis take connections from the app's pods only."""
    docs = rendered()
    selector = app_deployment(docs)["spec"]["selector"]["matchLabels"]
    for backend in ("pgbouncer", "redis"):
        policy = one(docs, "NetworkPolicy", backend)
        sources = [s for rule in policy["spec"]["ingress"] for s in rule["from"]]
        assert sources == [{"podSelector": {"matchLabels": selector}}]


def test_prometheus_scrapes_metrics_with_the_token() -> None:
    """The ServiceMonitor scrapes /metrics on the app's port with METRICS_TOKENS."""
    docs = rendered("monitoring")
    monitor = one(docs, "ServiceMonitor", "gevent-django")
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] == "http"
    assert endpoint["authorization"]["credentials"] == {
        "name": "gevent-django",
        "key": "METRICS_TOKENS",
    }
    service = one(rendered(), "Service", "gevent-django")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items()
        <= service["metadata"]["labels"].items()
    )


def test_the_autoscaler_follows_a_metric_the_service_exports() -> None:
    """The HPA (autoscaling/v2) scales on a per-pod gauge from project/core/metrics.py,
    and the Prometheus Adapter rule serves that name; target within (0, 1)."""
    docs = rendered()
    hpa = one(docs, "HorizontalPodAutoscaler", "gevent-django")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "gevent-django"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    name = metric["pods"]["metric"]["name"]
    exported = (BASE_DIR / "project" / "core" / "metrics.py").read_text()
    assert f'"{name}"' in exported
    target = metric["pods"]["target"]["averageValue"]
    value = int(target[:-1]) / 1000 if target.endswith("m") else float(target)
    assert 0 < value < 1
    adapter = one(rendered("monitoring"), "ConfigMap", "prometheus-adapter")
    rules = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    assert any(
        rule["name"]["as"] == name and name in rule["seriesQuery"] for rule in rules
    )


def test_generated_secrets_agree_with_each_other() -> None:
    """python -m deploy.kube secrets: one database password in both URLs and
    PgBouncer's auth file, Redis's in its URL; a key production accepts."""
    app, pgbouncer = kube.generated_secrets()
    data = app["stringData"]
    password = re.search(r"app:([^@]+)@", data["DATABASE_URL"]).group(1)
    assert f"app:{password}@" in data["MIGRATE_DATABASE_URL"]
    assert pgbouncer["stringData"]["userlist.txt"] == f'"app" "{password}"\n'
    assert f":{data['REDIS_PASSWORD']}@" in data["REDIS_URL"]
    assert len(data["SECRET_KEY"]) >= 50 and "replace-me" not in str(data)


def test_the_base_secret_is_refused_by_production() -> None:
    """The committed Secret holds placeholders production refuses (short SECRET_KEY)."""
    from settings.production_checks import SECRET_KEY_MIN_LENGTH

    secret = yaml.safe_load_all((kube.KUBERNETES / "base" / "secret.yaml").read_text())
    first = next(doc for doc in secret if doc)
    assert len(first["stringData"]["SECRET_KEY"]) < SECRET_KEY_MIN_LENGTH


def test_every_manifest_file_is_rendered() -> None:
    """No YAML file under deploy/kubernetes/ is left out of every kustomization."""
    used: set[Path] = set()

    def walk(directory: Path) -> None:
        used.add(directory / "kustomization.yaml")
        spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
        for entry in spec.get("resources", []):
            path = (directory / entry).resolve()
            walk(path) if path.is_dir() else used.add(path)
        used.update(directory / p["path"] for p in spec.get("patches", []))

    for name in KUSTOMIZATIONS:
        walk(kube.KUBERNETES / name)
    files = set(kube.KUBERNETES.rglob("*.yaml"))
    assert files - {p.resolve() for p in used} == set()
