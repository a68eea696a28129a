"""`scm-ray cluster check`: catch a broken or unsafe cluster file before it costs a cluster.

Three kinds of file live under cluster/ and each gets the check that fits it:
- Ray cluster launcher YAMLs (`ray up`): Ray's own autoscaler schema (ray/autoscaler/ray-schema.json),
  then Ray's own preparation and validation (defaults merged, node types checked: what `ray up`
  does before it launches anything), then the parts scm-ray needs on top: scm-ray and FFCV's
  system packages installed on every node, a storage path every node can reach, a head that takes
  no GPU work, and no Ray port (dashboard/job server, client, GCS) open to the internet.
- Kubernetes manifests (KubeRay RayCluster and RayJob, the shared PersistentVolumeClaim): a
  structural check of the same concerns, since the CRD schema lives in the Kubernetes cluster.
- Ray runtime-env files (`ray job submit --runtime-env`): known fields, and excludes that keep the
  virtualenv and datasets out of the upload without dropping package code.

Every problem names the file and the field. The checks read files only: nothing is launched.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from scm_ray.storage import is_uri

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
APT_PACKAGES = ("pkg-config", "libturbojpeg0-dev", "libopencv-dev")
# Default port -> what listens there. `ray start` flags can move them; see _ray_ports.
DEFAULT_PORTS = {"port": 6379, "dashboard-port": 8265, "ray-client-server-port": 10001}
PORT_NAMES = {"port": "GCS", "dashboard-port": "dashboard/job server", "ray-client-server-port": "Ray client server"}
WORLD_CIDRS = frozenset({"0.0.0.0/0", "::/0"})
# Where scm-ray's own settings live: the launcher's free-form `metadata`, KubeRay annotations.
METADATA_KEY = "scm_ray"
OPT_OUT_KEY = "allow_public_ports"
K8S_STORAGE_ANNOTATION = "scm-ray/storage-path"
K8S_OPT_OUT_ANNOTATION = "scm-ray/allow-public-ports"
KUBERAY_API = "ray.io/v1"
# Paths a submitted working dir must keep, and bulky ones it should leave out (repo-relative).
MUST_UPLOAD = ("scm_ray/__init__.py", "scm_ray/data/__init__.py", "jobs/train.py", "jobs/configs/train_synthetic.yaml")
MUST_EXCLUDE = (".venv/bin/python", "data/synthetic/train.beton", "runs/run-0/metrics.parquet")


@dataclass(frozen=True)
class Problem:
    """One failed check: the dotted field it concerns and what to do about it."""

    field: str
    message: str


@dataclass
class Report:
    """The outcome for one file: what it was read as, and its problems (empty = passes)."""

    path: Path
    kind: str
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        """Human-readable result; each problem line starts with the file name."""
        if self.ok:
            return [f"ok    {self.path} ({self.kind})"]
        head = f"FAIL  {self.path} ({self.kind}): {len(self.problems)} problem(s)"
        return [head] + [f"  {self.path}: {p.field or '(file)'}: {p.message}" for p in self.problems]


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------


def expand(paths: list[str]) -> list[Path]:
    """Files as given; a directory stands for every YAML below it (`scm-ray cluster check cluster/`)."""
    out: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
        else:
            out.append(path)
    return out


def check_file(path: str | Path) -> Report:
    """Read `path`, decide what kind of cluster file it is, and run that kind's checks."""
    path = Path(path)
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except FileNotFoundError:
        return Report(path, "missing", [Problem("", "file not found")])
    except OSError as exc:
        return Report(path, "unreadable", [Problem("", f"cannot read: {exc}")])
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return Report(path, "unreadable", [Problem("", f"invalid YAML: {where}{getattr(exc, 'problem', None) or exc}")])
    if not docs or not all(isinstance(d, dict) for d in docs):
        return Report(path, "unknown", [Problem("", "expected one or more YAML mappings")])
    if any("apiVersion" in d or "kind" in d for d in docs):
        return _check_kubernetes_docs(path, docs)
    if len(docs) > 1:
        return Report(path, "unknown", [Problem("", "several YAML documents but none is a KubeRay manifest")])
    (doc,) = docs
    if "provider" in doc or "cluster_name" in doc:
        provider = doc.get("provider")
        kind = f"Ray cluster launcher, provider {provider.get('type', '?') if isinstance(provider, dict) else '?'}"
        return Report(path, kind, check_launcher(doc))
    if "runtime_env" in path.name or set(doc) <= _runtime_env_fields():
        return Report(path, "Ray runtime env", check_runtime_env(doc))
    return Report(
        path,
        "unknown",
        [Problem("", "not a cluster launcher config (cluster_name, provider), a KubeRay manifest "
                     f"(apiVersion {KUBERAY_API}) or a runtime env")],
    )


