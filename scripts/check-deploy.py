#!/usr/bin/env python3
"""Checks the Kubernetes deployment files: deploy/kubernetes/ (plain manifests),
deploy/secrets.example.yaml and the Helm chart deploy/helm/agent-monitor.

1. The chart is linted and rendered by Helm's own engine (helm-python-sdk binds Helm's Go SDK,
   so templates are rendered exactly as `helm template` would), with its defaults and with
   non-default values that exercise every conditional.
2. Every object, plain or rendered, is validated against the Kubernetes OpenAPI schemas of the
   oldest and newest supported Kubernetes versions, strictly (an unknown field is an error), by
   kubernetes-validate, which bundles the schemas.
3. The chart's defaults must produce the plain manifests, object by object (Helm's own labels
   and the config checksum annotation aside).
4. Invariants no schema knows: the DaemonSet is not privileged and drops every capability, its
   probes and port match the configuration's listener, and every path the configuration names
   is on a mounted volume.
5. A deliberately broken DaemonSet must be rejected, or the check itself is broken.

Run with the tools venv that scripts/setup.sh creates:
    /opt/agent-monitor-tools/deploy-venv/bin/python scripts/check-deploy.py
Prints one line per check and ends with "N passed, N failed"; exits non-zero on any failure.
"""

from __future__ import annotations

import copy
import posixpath
import sys
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
PLAIN_DIR = ROOT / "deploy" / "kubernetes"
SECRETS_EXAMPLE = ROOT / "deploy" / "secrets.example.yaml"
CHART = ROOT / "deploy" / "helm" / "agent-monitor"
# Oldest supported (securityContext.appArmorProfile is GA from 1.30) and newest bundled.
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
# What Helm adds and the plain manifests do not carry.
HELM_ONLY_LABELS = {"helm.sh/chart", "app.kubernetes.io/managed-by"}
HELM_ONLY_ANNOTATIONS = {"checksum/config"}
# Values that differ from every default, so that each conditional template is rendered.
OTHER_VALUES = {
    "namespace": {"create": False},
    "serviceAccount": {"name": "monitor-sa"},
    "priorityClass": {"create": False, "name": "system-node-critical"},
    "image": {"repository": "registry.bank.example/agent-monitor", "tag": "9.9.9"},
    "imagePullSecrets": [{"name": "registry-credentials"}],
    "nodeSelector": {"agent-monitor.io/agents": "true"},
    "tolerations": [{"key": "agents", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}
                ]
            }
        }
    },
    "podAnnotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9750"},
    "podLabels": {"team": "soc"},
    "extraArgs": ["--duration", "1h"],
    "eventsOutput": "-",
    "capabilities": ["BPF", "PERFMON", "NET_ADMIN"],
    "config": "watch: []\nkubernetes: {}\nsnapshot: null\nobservability: {listen: \"0.0.0.0:9750\"}\n",
}


class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def result(self, name: str, problems: list[str]) -> None:
        if problems:
            self.failed += 1
            print(f"FAIL  {name}")
            for p in problems:
                print(f"        {p}")
        else:
            self.passed += 1
            print(f"ok    {name}")


def load_documents(path: Path) -> list[dict]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def plain_objects() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(PLAIN_DIR.glob("*.yaml")):
        for i, doc in enumerate(load_documents(path)):
            out.append((f"{path.relative_to(ROOT)}#{i}", doc))
    return out


def render(values: dict, name: str, namespace: str) -> list[tuple[str, dict]]:
    with helm.Chart.load(str(CHART)) as chart:
        manifests = chart.render(values, name=name, namespace=namespace)
    out = []
    for template, text in sorted(manifests.items()):
        if not template.endswith(".yaml"):
            continue
        for i, doc in enumerate(d for d in yaml.safe_load_all(text) if d is not None):
            out.append((f"{template}#{i} (release {name})", doc))
    return out


def key(obj: dict) -> tuple:
    meta = obj.get("metadata", {})
    return (obj.get("apiVersion"), obj.get("kind"), meta.get("namespace"), meta.get("name"))


