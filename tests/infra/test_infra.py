"""The deployment files under infra/ (and prefect.yaml), checked offline: no Docker engine or
Kubernetes cluster runs here. YAML parses; the compose file has the services, profiles and
dependencies it promises and takes secrets only from its env file; Kubernetes manifests validate
against the Kubernetes JSON schema (kubernetes-validate ships it) and read secrets only through
secretKeyRef; prefect.yaml validates with Prefect's own model; job specs load."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from foldem import PROJECT_ROOT
from foldem.spec.job import load_job

INFRA = PROJECT_ROOT / "infra"
COMPOSE = INFRA / "compose.yaml"
K8S = INFRA / "k8s"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
KUBERNETES_VERSION = "1.30.0"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|DATABASE_URL|CONNECTION_URL", re.I)
WORK_POOL = "foldem"


def _docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(_docs(COMPOSE)[0])


@pytest.mark.parametrize("path", sorted([*INFRA.rglob("*.yaml"), PROJECT_ROOT / "prefect.yaml"]),
                         ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_yaml_parses(path: Path) -> None:
    assert _docs(path), f"{path} is empty"


# ------------------------------------------------------------------------------------ compose

def test_compose_services_and_profiles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "prefect-server", "migrate", "register", "worker",
                             "vllm"}
    assert services["vllm"]["profiles"] == ["gpu"]
    assert [n for n, s in services.items() if "profiles" in s] == ["vllm"]  # the rest: always
    gpu = services["vllm"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    assert "--with-healthcheck" in services["worker"]["command"]
    assert services["worker"]["command"][3:5] == ["--pool", WORK_POOL]


def test_compose_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dep, cond in service.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} needs a healthcheck for {name}"
            if "profiles" in services[dep] and "profiles" not in service:
                assert cond.get("required") is False, f"{name} must not require {dep}"
    worker = services["worker"]["depends_on"]
    assert worker["migrate"]["condition"] == "service_completed_successfully"
    assert worker["register"]["condition"] == "service_completed_successfully"
    assert services["prefect-server"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    declared = set(compose.get("volumes", {}))
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith("."):
                assert source in declared, f"volume {source} not declared"
            else:
                assert (INFRA / source).resolve().exists() or source == "../out", source


def test_compose_builds_from_the_dockerfile(compose: dict[str, Any]) -> None:
    for name in ("worker", "migrate", "register"):
        build = compose["services"][name]["build"]
        assert (INFRA / build["context"]).resolve() == PROJECT_ROOT
        assert (PROJECT_ROOT / build["dockerfile"]) == INFRA / "Dockerfile"


def test_compose_takes_secrets_only_from_its_env_file(compose: dict[str, Any]) -> None:
    example = (INFRA / "secrets.env.example").read_text()
    example_names = {line.split("=", 1)[0] for line in example.splitlines()
                     if line and not line.startswith("#")}
    assert {"POSTGRES_PASSWORD", "DATABASE_URL", "PREFECT_API_DATABASE_CONNECTION_URL",
            "VLLM_API_KEY", "OPENAI_API_KEY"} <= example_names
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            assert not SECRET_NAME.search(key), f"{name}: {key} written in compose.yaml"
            assert not re.search(r"://[^/\s:@]+:[^@\s]+@", str(value)), f"{name}: {key}"
    users = [n for n, s in compose["services"].items() if s.get("env_file")]
    assert set(users) >= {"postgres", "prefect-server", "migrate", "worker", "vllm"}
    for name in users:
        assert compose["services"][name]["env_file"] == ["secrets.env"]
    # A lone "$" would be interpolated from the host's environment when compose reads the file.
    lines = [ln for ln in COMPOSE.read_text().splitlines() if not ln.lstrip().startswith("#")]
    assert not re.search(r"(?<!\$)\$(?!\$)", "\n".join(lines))


def test_dockerfile_installs_the_locked_repo() -> None:
    text = (INFRA / "Dockerfile").read_text()
    assert "pip install -c constraints.txt -e ." in text
    assert re.search(r"^USER foldem$", text, re.M)
    for source in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for item in source.split():
            assert (PROJECT_ROOT / item).exists(), f"COPY source {item} is missing"


# --------------------------------------------------------------------------------- Kubernetes

@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_against_the_kubernetes_schema(path: Path) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for doc in _docs(path):
        assert {"apiVersion", "kind", "metadata"} <= set(doc)
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_can_fail() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    doc = _docs(K8S / "worker-deployment.yaml")[0]
    doc["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def _containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def test_worker_reads_secrets_by_secret_key_ref() -> None:
    deployment = _docs(K8S / "worker-deployment.yaml")[0]
    secret = _docs(K8S / "secret.example.yaml")[0]
    config_maps = {d["metadata"]["name"] for d in _docs(K8S / "configmap.yaml")}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    refs = set()
    for container in _containers(pod):
        for env in container.get("env", []):
            if SECRET_NAME.search(env["name"]):
                assert "value" not in env, f"{env['name']} is a literal"
                ref = env["valueFrom"]["secretKeyRef"]
                assert ref["name"] == secret["metadata"]["name"]
                refs.add(ref["key"])
        for source in container.get("envFrom", []):
            assert "secretRef" not in source  # key by key, so a missing key is named
            assert source["configMapRef"]["name"] in config_maps
    assert refs == set(secret["stringData"])
    for data in _docs(K8S / "configmap.yaml"):
        assert not any(SECRET_NAME.search(k) for k in data["data"])
    worker = pod["containers"][0]["command"]
    assert worker[worker.index("--pool") + 1] == WORK_POOL


@pytest.mark.integration  # runs kubectl
def test_kustomization_lists_existing_files_and_renders() -> None:
    kustomization = _docs(K8S / "kustomization.yaml")[0]
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource
    assert "secret.example.yaml" not in kustomization["resources"]  # never apply the example
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: the kustomize render was not run")
    rendered = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True,
                              timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(rendered.stdout)]
    assert sorted(kinds) == ["ConfigMap", "Deployment", "Job", "Namespace"]


def test_helm_values_for_the_prefect_worker_chart() -> None:
    values = _docs(INFRA / "helm" / "prefect-worker-values.yaml")[0]["worker"]
    assert values["apiConfig"] in {"cloud", "selfManagedCloud", "selfHostedServer"}
    assert values["selfHostedServerApiConfig"]["apiUrl"].endswith("/api")
    assert (values["config"]["workPool"], values["config"]["type"]) == (WORK_POOL, "process")
    assert values["extraEnvVarsSecrets"] == ["foldem-secrets"]
    assert values["podSecurityContext"]["runAsUser"] == 1001
    mounts = {m["name"] for m in values["extraVolumeMounts"]}
    assert mounts == {v["name"] for v in values["extraVolumes"]}


# ------------------------------------------------------------------------- Prefect and jobs

@pytest.mark.integration  # runs file(1)
def test_prefect_yaml_validates_and_points_at_real_things() -> None:
    raw = _docs(PROJECT_ROOT / "prefect.yaml")[0]
    try:
        from prefect.cli.deploy._models import PrefectYamlModel
    except ImportError:  # a private module: fall back to the shape
        assert isinstance(raw["deployments"], list)
    else:
        PrefectYamlModel.model_validate(raw)
    for deployment in raw["deployments"]:
        file, _, func = deployment["entrypoint"].partition(":")
        assert f"def {func}(" in (PROJECT_ROOT / file).read_text()
        assert deployment["work_pool"]["name"] == WORK_POOL
        job = deployment.get("parameters", {}).get("job_path")
        if job:
            load_job(PROJECT_ROOT / job)


@pytest.mark.parametrize("path", sorted((INFRA / "jobs").glob("*.yaml")), ids=lambda p: p.name)
def test_job_specs_in_infra_load(path: Path) -> None:
    job = load_job(path)
    for endpoint in job.endpoints:
        assert endpoint.api_key_env is None or endpoint.api_key_env in (
            INFRA / "secrets.env.example").read_text()


@pytest.mark.parametrize("script", ["replay-endpoint.sh"])
@pytest.mark.integration  # runs bash -n
def test_shell_scripts_parse(script: str) -> None:
    result = subprocess.run(["bash", "-n", str(INFRA / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