# ----------------------------------------------------------------------------------------------
# Ray cluster launcher YAMLs
# ----------------------------------------------------------------------------------------------


def check_launcher(config: dict) -> list[Problem]:
    """Ray's schema and validation first; the scm-ray checks only on a config Ray accepts, since
    they read the merged defaults (e.g. Ray's default head start command binds 0.0.0.0)."""
    problems = _schema_problems(config)
    if problems:
        return problems
    prepared, problems = _ray_prepare_and_validate(config)
    if prepared is None:
        return problems
    scm = config.get("metadata", {}).get(METADATA_KEY, {})
    if not isinstance(scm, dict):
        return [Problem(f"metadata.{METADATA_KEY}", "must be a mapping (storage_path, ...)")]
    opt_out = scm.get(OPT_OUT_KEY) is True
    return (
        _storage_problems(scm)
        + _install_problems(prepared)
        + _head_gpu_problems(prepared)
        + _dashboard_problems(prepared, opt_out)
        + _security_group_problems(prepared, opt_out)
    )


def _dotted(parts: Any) -> str:
    """jsonschema's path deque -> `a.b[0].c`."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _schema_problems(config: dict) -> list[Problem]:
    """Every violation of the schema Ray ships (not just the first, as ray.autoscaler reports)."""
    import jsonschema
    import ray.autoscaler

    schema_path = Path(ray.autoscaler.__file__).with_name("ray-schema.json")
    schema = json.loads(schema_path.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    return [_schema_problem(e) for e in errors]


def _schema_problem(error: Any) -> Problem:
    """Name the missing or unexpected field itself, not its parent mapping."""
    path = list(error.absolute_path)
    if error.validator == "required":
        name = re.match(r"'(.+?)' is a required property", error.message)
        if name:
            return Problem(_dotted(path + [name.group(1)]), "missing (required by Ray's autoscaler schema)")
    if error.validator == "additionalProperties":
        name = re.search(r"\('(.+?)'", error.message)
        if name:
            return Problem(_dotted(path + [name.group(1)]), "unknown field (Ray's autoscaler schema has no such key)")
    return Problem(_dotted(path), f"{error.message} (Ray's autoscaler schema)")


def _ray_prepare_and_validate(config: dict) -> tuple[dict | None, list[Problem]]:
    """Run what `ray up` runs before launching (prepare_config, then validate_config), capturing
    Ray's console output so that the failure reads as one clear line."""
    from scm_ray.cluster.ray_private import prepare_config, validate_config

    captured = io.StringIO()
    ray_logger = logging.getLogger("ray.autoscaler")
    level = ray_logger.level
    ray_logger.setLevel(logging.WARNING)  # its INFO lines describe defaults, not problems
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            prepared = prepare_config(config)
            validate_config(prepared)
    except Exception as exc:  # Ray raises ValueError, RuntimeError, click exceptions, KeyError...
        message = str(getattr(exc, "message", "") or exc).strip()
        message = message.splitlines()[0] if message else type(exc).__name__
        return None, [Problem(_named_field(message), f"rejected by Ray's cluster config validation: {message}")]
    finally:
        ray_logger.setLevel(level)
    return prepared, []


def _named_field(message: str) -> str:
    """Ray's messages quote the field in backticks (`head_node_type` ...); use it as the field."""
    name = re.search(r"`([\w.]+)`", message)
    if not name:
        return ""
    return f"provider.{name.group(1)}" if name.group(1) in ("head_ip", "worker_ips", "coordinator_address") else name.group(1)


def _storage_problems(scm: dict) -> list[Problem]:
    """Multi-node Ray Train needs a storage_path every node reaches: a URI or a shared mount."""
    key = f"metadata.{METADATA_KEY}.storage_path"
    value = scm.get("storage_path")
    if not value or not isinstance(value, str):
        return [Problem(key, "missing: name where checkpoints and metrics go, reachable from every "
                             "node (s3://bucket/runs, gs://..., or a shared mount like /mnt/shared/runs)")]
    if is_uri(value) or value.startswith("/"):
        return []
    return [Problem(key, f"{value!r} is relative, so each node would write its own copy: use a URI "
                         "(s3://...) or an absolute path on a shared filesystem")]


