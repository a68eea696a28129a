"""`scm-ray cluster check`: every shipped cluster file passes; broken or unsafe variants fail with
a message that names the file and the field."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scm_ray.cluster.check import check_file

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
SHIPPED = sorted(p for p in CLUSTER.rglob("*") if p.suffix in (".yaml", ".yml"))


def cli(*files: Path) -> subprocess.CompletedProcess:
    """Run the real command, as a user would."""
    cmd = [sys.executable, "-m", "scm_ray.cli", "cluster", "check", *map(str, files)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def write(tmp_path: Path, name: str, data: dict) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def problems_of(path: Path) -> list[tuple[str, str]]:
    report = check_file(path)
    assert not report.ok, f"{path} passed but should fail"
    return [(p.field, p.message) for p in report.problems]


def test_cluster_folder_has_every_kind_of_file():
    names = {p.relative_to(CLUSTER).as_posix() for p in SHIPPED}
    assert {"aws.yaml", "onprem.yaml", "runtime_env.yaml", "kuberay/raycluster.yaml",
            "kuberay/rayjob-train.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(CLUSTER).as_posix())
def test_shipped_file_passes(path: Path):
    report = check_file(path)
    assert report.ok, "\n".join(report.lines())


def test_cli_passes_all_shipped_files():
    result = cli(CLUSTER)  # a folder stands for every YAML below it
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok    ") == len(SHIPPED)


# ---- cluster launcher YAMLs ------------------------------------------------------------------


def test_missing_provider_fails_through_cli_naming_file_and_field(tmp_path):
    config = load("aws.yaml")
    del config["provider"]
    path = write(tmp_path, "no-provider.yaml", config)
    result = cli(path)
    assert result.returncode == 1
    assert f"{path}: provider: missing" in result.stdout


def test_missing_node_config_is_a_schema_error(tmp_path):
    config = load("aws.yaml")
    del config["available_node_types"]["gpu_g5"]["node_config"]
    fields = dict(problems_of(write(tmp_path, "x.yaml", config)))
    assert "available_node_types.gpu_g5.node_config" in fields
    assert "schema" in fields["available_node_types.gpu_g5.node_config"]


def test_unknown_head_type_is_rejected_by_ray_validation(tmp_path):
    config = load("aws.yaml")
    config["head_node_type"] = "no-such-type"
    (field, message), = problems_of(write(tmp_path, "x.yaml", config))
    assert field == "head_node_type" and "Ray's cluster config validation" in message


def test_onprem_without_head_ip_is_rejected(tmp_path):
    config = load("onprem.yaml")
    del config["provider"]["head_ip"]
    (field, _), = problems_of(write(tmp_path, "x.yaml", config))
    assert field == "provider.head_ip"


def test_missing_scm_ray_parts_are_each_named(tmp_path):
    config = load("aws.yaml")
    del config["metadata"]
    config["setup_commands"] = [c for c in config["setup_commands"] if "apt-get" not in c and "scm-ray" not in c]
    problems = problems_of(write(tmp_path, "x.yaml", config))
    fields = [f for f, _ in problems]
    assert "metadata.scm_ray.storage_path" in fields
    assert "setup_commands (head)" in fields and "setup_commands (worker type gpu_g5)" in fields
    text = " ".join(m for _, m in problems)
    assert "installs scm-ray" in text and "libturbojpeg0-dev" in text


def test_prebuilt_scm_ray_image_replaces_setup_commands(tmp_path):
    config = load("aws.yaml")
    config["docker"]["image"] = "registry.example.com/scm-ray:0.1.0-gpu"
    config["setup_commands"] = []
    assert check_file(write(tmp_path, "x.yaml", config)).ok


def test_relative_storage_path_fails(tmp_path):
    config = load("onprem.yaml")
    config["metadata"]["scm_ray"]["storage_path"] = "runs"
    (field, message), = problems_of(write(tmp_path, "x.yaml", config))
    assert field == "metadata.scm_ray.storage_path" and "relative" in message


def test_head_that_may_take_gpu_work_fails(tmp_path):
    config = load("aws.yaml")
    config["available_node_types"]["head"]["resources"] = {}
    config["head_start_ray_commands"] = [c.replace("--num-gpus=0", "") for c in config["head_start_ray_commands"]]
    (field, message), = problems_of(write(tmp_path, "x.yaml", config))
    assert field == "available_node_types.head.resources" and "GPU: 0" in message

    onprem = load("onprem.yaml")
    onprem["head_start_ray_commands"] = [c.replace("--num-gpus=0", "") for c in onprem["head_start_ray_commands"]]
    (field, _), = problems_of(write(tmp_path, "y.yaml", onprem))
    assert field == "head_start_ray_commands"


@pytest.mark.parametrize("rule, hit", [
    ({"IpProtocol": "tcp", "FromPort": 8265, "ToPort": 8265, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
     "dashboard/job server (8265)"),
    ({"IpProtocol": "tcp", "FromPort": 6000, "ToPort": 7000, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}, "GCS (6379)"),
    ({"IpProtocol": "-1", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}, "Ray client server (10001)"),
])
def test_security_group_rule_open_to_internet_fails(tmp_path, rule, hit):
    config = load("aws.yaml")
    ssh = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    config["provider"]["security_group"] = {"GroupName": "scm-ray", "IpPermissions": [ssh, rule]}
    path = write(tmp_path, "open.yaml", config)
    result = cli(path)
    assert result.returncode == 1
    assert f"{path}: provider.security_group.IpPermissions[1]: opens" in result.stdout
    assert hit in result.stdout and "IpPermissions[0]" not in result.stdout


def test_security_group_rule_for_a_private_range_passes(tmp_path):
    config = load("aws.yaml")
    rule = {"IpProtocol": "tcp", "FromPort": 8265, "ToPort": 8265, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}
    config["provider"]["security_group"] = {"GroupName": "scm-ray", "IpPermissions": [rule]}
    assert check_file(write(tmp_path, "x.yaml", config)).ok


def test_dashboard_bound_to_all_interfaces_fails_unless_opted_out(tmp_path):
    config = load("aws.yaml")
    config["head_start_ray_commands"] = [
        c.replace("--dashboard-host=127.0.0.1", "--dashboard-host 0.0.0.0") for c in config["head_start_ray_commands"]]
    path = write(tmp_path, "public.yaml", config)
    result = cli(path)
    assert result.returncode == 1
    assert f"{path}: head_start_ray_commands: --dashboard-host=0.0.0.0 exposes" in result.stdout

    opted = copy.deepcopy(config)
    opted["metadata"]["scm_ray"]["allow_public_ports"] = True
    assert check_file(write(tmp_path, "opted.yaml", opted)).ok


def test_rays_default_head_command_counts_as_exposed(tmp_path):
    config = load("aws.yaml")
    del config["head_start_ray_commands"]  # Ray's AWS default binds the dashboard to 0.0.0.0
    (field, _), = problems_of(write(tmp_path, "x.yaml", config))
    assert field.startswith("head_start_ray_commands")


# ---- KubeRay ---------------------------------------------------------------------------------


def _head(doc: dict) -> dict:
    spec = doc["spec"].get("rayClusterSpec", doc["spec"])
    return spec["headGroupSpec"]


@pytest.mark.parametrize("name", ["kuberay/raycluster.yaml", "kuberay/rayjob-train.yaml"])
def test_kuberay_dashboard_on_all_interfaces_fails(tmp_path, name):
    doc = load(name)
    _head(doc)["rayStartParams"]["dashboard-host"] = "0.0.0.0"
    path = write(tmp_path, "k.yaml", doc)
    result = cli(path)
    assert result.returncode == 1
    assert "headGroupSpec.rayStartParams.dashboard-host: is '0.0.0.0'" in result.stdout


def test_kuberay_unset_dashboard_host_and_public_service_fail(tmp_path):
    doc = load("kuberay/raycluster.yaml")
    del _head(doc)["rayStartParams"]["dashboard-host"]
    _head(doc)["serviceType"] = "LoadBalancer"
    messages = dict(problems_of(write(tmp_path, "k.yaml", doc)))
    assert "KubeRay then binds 0.0.0.0" in messages["spec.headGroupSpec.rayStartParams.dashboard-host"]
    assert "LoadBalancer" in messages["spec.headGroupSpec.serviceType"]


def test_kuberay_structure_problems(tmp_path):
    doc = load("kuberay/raycluster.yaml")
    del doc["spec"]["headGroupSpec"]
    assert problems_of(write(tmp_path, "a.yaml", doc))[0][0] == "spec.headGroupSpec"

    doc = load("kuberay/raycluster.yaml")
    doc["apiVersion"] = "ray.io/v1alpha1"
    assert problems_of(write(tmp_path, "b.yaml", doc))[0][0] == "apiVersion"

    doc = load("kuberay/raycluster.yaml")
    worker = doc["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    worker["image"] = "rayproject/ray:2.60.0-py311-gpu"
    worker["volumeMounts"] = []
    fields = [f for f, _ in problems_of(write(tmp_path, "c.yaml", doc))]
    assert "spec.workerGroupSpecs[0].template.spec.containers[0].image" in fields
    assert "spec.workerGroupSpecs[0].template.spec.containers[0].volumeMounts" in fields

    doc = load("kuberay/raycluster.yaml")
    del doc["metadata"]["annotations"]
    assert problems_of(write(tmp_path, "d.yaml", doc))[0][0] == "metadata.annotations.scm-ray/storage-path"


def test_rayjob_needs_sidecar_mode_with_a_loopback_dashboard(tmp_path):
    doc = load("kuberay/rayjob-train.yaml")
    doc["spec"]["submissionMode"] = "K8sJobMode"
    del doc["spec"]["entrypoint"]
    fields = [f for f, _ in problems_of(write(tmp_path, "j.yaml", doc))]
    assert fields == ["spec.entrypoint", "spec.submissionMode"]

    doc = load("kuberay/rayjob-train.yaml")
    del _head(doc)["template"]["spec"]["restartPolicy"]
    assert problems_of(write(tmp_path, "k.yaml", doc))[0][0].endswith("template.spec.restartPolicy")


def test_shared_volume_must_be_read_write_many(tmp_path):
    doc = load("kuberay/shared-storage.yaml")
    doc["spec"]["accessModes"] = ["ReadWriteOnce"]
    assert problems_of(write(tmp_path, "pvc.yaml", doc))[0][0] == "spec.accessModes"


# ---- runtime env and odd files ---------------------------------------------------------------


def test_runtime_env_excludes_must_be_anchored(tmp_path):
    env = load("runtime_env.yaml")
    env["excludes"] = ["data/", "/.venv/", "/runs/"]
    path = write(tmp_path, "bad_runtime_env.yaml", env)
    (field, message), = problems_of(path)
    assert field == "excludes" and "scm_ray/data/__init__.py" in message


def test_runtime_env_must_leave_out_bulky_folders_and_type_fields(tmp_path):
    env = {"excludes": ["/.venv/"], "env_vars": {"PYTHONUNBUFFERED": "1"}}
    messages = [m for _, m in problems_of(write(tmp_path, "a_runtime_env.yaml", env))]
    assert any("/data/" in m for m in messages) and any("/runs/" in m for m in messages)

    env = {"excludes": ["/.venv/", "/data/", "/runs/"], "env_vars": {"THREADS": 4}}
    assert problems_of(write(tmp_path, "b_runtime_env.yaml", env))[0][0] == "env_vars"


def test_unreadable_and_unknown_files_fail(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("provider: [aws\n")
    assert "invalid YAML: line" in problems_of(broken)[0][1]
    assert "not a cluster launcher config" in problems_of(write(tmp_path, "other.yaml", {"hello": 1}))[0][1]
    result = cli(tmp_path / "absent.yaml", CLUSTER / "aws.yaml")
    assert result.returncode == 1
    assert "absent.yaml: (file): file not found" in result.stdout and "ok    " in result.stdout


# ---- start_local_head.sh ---------------------------------------------------------------------


def test_local_head_script_binds_loopback_by_default():
    script = CLUSTER / "start_local_head.sh"
    result = subprocess.run([str(script), "--dry-run", "--port", "7000"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "--dashboard-host=127.0.0.1" in result.stdout and "--node-ip-address=127.0.0.1" in result.stdout
    assert "--port=7000" in result.stdout and not result.stderr


def test_local_head_script_warns_when_exposed():
    script = CLUSTER / "start_local_head.sh"
    result = subprocess.run([str(script), "--dry-run", "--expose", "0.0.0.0"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "--dashboard-host=0.0.0.0" in result.stdout and "--node-ip-address" not in result.stdout
    assert "WARNING" in result.stderr