def schema_problems(obj: dict, version: str) -> list[str]:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = ".".join(str(p) for p in e.path) or "(top level)"
        return [f"Kubernetes {version}: {where}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [f"Kubernetes {version}: no schema: {e}"]
    except kubernetes_validate.InvalidSchemaError as e:
        return [f"Kubernetes {version}: invalid schema: {e}"]
    return []


def validate_all(checks: Checks, objects: list[tuple[str, dict]]) -> None:
    for where, obj in objects:
        problems = [p for v in KUBERNETES_VERSIONS for p in schema_problems(obj, v)]
        checks.result(f"schema {obj.get('kind')}/{obj.get('metadata', {}).get('name')}: {where}", problems)


def without_helm_metadata(obj: dict) -> dict:
    obj = copy.deepcopy(obj)

    def strip(meta: dict) -> None:
        labels = meta.get("labels") or {}
        for k in HELM_ONLY_LABELS:
            labels.pop(k, None)
        annotations = meta.get("annotations") or {}
        for k in HELM_ONLY_ANNOTATIONS:
            annotations.pop(k, None)
        if "annotations" in meta and not annotations:
            del meta["annotations"]

    strip(obj.get("metadata", {}))
    template = obj.get("spec", {}).get("template")
    if isinstance(template, dict):
        strip(template.get("metadata", {}))
    if obj.get("kind") == "ConfigMap":
        obj["data"] = {k: yaml.safe_load(v) for k, v in (obj.get("data") or {}).items()}
    return obj


def differences(a, b, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            p = f"{path}.{k}" if path else str(k)
            if k not in a:
                out.append(f"{p}: only in the chart: {b[k]!r}")
            elif k not in b:
                out.append(f"{p}: only in the plain manifest: {a[k]!r}")
            else:
                out.extend(differences(a[k], b[k], p))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: plain {a!r} != chart {b!r}"]


def check_same(checks: Checks, plain: list[tuple[str, dict]], chart: list[tuple[str, dict]]) -> None:
    by_key = {key(o): o for _, o in chart}
    plain_keys = {key(o) for _, o in plain}
    for where, obj in plain:
        other = by_key.get(key(obj))
        if other is None:
            checks.result(f"chart renders {where}", [f"no {key(obj)} in the rendered chart"])
            continue
        checks.result(
            f"chart renders {where}",
            differences(without_helm_metadata(obj), without_helm_metadata(other)),
        )
    extra = [k for k in by_key if k not in plain_keys]
    checks.result("chart renders nothing the plain manifests lack", [f"only in the chart: {k}" for k in extra])


def daemonset_of(objects: list[tuple[str, dict]]) -> dict:
    found = [o for _, o in objects if o.get("kind") == "DaemonSet"]
    if len(found) != 1:
        raise SystemExit(f"expected one DaemonSet, found {len(found)}")
    return found[0]


def configmap_config(objects: list[tuple[str, dict]], name: str) -> dict:
    for _, o in objects:
        if o.get("kind") == "ConfigMap" and o["metadata"]["name"] == name:
            return yaml.safe_load(o["data"]["config.yaml"]) or {}
    raise SystemExit(f"no ConfigMap {name}")


def secret_keys() -> dict[str, set[str]]:
    return {
        d["metadata"]["name"]: set((d.get("stringData") or {}) | (d.get("data") or {}))
        for d in load_documents(SECRETS_EXAMPLE)
    }


def config_paths(config: dict) -> list[tuple[str, str]]:
    """(field, path) of every file or directory the configuration names."""
    out = []
    for field in ("state_dir", "pin_dir"):
        if config.get(field):
            out.append((field, config[field]))
    for section, fields in {
        "audit": ["path", "signing_key", "token_key"],
        "snapshot": ["output_dir", "signing_key_file"],
        "webhook": ["key_file", "outbox_dir"],
    }.items():
        for f in fields:
            value = (config.get(section) or {}).get(f)
            if value:
                out.append((f"{section}.{f}", value))
    api = config.get("api") or {}
    if api.get("socket"):
        out.append(("api.socket", api["socket"]))
    return out


def invariant_problems(objects: list[tuple[str, dict]]) -> list[str]:
    problems = []
    ds = daemonset_of(objects)
    pod = ds["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    sc = container.get("securityContext", {})
    if sc.get("privileged") is not False:
        problems.append("securityContext.privileged must be false")
    if sc.get("capabilities", {}).get("drop") != ["ALL"]:
        problems.append("capabilities.drop must be [ALL]")
    for cap in sc.get("capabilities", {}).get("add", []):
        if cap in ("SYS_ADMIN", "ALL"):
            problems.append(f"capability {cap} added: docs/DEPLOY.md explains why it is not needed")
    if pod.get("hostPID") is not True:
        problems.append("hostPID must be true (the kernel reports host pids)")
    env = {e["name"]: e for e in container.get("env", [])}
    if env.get("NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "spec.nodeName":
        problems.append("NODE_NAME must come from the downward API (spec.nodeName)")

    args = container.get("args", [])
    config_file = args[args.index("--config") + 1] if "--config" in args else None
    mounts = container.get("volumeMounts", [])
    by_path = {m["mountPath"]: m for m in mounts}
    if config_file not in by_path:
        problems.append(f"--config {config_file} is not a mounted file")
    cm_name = next(
        (v["configMap"]["name"] for v in pod["volumes"] if v["name"] == by_path.get(config_file, {}).get("name") and "configMap" in v),
        None,
    )
    if cm_name is None:
        return problems + ["the config file is not mounted from a ConfigMap"]
    config = configmap_config(objects, cm_name)

    listen = (config.get("observability") or {}).get("listen")
    port = int(str(listen).rsplit(":", 1)[1]) if listen else None
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    if port is None or port not in ports.values():
        problems.append(f"observability.listen {listen!r} is not a container port ({ports})")
    elif str(listen).startswith("127."):
        problems.append(f"observability.listen {listen} is loopback: the kubelet's probes cannot reach it")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        get = container.get(probe, {}).get("httpGet", {})
        target = ports.get(get.get("port"), get.get("port"))
        if get.get("path") != path or target != port:
            problems.append(f"{probe} must GET {path} on port {port}, has {get}")

    volumes = {v["name"]: v for v in pod["volumes"]}
    keys = secret_keys()
    for field, path in config_paths(config):
        mount = max(
            (m for m in mounts if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")),
            key=lambda m: len(m["mountPath"]),
            default=None,
        )
        if mount is None:
            problems.append(f"config {field} {path} is on no mounted volume (it would be lost with the pod)")
            continue
        volume = volumes[mount["name"]]
        if "secret" in volume:
            secret = volume["secret"]["secretName"]
            name = posixpath.relpath(path, mount["mountPath"])
            if secret in keys and name not in keys[secret]:
                problems.append(f"config {field} {path}: Secret {secret} has no key {name} in {SECRETS_EXAMPLE.name}")
        elif field not in ("signing_key", "token_key", "signing_key_file", "key_file") and mount.get("readOnly"):
            problems.append(f"config {field} {path} is on read-only mount {mount['mountPath']}")
    limits = container.get("resources", {}).get("limits", {})
    if "memory" not in limits:
        problems.append("no memory limit")
    return problems


def broken_daemonset_is_rejected(objects: list[tuple[str, dict]]) -> list[str]:
    """Mutations a reviewer could miss; each must fail schema validation."""
    base = daemonset_of(objects)
    broken = []
    ds = copy.deepcopy(base)
    ds["spec"]["template"]["spec"]["hostPid"] = True  # misspelt field
    broken.append(("misspelt hostPid", ds))
    ds = copy.deepcopy(base)
    ds["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "9750"
    broken.append(("port as a string", ds))
    ds = copy.deepcopy(base)
    del ds["spec"]["selector"]
    broken.append(("no selector", ds))
    problems = []
    for what, obj in broken:
        for version in KUBERNETES_VERSIONS:
            if not schema_problems(obj, version):
                problems.append(f"a DaemonSet with {what} passed validation for Kubernetes {version}")
    return problems


def main() -> int:
    checks = Checks()
    lint = helm.lint(str(CHART), strict=True)
    checks.result(
        "helm lint deploy/helm/agent-monitor",
        [m["error"] for m in lint.get("messages", []) if m.get("severity", 0) >= 2],
    )
    plain = plain_objects()
    example = [(f"{SECRETS_EXAMPLE.relative_to(ROOT)}#{i}", d) for i, d in enumerate(load_documents(SECRETS_EXAMPLE))]
    rendered = []
    for values, name, namespace in (
        ({"namespace": {"create": True}}, "agent-monitor", "agent-monitor"),
        (OTHER_VALUES, "soc", "security"),
    ):
        try:
            rendered.append(render(values, name, namespace))
            checks.result(f"helm render (release {name})", [])
        except helm.HelmError as e:
            checks.result(f"helm render (release {name})", [str(e)])
            rendered.append([])
    defaults, others = rendered
    if not defaults:
        print(f"check-deploy: {checks.passed} passed, {checks.failed} failed")
        return 1

    validate_all(checks, plain + example + defaults + others)
    check_same(checks, plain, defaults)
    checks.result("invariants of deploy/kubernetes", invariant_problems(plain))
    checks.result("invariants of the chart (defaults)", invariant_problems(defaults))
    checks.result("a broken DaemonSet is rejected", broken_daemonset_is_rejected(plain))

    print(f"check-deploy: {checks.passed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