def _commands(config: dict, *keys: str) -> list[str]:
    out: list[str] = []
    for key in keys:
        out.extend(str(c) for c in config.get(key) or [])
    return out


def _node_roles(prepared: dict) -> dict[str, tuple[str, list[str]]]:
    """role label -> (docker image, commands run on that node), after Ray merged setup_commands
    into head_setup_commands / worker_setup_commands and per-type overrides."""
    docker = prepared.get("docker") or {}
    head_type = prepared.get("head_node_type")
    roles = {
        "head": (
            docker.get("head_image") or docker.get("image", ""),
            _commands(prepared, "initialization_commands", "head_setup_commands"),
        )
    }
    for name, node_type in (prepared.get("available_node_types") or {}).items():
        if name == head_type:
            continue
        image = (node_type.get("docker") or {}).get("worker_image") or docker.get("worker_image") or docker.get("image", "")
        commands = _commands(node_type, "initialization_commands") or _commands(prepared, "initialization_commands")
        commands += _commands(node_type, "worker_setup_commands") or _commands(prepared, "worker_setup_commands")
        roles[f"worker type {name}"] = (image, commands)
    return roles


def _installs_scm_ray(commands: list[str]) -> bool:
    return any(re.search(r"pip3?\s+install\b.*scm[-_]ray", c) for c in commands)


def _missing_apt_packages(commands: list[str]) -> list[str]:
    apt = [c for c in commands if re.search(r"\bapt(-get)?\b.*\binstall\b", c)]
    return [p for p in APT_PACKAGES if not any(re.search(rf"(?<![\w.-]){re.escape(p)}(?![\w.-])", c) for c in apt)]


def _install_problems(prepared: dict) -> list[Problem]:
    """Each node needs scm-ray and the system libraries FFCV links against: either a prebuilt
    image (its name says scm-ray, e.g. built from cluster/Dockerfile) or setup commands."""
    problems = []
    for role, (image, commands) in _node_roles(prepared).items():
        if "scm-ray" in image or "scm_ray" in image:
            continue
        where = f"setup_commands ({role})"
        if not _installs_scm_ray(commands):
            problems.append(Problem(where, "no command installs scm-ray (e.g. `pip install -e ~/scm-ray`); "
                                           "or use an image built from cluster/Dockerfile (name containing scm-ray)"))
        missing = _missing_apt_packages(commands)
        if missing:
            problems.append(Problem(where, f"apt packages FFCV needs are not installed: {' '.join(missing)} "
                                           f"(apt-get install -y {' '.join(APT_PACKAGES)})"))
    return problems


def _flag_values(commands: list[str], flag: str) -> list[str]:
    """Values given to `--flag=value` or `--flag value` anywhere in the commands."""
    values = []
    for command in commands:
        try:
            tokens = shlex.split(command.replace(";", " ; "))
        except ValueError:
            tokens = command.split()
        for i, token in enumerate(tokens):
            if token.startswith(f"--{flag}="):
                values.append(token.split("=", 1)[1])
            elif token == f"--{flag}" and i + 1 < len(tokens):
                values.append(tokens[i + 1])
    return values


def _head_gpu_problems(prepared: dict) -> list[Problem]:
    """GPU work belongs on workers: the head runs the GCS, dashboard and job drivers."""
    starts = _commands(prepared, "head_start_ray_commands")
    if "0" in _flag_values(starts, "num-gpus"):
        return []
    head_type = prepared.get("head_node_type", "")
    resources = (prepared.get("available_node_types") or {}).get(head_type, {}).get("resources") or {}
    if resources.get("GPU") == 0 and prepared["provider"]["type"] != "local":
        return []
    if prepared["provider"]["type"] == "local":
        return [Problem("head_start_ray_commands", "the head may take GPU work: add --num-gpus=0 to its `ray start --head`")]
    return [Problem(f"available_node_types.{head_type}.resources",
                    "the head may take GPU work: set `GPU: 0` (or --num-gpus=0 in head_start_ray_commands)")]


