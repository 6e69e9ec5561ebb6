"""`fakeweb run` end to end on a synthetic clip, and bad input to every command: one line, exit 2, no traceback.

Commands run in-process through `stream.cli.main` (an unexpected exception would fail the test with its
traceback); two run in a subprocess to check the real exit code and stderr.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from clips import ClipTruth
from project_paths import ROOT
from tiny_model import with_threshold

from models.devices import gpu_available
from models.geometry import Box
from models.manifest import MANIFEST_NAME
from stream.cli import main
from stream.outputs.sinks import FaceRecord
from stream.pipeline.scoring import Verdict

ERROR_LINE = re.compile(r"fakeweb: error: [^\n]+\n")


@pytest.fixture(autouse=True)
def _restore_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """`main` sets a TF_CPP_MIN_LOG_LEVEL default; keep it from leaking into later tests."""
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")


@pytest.fixture(scope="module")
def real_package(tiny_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny package with threshold 0.9: its ~0.5 on the synthetic face is then clearly "real"."""
    return with_threshold(tiny_package, tmp_path_factory.mktemp("cli") / "real", 0.9)


def model_args(package: Path) -> list[str]:
    return ["--model", str(package), "--device", "cpu"]


def call(argv: list[str]) -> tuple[int, str]:
    """`main(argv)` in-process: exit code and stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


@dataclasses.dataclass(frozen=True)
class Run:
    """One `fakeweb run` of the moving-face clip."""

    code: int
    stdout: str
    video: Path
    results: Path


@pytest.fixture(scope="module")
def runs(
    moving_face_video: tuple[Path, ClipTruth], real_package: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Run]:
    """The clip run with the default mesh selection (faces judged manipulated) and with `--mesh-for all`."""
    clip, _ = moving_face_video
    folder = tmp_path_factory.mktemp("runs")
    done = {}
    for mesh_for in ("manipulated", "all"):
        video, results = folder / f"{mesh_for}.mp4", folder / f"{mesh_for}.jsonl"
        argv = ["run", str(clip), "-o", str(video), "--results", str(results), "-q", "--mesh-for", mesh_for]
        code, stdout = call(argv + model_args(real_package))
        done[mesh_for] = Run(code, stdout, video, results)
    return done


def decode(path: Path) -> tuple[list[np.ndarray], list[Fraction]]:
    """RGB images and presentation times (seconds) of every frame of a video file, decoded with PyAV."""
    images, times = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            images.append(frame.to_ndarray(format="rgb24"))
            times.append(frame.pts * frame.time_base)
    return images, times


def test_run_keeps_every_frame_and_its_timestamp(
    runs: dict[str, Run], moving_face_video: tuple[Path, ClipTruth]
) -> None:
    clip, truth = moving_face_video
    run = runs["manipulated"]
    assert run.code == 0
    assert f"{run.video}: {truth.frame_count} frames processed in " in run.stdout and "1 tracks" in run.stdout
    assert re.search(r"\(\d+\.\d frames/s, \d+\.\dx real time\)", run.stdout), run.stdout
    images, times = decode(run.video)
    _, clip_times = decode(clip)
    assert len(images) == len(clip_times) == truth.frame_count
    assert times == clip_times
    assert images[0].shape == (truth.height, truth.width, 3)


def test_results_follow_the_schema(runs: dict[str, Run], moving_face_video: tuple[Path, ClipTruth]) -> None:
    """One record per face per frame: the clip's one face, one track id, classified from its first frame and
    "unknown" without a score until its third sample: classified at detector frames (every 3rd) at least 10
    frames apart, i.e. frames 0, 12 and 24."""
    _, truth = moving_face_video
    records = [FaceRecord.from_json(line) for line in runs["manipulated"].results.read_text().splitlines()]
    assert [record.frame for record in records] == list(range(truth.frame_count))
    assert {record.stream for record in records} == {"moving_face"}
    assert {record.track_id for record in records} == {records[0].track_id}
    for record in records:
        assert record.pts == pytest.approx(record.frame / float(truth.fps), abs=1e-6)
        assert record.verdict in {verdict.value for verdict in Verdict}
        if record.frame < 24:
            assert (record.verdict, record.probability) == ("unknown", None)
        else:
            assert record.probability is not None and 0.0 <= record.probability <= 1.0
            assert record.verdict == "real"  # ~0.5 against threshold 0.9
        assert truth.boxes(record.frame)[0].iou(Box(*record.box)) >= 0.5


def face_change(video: Path, clip: Path, truth: ClipTruth) -> np.ndarray:
    """Per frame, mean absolute difference from the input inside the middle half of the face box."""
    output, _ = decode(video)
    original, _ = decode(clip)
    changes = []
    for index, (after, before) in enumerate(zip(output, original, strict=True)):
        box = truth.boxes(index)[0]
        x1, x2 = round(box.x1 + box.width / 4), round(box.x2 - box.width / 4)
        y1, y2 = round(box.y1 + box.height / 4), round(box.y2 - box.height / 4)
        region = np.s_[y1:y2, x1:x2]
        changes.append(np.abs(after[region].astype(np.int16) - before[region]).mean())
    return np.array(changes)


def test_mesh_for_all_draws_on_faces_the_default_leaves_alone(
    runs: dict[str, Run], moving_face_video: tuple[Path, ClipTruth]
) -> None:
    """With verdict "real" (or "unknown") the default draws only a box around the face; `--mesh-for all` meshes
    it: grey and faint while "unknown" (frames 0-23), coloured by its score from then on."""
    clip, truth = moving_face_video
    assert runs["all"].code == 0
    boxed = face_change(runs["manipulated"].video, clip, truth)
    meshed = face_change(runs["all"].video, clip, truth)
    assert boxed.max() < 8.0, boxed  # re-encoding noise only (about 4)
    assert meshed[:24].min() > 7.0, meshed  # about 10: grey at the least opacity
    assert meshed[24:].min() > 20.0, meshed  # about 45


# -- bad input ----------------------------------------------------------------------------------------------


def remove(relative: str) -> Callable[[Path], None]:
    return lambda folder: (folder / relative).unlink()


def append_to(relative: str) -> Callable[[Path], None]:
    return lambda folder: (folder / relative).write_bytes((folder / relative).read_bytes() + b"\0")


def empty_folder(folder: Path) -> None:
    shutil.rmtree(folder)
    folder.mkdir()


BROKEN_MODELS: dict[str, tuple[Callable[[Path], None], str]] = {
    "folder missing": (shutil.rmtree, "model folder not found"),
    "empty folder": (empty_folder, "no manifest.json"),
    "tflite missing": (remove("model.tflite"), "missing file model.tflite"),
    "variables missing": (
        remove("saved_model/variables/variables.index"),
        "missing file saved_model/variables",
    ),
    "manifest not JSON": (lambda folder: (folder / MANIFEST_NAME).write_text("{"), "not valid JSON"),
    "checksum mismatch": (append_to("model.tflite"), "checksum mismatch for model.tflite"),
}


def assert_one_line_error(code: int, err: str, reason: str) -> None:
    assert code == 2
    assert ERROR_LINE.fullmatch(err), err
    assert reason in err, err


@pytest.mark.parametrize("broken", list(BROKEN_MODELS))
def test_broken_model_folder(
    broken: str,
    tiny_package: Path,
    moving_face_video: tuple[Path, ClipTruth],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    damage, reason = BROKEN_MODELS[broken]
    folder = tmp_path / "model"
    shutil.copytree(tiny_package, folder)
    damage(folder)
    out = tmp_path / "out.mp4"
    code = main(["run", str(moving_face_video[0]), "-o", str(out), "-q", *model_args(folder)])
    captured = capsys.readouterr()
    assert_one_line_error(code, captured.err, reason)
    assert str(folder) in captured.err and captured.out == "" and not out.exists()


def text_file(folder: Path) -> Path:
    path = folder / "notes.mp4"
    path.write_text("not a video\n")
    return path


# (input, output, extra arguments) given the clip and tmp_path -> the reason in the error line.
BAD_FILES: dict[str, tuple[Callable[[Path, Path], list[str]], str]] = {
    "missing input": (
        lambda clip, tmp: [str(tmp / "nope.mp4"), "-o", str(tmp / "out.mp4")],
        "video file not found",
    ),
    "text input": (lambda clip, tmp: [str(text_file(tmp)), "-o", str(tmp / "out.mp4")], "cannot open video"),
    "output folder missing": (
        lambda clip, tmp: [str(clip), "-o", str(tmp / "no" / "out.mp4")],
        "output folder not found",
    ),
    "output not a video": (lambda clip, tmp: [str(clip), "-o", str(tmp / "out.txt")], "must end in .mp4"),
    "output is the input": (lambda clip, tmp: [str(clip), "-o", str(clip)], "would overwrite the input"),
    "results folder missing": (
        lambda clip, tmp: [str(clip), "-o", str(tmp / "out.mp4"), "--results", str(tmp / "no" / "r.jsonl")],
        "output folder not found",
    ),
}


@pytest.mark.parametrize("bad", list(BAD_FILES))
def test_bad_input_and_output_files(
    bad: str,
    tiny_package: Path,
    moving_face_video: tuple[Path, ClipTruth],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make, reason = BAD_FILES[bad]
    clip = tmp_path / "clip.mp4"
    shutil.copy(moving_face_video[0], clip)
    before = clip.read_bytes()
    code = main(["run", *make(clip, tmp_path), "-q", *model_args(tiny_package)])
    captured = capsys.readouterr()
    assert_one_line_error(code, captured.err, reason)
    assert clip.read_bytes() == before
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "out.txt").exists()


@pytest.mark.skipif(gpu_available(), reason="a GPU is present")
def test_gpu_requested_without_a_gpu(
    tiny_package: Path,
    moving_face_video: tuple[Path, ClipTruth],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["run", str(moving_face_video[0]), "-o", str(tmp_path / "out.mp4"), "-q"]
    code = main([*argv, "--model", str(tiny_package), "--device", "gpu"])
    assert_one_line_error(code, capsys.readouterr().err, "device 'gpu' requested but TensorFlow sees no GPU")


# (command, argument, value) -> argparse's reason; select_device("tpu") -> DeviceError is in test_classifier.py.
BAD_ARGUMENTS = [
    ("run", "--device", "tpu", "argument --device: invalid choice: 'tpu'"),
    ("run", "--backend", "onnx", "argument --backend: invalid choice: 'onnx'"),
    ("run", "--detect-every", "0", "argument --detect-every: must be >= 1, got 0"),
    ("run", "--mesh-every", "0", "argument --mesh-every: must be >= 1, got 0"),
    ("run", "--classify-every", "x", "argument --classify-every: expected an integer, got 'x'"),
    ("run", "--min-confidence", "1.5", "argument --min-confidence: must be between 0 and 1"),
    ("run", "--threads", "0", "argument --threads: must be >= 1, got 0"),
    ("run", "--detector-range", "far", "argument --detector-range: invalid choice: 'far'"),
    ("run", "--min-samples", "0", "argument --min-samples: must be >= 1, got 0"),
    ("run", "--manipulated-after", "0", "argument --manipulated-after: must be >= 1, got 0"),
    ("run", "--ema-alpha", "0", "argument --ema-alpha: must be in (0, 1], got 0.0"),
    ("run", "--suspect-band", "1", "argument --suspect-band: must be in [0, 1), got 1.0"),
    ("run", "--hysteresis-band", "x", "argument --hysteresis-band: expected a number, got 'x'"),
]


@pytest.mark.parametrize(("command", "option", "value", "reason"), BAD_ARGUMENTS)
def test_bad_arguments_are_usage_errors(
    command: str, option: str, value: str, reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [command, "clip.mp4", option, value] + (
        ["-o", str(tmp_path / "out.mp4")] if command == "run" else []
    )
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert err.splitlines()[-1].startswith(f"fakeweb {command}: error: {reason}"), err
    assert "Traceback" not in err


def test_verdict_settings_reach_the_scoring_and_are_checked_before_the_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from stream.cli import build_parser
    from stream.cli.pipeline_options import scoring_config

    flags = ["--min-samples", "5", "--manipulated-after", "4", "--ema-alpha", "0.25"]
    args = build_parser().parse_args(["run", "clip.mp4", "-o", "out.mp4", *flags, "--suspect-band", "0.5"])
    config = scoring_config(args, 0.05)
    assert (config.threshold, config.min_samples, config.manipulated_after) == (0.05, 5, 4)
    assert (config.ema_alpha, config.suspect_band, config.hysteresis_band) == (0.25, 0.5, 0.1)
    bands = ["--suspect-band", "0.9", "--hysteresis-band", "0.1"]
    code = main(["run", "missing.mp4", "-o", str(tmp_path / "out.mp4"), *bands])
    assert_one_line_error(code, capsys.readouterr().err, "suspect_band + hysteresis_band must be < 1")


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["eval", "absent", "--format", "ciplab"], "data folder not found: absent"),
        (["eval", "merge", "absent.jsonl"], "absent.jsonl: cannot read"),
        (["train", "--data", "absent", "--out", "out", "--epochs", "0"], "--epochs, --batch-size and"),
    ],
    ids=["eval", "eval merge", "train"],
)
def test_training_commands_fail_as_every_command(
    argv: list[str], reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fakeweb train` and `fakeweb eval` report an expected failure as `run` does: one line, exit 2."""
    code = main(argv)
    assert_one_line_error(code, capsys.readouterr().err, reason)


@pytest.mark.parametrize("command", ["train", "eval", "eval merge"])
def test_training_commands_usage_errors(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(command.split())
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"fakeweb {command}: error: ")


@pytest.mark.parametrize(
    ("argv", "stderr"),
    [
        (
            ["run", "clip.mp4", "-o", "out.mp4", "--device", "tpu"],
            r"usage: fakeweb run .*\nfakeweb run: error: argument --device: invalid choice: 'tpu' .*\n",
        ),
        (["run", "missing.mp4", "-o", "out.mp4"], r"fakeweb: error: video file not found: missing.mp4\n"),
    ],
    ids=["usage", "missing input"],
)
def test_command_exits_2_with_one_error_line(argv: list[str], stderr: str, tmp_path: Path) -> None:
    """The entry point's contract in a real process: exit status 2, the error on stderr, no traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "stream.cli", *argv],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert re.fullmatch(stderr, done.stderr, re.DOTALL), done.stderr
