"""The DL1 kit (training/dl1/): the Dockerfile, the AWS Batch job definitions and the README's commands.

The job definitions are validated against botocore's model of Batch's RegisterJobDefinition request (the same
check the AWS CLI makes before sending), and their commands are parsed by the project's own argument parsers.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from typing import Any

import botocore.session
import pytest
from botocore.validate import ParamValidator
from project_paths import ROOT

from training import evaluate

KIT = ROOT / "training" / "dl1"
BASE_IMAGE = (
    "vault.habana.ai/gaudi-docker/1.14.0/ubuntu22.04/habanalabs/tensorflow-installer-tf-cpu-2.15.0:latest"
)
IMAGE = "${ACCOUNT_ID}.dkr.ecr.${REGION}.amazonaws.com/fakeweb-dl1:latest"
DOCKER_RUN_FLAGS = (
    "--runtime=habana",
    "-e HABANA_VISIBLE_DEVICES=all",
    "--cap-add=sys_nice",
    "--net=host",
    "--ipc=host",
)


def job_definition(name: str) -> dict[str, Any]:
    return dict(json.loads((KIT / name).read_text()))


def substituted(definition: dict[str, Any]) -> list[str]:
    """The container command with every `Ref::name` replaced by the parameter's default, as Batch does."""
    parameters = definition["parameters"]
    return [
        parameters[arg[5:]] if arg.startswith("Ref::") else arg
        for arg in definition["containerProperties"]["command"]
    ]


def readme_command(start: str) -> list[str]:
    """The README's shell command that begins with `start` (continuation lines joined), split like a shell."""
    text = (KIT / "README.md").read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.strip().startswith(start))
    return shlex.split(line)


@pytest.mark.parametrize("name", ["batch-train.json", "batch-eval.json"])
def test_job_definitions_are_valid_batch_requests(name: str) -> None:
    definition = job_definition(name)
    model = botocore.session.get_session().get_service_model("batch")
    report = ParamValidator().validate(definition, model.operation_model("RegisterJobDefinition").input_shape)
    assert not report.has_errors(), report.generate_report()
    container = definition["containerProperties"]
    assert container["image"] == IMAGE
    assert definition["type"] == "container" and definition["platformCapabilities"] == ["EC2"]
    references = {arg[5:] for arg in container["command"] if arg.startswith("Ref::")}
    assert references == set(definition["parameters"]), (
        "every parameter is used and every reference has a default"
    )
    retry = definition["retryStrategy"]["evaluateOnExit"]
    assert {"onStatusReason": "Host EC2*", "action": "RETRY"} in retry


def test_training_job_runs_eight_cards_with_checkpoints_and_resume() -> None:
    definition = job_definition("batch-train.json")
    container = definition["containerProperties"]
    command = container["command"]
    assert command[:4] == ["mpirun", "--allow-run-as-root", "-np", "8"]
    train = command[command.index("python3") :]
    assert train[:3] == ["python3", "-m", "training.train"]
    options = dict(zip(train[3::2], train[4::2], strict=False))
    assert options["--device"] == "hpu" and train[-1] == "--resume"
    for option in ("--checkpoint-dir", "--checkpoint-every", "--store", "--run-name", "--out", "--data"):
        assert option in options
    devices = {device["hostPath"] for device in container["linuxParameters"]["devices"]}
    assert devices == {f"/dev/accel/accel{i}" for i in range(8)} | {
        f"/dev/accel/accel_controlD{i}" for i in range(8)
    }
    assert all(d["hostPath"] == d["containerPath"] for d in container["linuxParameters"]["devices"])
    assert {"name": "memlock", "softLimit": -1, "hardLimit": -1} in container["ulimits"]
    environment = {item["name"]: item["value"] for item in container["environment"]}
    assert environment["HABANA_VISIBLE_DEVICES"] == "all"
    resources = {item["type"]: int(item["value"]) for item in container["resourceRequirements"]}
    assert resources["VCPU"] == 96 and resources["MEMORY"] <= 768 * 1024  # a dl1.24xlarge


def test_training_command_parses_with_fakeweb_train() -> None:
    from training.train import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    known = {option for action in parser._actions for option in action.option_strings}
    if "--resume" not in known:
        pytest.skip(
            "training/train.py does not have the device and checkpoint options yet (integration pending)"
        )
    command = substituted(job_definition("batch-train.json"))
    args = parser.parse_args(command[command.index("training.train") + 1 :])
    assert args.device == "hpu" and args.resume


def test_evaluation_job_is_an_array_job_over_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    definition = job_definition("batch-eval.json")
    command = substituted(definition)
    assert command[:2] == ["fakeweb", "eval"]
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    args = parser.parse_args(command[2:])
    assert args.num_shards == int(definition["parameters"]["num_shards"]) and args.shard_index is None
    assert evaluate.SHARD_PLACEHOLDER in str(args.out)
    monkeypatch.setenv(evaluate.ARRAY_INDEX_ENV, "3")
    assert evaluate._shard_index(args) == 3
    assert "linuxParameters" not in definition["containerProperties"]  # CPU instances, no Gaudi


def test_dockerfile_builds_on_habanas_tensorflow_image_and_installs_the_package() -> None:
    text = (KIT / "Dockerfile").read_text().replace("\\\n", " ")
    instructions = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert instructions[0] == f"FROM {BASE_IMAGE}"
    assert "COPY . ." in instructions
    install = next(line for line in instructions if "pip install" in line)
    assert 'python3 -m pip install ".[train]"' in install and "import habana_frameworks.tensorflow" in install
    assert "--no-deps" in install and "build_model('mobilenet_v2_imagenet'" in install
    assert "tf.__version__ == '2.15.0'" in install


def test_readme_runs_the_batch_training_job_under_docker() -> None:
    run = readme_command("docker run")
    docker = " ".join(run)
    for flag in DOCKER_RUN_FLAGS:
        assert flag in docker
    launched = run[run.index("fakeweb-dl1:latest") + 1 :]
    batch = job_definition("batch-train.json")["containerProperties"]["command"]
    assert (
        launched[: launched.index("python3")] == batch[: batch.index("python3")]
    )  # the same mpirun -np 8 line

    def options(command: list[str]) -> list[str]:
        return [arg for arg in command[command.index("python3") :] if arg.startswith("--")]

    assert options(launched) == options(batch), "the README and Batch run the same job"


def test_readme_submits_as_many_array_children_as_shards_and_fills_every_placeholder() -> None:
    submit = " ".join(readme_command("aws batch submit-job --job-name fakeweb-eval"))
    size = re.search(r"--array-properties size=(\d+)", submit)
    shards = re.search(r"num_shards=(\d+)", submit)
    assert size and shards and size.group(1) == shards.group(1)
    exported = set(re.findall(r"(\w+)=", " ".join(readme_command("export ACCOUNT_ID"))[len("export") :]))
    substituted = set(re.findall(r"\$\{(\w+)\}", " ".join(readme_command("envsubst"))))
    for name in ("batch-train.json", "batch-eval.json"):
        placeholders = set(re.findall(r"\$\{(\w+)\}", (KIT / name).read_text()))
        assert placeholders and placeholders <= substituted <= exported