def _dashboard_problems(prepared: dict, opt_out: bool) -> list[Problem]:
    """The job server runs any entrypoint it is sent: keep it on loopback and tunnel to it."""
    hosts = _flag_values(_commands(prepared, "head_start_ray_commands"), "dashboard-host")
    exposed = [h for h in hosts if h not in LOOPBACK_HOSTS]
    if not exposed or opt_out:
        return []
    source = "head_start_ray_commands" if "head_start_ray_commands" in prepared else "head_start_ray_commands (Ray default)"
    return [Problem(source, f"--dashboard-host={exposed[0]} exposes the dashboard and job server (anyone reaching it "
                            "runs code on the cluster): use --dashboard-host=127.0.0.1 and `ray dashboard FILE` "
                            f"(SSH tunnel), or opt out with metadata.{METADATA_KEY}.{OPT_OUT_KEY}: true")]


def _ray_ports(prepared: dict) -> dict[int, str]:
    """Port -> name for the ports that must not face the internet, honouring moved ports."""
    starts = _commands(prepared, "head_start_ray_commands")
    ports = {}
    for flag, default in DEFAULT_PORTS.items():
        values = [v for v in _flag_values(starts, flag) if v.isdigit()]
        ports[int(values[-1]) if values else default] = PORT_NAMES[flag]
    return ports


def _rule_ports(rule: dict) -> range | None:
    """The TCP port range an AWS IpPermissions rule opens (None: not TCP)."""
    protocol = str(rule.get("IpProtocol", "")).lower()
    if protocol in ("-1", "all"):
        return range(0, 65536)
    if protocol not in ("tcp", "6"):
        return None
    low = int(rule.get("FromPort", 0))
    high = int(rule.get("ToPort", low))
    return range(0, 65536) if low == -1 else range(low, high + 1)


def _open_to_world(rule: dict) -> bool:
    cidrs = [r.get("CidrIp") for r in rule.get("IpRanges") or []]
    cidrs += [r.get("CidrIpv6") for r in rule.get("Ipv6Ranges") or []]
    return any(c in WORLD_CIDRS for c in cidrs)


def _security_group_problems(prepared: dict, opt_out: bool) -> list[Problem]:
    """No inbound rule may open the GCS, client or dashboard port to 0.0.0.0/0 or ::/0."""
    rules = ((prepared.get("provider") or {}).get("security_group") or {}).get("IpPermissions") or []
    if opt_out:
        return []
    problems = []
    ports = _ray_ports(prepared)
    for i, rule in enumerate(rules):
        opened = _rule_ports(rule) if isinstance(rule, dict) else None
        if opened is None or not _open_to_world(rule):
            continue
        hit = [f"{name} ({port})" for port, name in sorted(ports.items()) if port in opened]
        if hit:
            problems.append(Problem(
                f"provider.security_group.IpPermissions[{i}]",
                f"opens {', '.join(hit)} to the internet: remove the rule and reach the cluster with "
                f"`ray dashboard FILE` (SSH tunnel); nodes already reach each other through Ray's group"))
    return problems


# ----------------------------------------------------------------------------------------------
# KubeRay manifests
# ----------------------------------------------------------------------------------------------


def _check_kubernetes_docs(path: Path, docs: list[dict]) -> Report:
    kinds = ", ".join(str(d.get("kind", "?")) for d in docs)
    problems = []
    for index, doc in enumerate(docs):
        prefix = f"document {index + 1} " if len(docs) > 1 else ""
        for p in check_kuberay(doc):
            problems.append(Problem(f"{prefix}{p.field}".strip(), p.message))
    return Report(path, f"Kubernetes {kinds}", problems)


def _get(doc: Any, dotted: str) -> Any:
    node = doc
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def check_kuberay(doc: dict) -> list[Problem]:
    """apiVersion/kind, then the cluster spec (inline in a RayJob), then RayJob specifics."""
    kind = doc.get("kind")
    if kind == "PersistentVolumeClaim":
        return _pvc_problems(doc)
    if doc.get("apiVersion") != KUBERAY_API:
        return [Problem("apiVersion", f"must be {KUBERAY_API} (KubeRay >= 1.0), got {doc.get('apiVersion')!r}")]
    if kind not in ("RayCluster", "RayJob"):
        return [Problem("kind", f"must be RayCluster, RayJob or PersistentVolumeClaim, got {kind!r}")]
    problems = []
    if not _get(doc, "metadata.name"):
        problems.append(Problem("metadata.name", "missing"))
    annotations = _get(doc, "metadata.annotations") or {}
    opt_out = str(annotations.get(K8S_OPT_OUT_ANNOTATION, "")).lower() == "true"
    if kind == "RayCluster":
        spec, where = doc.get("spec"), "spec"
    else:
        spec, where = _get(doc, "spec.rayClusterSpec"), "spec.rayClusterSpec"
        problems += _rayjob_problems(doc)
    if not isinstance(spec, dict):
        return problems + [Problem(where, "missing: the cluster to run on (headGroupSpec, workerGroupSpecs)")]
    if not isinstance(spec.get("headGroupSpec"), dict):
        return problems + [Problem(f"{where}.headGroupSpec", "missing: the head pod's rayStartParams and template")]
    problems += _cluster_spec_problems(spec, where, opt_out)
    problems += _k8s_storage_problems(spec, where, annotations)
    return problems


