"""Render deploy/kubernetes/ without a cluster: ``kubectl kustomize`` when it is
installed, else a small renderer of the kustomize features these manifests
use (resources, namespace, labels, images, strategic-merge patches of named
lists). ``tests/deploy/test_kubernetes.py`` checks the two agree.

``python -m deploy.kube render DIR`` prints the manifests of a kustomization;
``python -m deploy.kube secrets`` prints the two Secrets with every password
and token generated (the same password in the app's URLs, PgBouncer's auth
file and Redis), to replace ``base/secret.yaml``'s placeholders.
"""

import argparse
import copy
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

KUBERNETES = Path(__file__).resolve().parent / "kubernetes"
# Kinds that live in no namespace (the ones these manifests could contain).
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
# Where a kind's pod template is: its containers get image overrides.
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


def load_documents(path: Path) -> list[dict]:
    """The YAML documents of one file, empty ones left out."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render(directory: Path, use_kubectl: bool = True) -> list[dict]:
    """The manifests a kustomization directory renders to."""
    kubectl = shutil.which("kubectl") if use_kubectl else None
    if kubectl:
        out = subprocess.run(
            [kubectl, "kustomize", str(directory)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]
    return render_python(directory)


def render_python(directory: Path) -> list[dict]:
    """The pure-Python renderer (see the module docstring)."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs: list[dict] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        docs += render_python(path) if path.is_dir() else load_documents(path)
    for patch in spec.get("patches", []):
        for change in load_documents(directory / patch["path"]):
            target = _find(docs, change["kind"], change["metadata"]["name"])
            merged = merge(target, change)
            target.clear()
            target.update(merged)
    for label in spec.get("labels", []):
        for doc in docs:
            doc.setdefault("metadata", {}).setdefault("labels", {}).update(
                label["pairs"]
            )
    for image in spec.get("images", []):
        for doc in docs:
            if doc["kind"] in WORKLOADS:
                pod = doc["spec"]["template"]["spec"]
                for container in pod.get("containers", []) + pod.get(
                    "initContainers", []
                ):
                    if container["image"].split(":")[0] == image["name"]:
                        name = image.get("newName", image["name"])
                        tag = image.get("newTag")
                        container["image"] = f"{name}:{tag}" if tag else name
    namespace = spec.get("namespace")
    if namespace:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = namespace
    return docs


def _find(docs: list[dict], kind: str, name: str) -> dict:
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise KeyError(f"patch target {kind}/{name} is not among the resources")


def merge(base: Any, change: Any) -> Any:
    """A strategic merge of ``change`` into ``base``: maps merge key by key,
    lists of maps with a ``name`` merge by name, anything else is replaced."""
    if isinstance(base, dict) and isinstance(change, dict):
        out = copy.deepcopy(base)
        for key, value in change.items():
            out[key] = merge(base[key], value) if key in base else value
        return out
    if (
        isinstance(base, list)
        and isinstance(change, list)
        and all(isinstance(item, dict) and "name" in item for item in base + change)
    ):
        # As kustomize orders them: the patch's items first (merged with the
        # base's of the same name), then the base's other items.
        have = {item["name"]: item for item in base}
        merged = [merge(have[i["name"]], i) if i["name"] in have else i for i in change]
        named = {item["name"] for item in change}
        return merged + [copy.deepcopy(i) for i in base if i["name"] not in named]
    return copy.deepcopy(change)


def documents_by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    """``docs`` of ``kind``, by name."""
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def generated_secrets() -> list[dict]:
    """The base's two Secrets, every value random and the passwords consistent."""
    db, redis = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    docs = load_documents(KUBERNETES / "base" / "secret.yaml")
    app, pgbouncer = documents_by_kind(docs, "Secret").values()
    data = app["stringData"]
    for key in ("DATABASE_URL", "MIGRATE_DATABASE_URL"):
        data[key] = data[key].replace("app:replace-me@", f"app:{db}@")
    data["REDIS_URL"] = data["REDIS_URL"].replace(":replace-me@", f":{redis}@")
    data["REDIS_PASSWORD"] = redis
    data["SECRET_KEY"] = secrets.token_urlsafe(64)
    data["METRICS_TOKENS"] = secrets.token_urlsafe(32)
    data["AGGREGATION_API_TOKENS"] = secrets.token_urlsafe(32)
    pgbouncer["stringData"]["userlist.txt"] = f'"app" "{db}"\n'
    return [app, pgbouncer]


def main(argv: list[str] | None = None) -> int:
    """``render DIR`` or ``secrets``: YAML on stdout."""
    parser = argparse.ArgumentParser(prog="python -m deploy.kube", description=__doc__)
    parser.add_argument("command", choices=("render", "secrets"))
    parser.add_argument("directory", nargs="?", type=Path)
    args = parser.parse_args(argv)
    if args.command == "render":
        if args.directory is None:
            parser.error("render needs a kustomization directory")
        docs = render(args.directory)
    else:
        docs = generated_secrets()
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