def _pvc_problems(doc: dict) -> list[Problem]:
    """The shared volume must be mountable by many pods on many nodes at once."""
    if doc.get("apiVersion") != "v1":
        return [Problem("apiVersion", f"a PersistentVolumeClaim is v1, got {doc.get('apiVersion')!r}")]
    modes = _get(doc, "spec.accessModes") or []
    if "ReadWriteMany" not in modes:
        return [Problem("spec.accessModes", f"needs ReadWriteMany for storage shared by every Ray pod, got {modes}")]
    return []


def _first_container(group: dict) -> dict:
    containers = _get(group, "template.spec.containers") or []
    return containers[0] if containers and isinstance(containers[0], dict) else {}


def _image_problem(container: dict, where: str) -> list[Problem]:
    image = str(container.get("image", ""))
    if not image:
        return [Problem(f"{where}.template.spec.containers[0].image", "missing")]
    if image.startswith(("rayproject/ray", "docker.io/rayproject/ray")):
        return [Problem(f"{where}.template.spec.containers[0].image",
                        f"{image} has no scm-ray and no FFCV system packages: build cluster/Dockerfile")]
    return []


def _cluster_spec_problems(spec: dict, where: str, opt_out: bool) -> list[Problem]:
    head = spec["headGroupSpec"]
    hw = f"{where}.headGroupSpec"
    params = head.get("rayStartParams") or {}
    problems = _image_problem(_first_container(head), hw)
    host = str(params.get("dashboard-host", ""))
    if host not in LOOPBACK_HOSTS and not opt_out:
        said = f"is {host!r}" if host else "is unset, and KubeRay then binds 0.0.0.0"
        problems.append(Problem(f"{hw}.rayStartParams.dashboard-host",
                                f"{said}: set \"127.0.0.1\" and use `kubectl port-forward` (or annotate "
                                f"{K8S_OPT_OUT_ANNOTATION}: \"true\")"))
    if str(params.get("num-gpus", "")) != "0":
        problems.append(Problem(f"{hw}.rayStartParams.num-gpus", "must be \"0\": GPU work belongs on worker pods"))
    service = head.get("serviceType", "ClusterIP")
    if service in ("LoadBalancer", "NodePort") and not opt_out:
        problems.append(Problem(f"{hw}.serviceType", f"{service} exposes the GCS, client and dashboard ports "
                                                     "outside Kubernetes: use ClusterIP (the default)"))
    workers = spec.get("workerGroupSpecs")
    if not isinstance(workers, list) or not workers:
        problems.append(Problem(f"{where}.workerGroupSpecs", "missing: at least one worker group runs the training"))
        return problems
    for i, group in enumerate(workers):
        gw = f"{where}.workerGroupSpecs[{i}]"
        if not isinstance(group, dict) or not group.get("groupName"):
            problems.append(Problem(f"{gw}.groupName", "missing"))
            continue
        problems += _image_problem(_first_container(group), gw)
    return problems


def _mount_paths(group: dict) -> list[str]:
    return [str(m.get("mountPath", "")) for m in _first_container(group).get("volumeMounts") or []]


def _k8s_storage_problems(spec: dict, where: str, annotations: dict) -> list[Problem]:
    """The storage path annotation, and for a filesystem path, a volume under it in every pod."""
    key = f"metadata.annotations.{K8S_STORAGE_ANNOTATION}"
    value = annotations.get(K8S_STORAGE_ANNOTATION)
    if not value:
        return [Problem(key, "missing: where checkpoints go, reachable from every pod (s3://... or a "
                             "ReadWriteMany volume's path)")]
    if is_uri(value):
        return []
    if not value.startswith("/"):
        return [Problem(key, f"{value!r} is relative: use a URI or a path on a shared volume")]
    groups = [("headGroupSpec", spec.get("headGroupSpec") or {})]
    groups += [(f"workerGroupSpecs[{i}]", g) for i, g in enumerate(spec.get("workerGroupSpecs") or []) if isinstance(g, dict)]
    problems = []
    for label, group in groups:
        if not any(_under(value, m) for m in _mount_paths(group) if m):
            problems.append(Problem(f"{where}.{label}.template.spec.containers[0].volumeMounts",
                                    f"no volume is mounted at or above the storage path {value}"))
    return problems


def _under(path: str, mount: str) -> bool:
    p, m = PurePosixPath(path), PurePosixPath(mount)
    return p == m or m in p.parents


def _rayjob_problems(doc: dict) -> list[Problem]:
    """A RayJob needs an entrypoint; with the dashboard on loopback only SidecarMode can submit,
    because the other modes reach the job server through the head's Service."""
    spec = doc.get("spec") or {}
    problems = []
    if not str(spec.get("entrypoint", "")).strip():
        problems.append(Problem("spec.entrypoint", "missing: e.g. python jobs/train.py --config ..."))
    runtime_env = spec.get("runtimeEnvYAML")
    if runtime_env is not None:
        try:
            if not isinstance(yaml.safe_load(runtime_env), dict):
                raise yaml.YAMLError("not a mapping")
        except yaml.YAMLError as exc:
            problems.append(Problem("spec.runtimeEnvYAML", f"must be a YAML mapping in a string: {exc}"))
    host = str(_get(spec, "rayClusterSpec.headGroupSpec.rayStartParams.dashboard-host") or "")
    mode = spec.get("submissionMode", "K8sJobMode")
    if host in LOOPBACK_HOSTS and mode != "SidecarMode":
        problems.append(Problem("spec.submissionMode", f"{mode} submits through the head Service, which cannot reach "
                                                       "a dashboard bound to loopback: use SidecarMode (KubeRay >= 1.5)"))
    if mode == "SidecarMode":
        policy = _get(spec, "rayClusterSpec.headGroupSpec.template.spec.restartPolicy")
        if policy != "Never":
            problems.append(Problem("spec.rayClusterSpec.headGroupSpec.template.spec.restartPolicy",
                                    f"SidecarMode needs Never, got {policy!r}"))
        if spec.get("clusterSelector"):
            problems.append(Problem("spec.clusterSelector", "SidecarMode cannot use an existing cluster"))
    return problems


# ----------------------------------------------------------------------------------------------
# Runtime envs
# ----------------------------------------------------------------------------------------------


def _runtime_env_fields() -> set[str]:
    from ray.runtime_env import RuntimeEnv

    return {f for f in RuntimeEnv.known_fields if not f.startswith("_")}


def check_runtime_env(data: dict) -> list[Problem]:
    """Known fields with valid types (Ray's RuntimeEnv), and excludes that drop the bulky folders
    but keep the package: an unanchored `data/` would also drop scm_ray/data/."""
    from ray.runtime_env import RuntimeEnv

    unknown = sorted(set(data) - _runtime_env_fields())
    if unknown:
        return [Problem(unknown[0], f"not a runtime env field; known: {', '.join(sorted(_runtime_env_fields()))}")]
    try:
        RuntimeEnv(**data)
    except Exception as exc:  # Ray raises TypeError/ValueError naming the field
        name = re.search(r"runtime_env\['(\w+)'\]", str(exc))
        return [Problem(name.group(1) if name else "", f"rejected by Ray's RuntimeEnv: {exc}")]
    excludes = data.get("excludes") or []
    if not isinstance(excludes, list) or not all(isinstance(e, str) for e in excludes):
        return [Problem("excludes", "must be a list of gitignore-style patterns")]
    excluded = _exclude_matcher(excludes)
    problems = []
    for rel in MUST_UPLOAD:
        if excluded(rel):
            problems.append(Problem("excludes", f"drops {rel}, which the job needs: anchor the pattern with a "
                                                "leading / (e.g. /data/ rather than data/)"))
    for rel in MUST_EXCLUDE:
        if not excluded(rel):
            top = rel.split("/", 1)[0]
            problems.append(Problem("excludes", f"uploads {top}/ with every job: add /{top}/"))
    return problems


def _exclude_matcher(excludes: list[str]):
    """The matcher Ray applies to a working dir's files, on repo-relative paths."""
    from scm_ray.cluster.ray_private import get_excludes

    base = Path(os.sep, "repo")
    match = get_excludes(base, excludes)
    return lambda rel: bool(match(base / rel))
