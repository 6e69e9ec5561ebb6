"""Evaluate a model package on a labelled data set (`fakeweb eval`), in one run or as shards that merge.

Scoring crops each image as serving does (the serving detector, the model's crop), runs the classifier and
writes a score file: one header line describing the run, then one JSON line per sample. With `--num-shards N`
a run scores only the samples whose path hashes to its shard, so N independent workers (an AWS Batch array
job: the index comes from AWS_BATCH_JOB_ARRAY_INDEX) cover the data set exactly once; `fakeweb eval merge`
checks the shards fit together and computes the report. Without `--num-shards` one run does both.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from models.classifier import Classifier, load_classifier
from models.detector import DetectorConfig, FaceDetector
from models.devices import DEVICE_CHOICES
from models.errors import FakewebError
from models.package import DEFAULT_PACKAGE_DIR, ModelPackage
from training import data
from training.metrics import DFDC_CONFIDENT_RULE, VIDEO_RULES, summarize, video_scores
from training.prepare import FORMATS, read_format
from training.tag_metrics import per_tag

SCHEMA = "fakeweb-eval-scores/1"
ARRAY_INDEX_ENV = "AWS_BATCH_JOB_ARRAY_INDEX"
SHARD_PLACEHOLDER = "{shard}"
CHUNK = 256  # samples cropped, then classified, at a time


class EvaluationError(FakewebError):
    """Evaluation options, data or score files that cannot produce a report."""


@dataclass(frozen=True)
class Run:
    """What every shard of one evaluation shares; shards merge only when their runs are equal."""

    model_version: str
    threshold: float
    data: str
    format: str
    detector_range: str
    min_confidence: float
    num_shards: int


@dataclass(frozen=True)
class Score:
    """One sample's row: path relative to the data root, label, group, tag, P(fake), whether a face was found."""

    path: str
    label: int
    group: str
    tag: str | None
    probability: float
    face: bool


def relative_path(path: Path, root: Path) -> str:
    """A file's path relative to the data root (absolute when outside it): what shards are hashed on."""
    return (path.relative_to(root) if path.is_relative_to(root) else path).as_posix()


def sample_key(sample: data.Sample, root: Path) -> str:
    """A sample's row key: its relative path, with `#<frame>` for a frame of a video."""
    key = relative_path(sample.path, root)
    return key if sample.frame is None else f"{key}#{sample.frame}"


def video_id(score: Score) -> str:
    """The video a row belongs to: its file for a video frame, else its label and group (folders of frames)."""
    path, hash_sign, _ = score.path.rpartition("#")
    return path if hash_sign else f"{score.label}:{score.group}"


def shard_of(path: str, num_shards: int) -> int:
    """The shard of a sample, from a stable hash of its path relative to the data root."""
    digest = hashlib.sha256(path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def read_samples(root: Path, data_format: str) -> list[data.Sample]:
    """The data set's samples (`training.prepare.read_format`); EvaluationError when `root` is no folder."""
    if not root.is_dir():
        raise EvaluationError(f"data folder not found: {root}")
    return read_format(root, data_format)


def score_samples(
    samples: Sequence[data.Sample],
    root: Path,
    classifier: Classifier,
    detector: FaceDetector,
    progress: bool = False,
) -> Iterator[Score]:
    """Crop (as `training.data.load_crops`, i.e. as serving) and classify each sample, in order."""
    spec = classifier.package.manifest.crop
    with tqdm(total=len(samples), desc="scoring", unit="img", disable=not progress) as bar:
        for start in range(0, len(samples), CHUNK):
            chunk = samples[start : start + CHUNK]
            crops = data.load_crops(chunk, spec, detector)
            probabilities = classifier.predict(crops.images)
            finite = np.isfinite(probabilities)
            if not finite.all():
                bad = int(np.argmin(finite))
                raise EvaluationError(f"the model returned {probabilities[bad]} for {chunk[bad].path}")
            for sample, face, probability in zip(chunk, crops.faces, probabilities, strict=True):
                yield Score(
                    sample_key(sample, root),
                    sample.label,
                    sample.group,
                    sample.difficulty,
                    float(probability),
                    bool(face),
                )
            bar.update(len(chunk))


def write_scores(path: Path, run: Run, shard_index: int, scores: Sequence[Score]) -> None:
    """Header line then one line per score, written to a temporary name and renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    header = {"schema": SCHEMA, "shard_index": shard_index, "samples": len(scores), **asdict(run)}
    with partial.open("w", encoding="utf-8") as handle:
        handle.write(json.dumps(header) + "\n")
        for score in scores:
            handle.write(json.dumps(asdict(score)) + "\n")
    partial.replace(path)


def _header(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return None


def read_scores(path: Path) -> tuple[Run, int, list[Score]]:
    """(run, shard index, scores) of a score file; EvaluationError when it is missing, foreign or truncated."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise EvaluationError(f"{path}: cannot read ({exc})") from exc
    header = _header(lines[0]) if lines else None
    if not isinstance(header, dict) or header.get("schema") != SCHEMA:
        raise EvaluationError(f"{path}: not a score file of `fakeweb eval` ({SCHEMA})")
    try:
        run = Run(**{key: header[key] for key in Run.__dataclass_fields__})
        scores = [Score(**json.loads(line)) for line in lines[1:]]
        shard_index, expected = int(header["shard_index"]), int(header["samples"])
    except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise EvaluationError(f"{path}: malformed score file ({exc})") from exc
    if len(scores) != expected:
        raise EvaluationError(f"{path}: {len(scores)} rows where the header promises {expected} (truncated?)")
    return run, shard_index, scores


def merge_scores(shards: Sequence[tuple[Path, Run, int, list[Score]]]) -> tuple[Run, list[Score]]:
    """The run and all scores sorted by path; refuses shards of different runs, repeated or missing shards."""
    if not shards:
        raise EvaluationError("no score files to merge")
    first_path, run = shards[0][0], shards[0][1]
    seen: dict[int, Path] = {}
    for path, other, index, _ in shards:
        if other != run:
            differing = [key for key, value in asdict(run).items() if asdict(other)[key] != value]
            raise EvaluationError(f"{path} and {first_path} are from different runs ({', '.join(differing)})")
        if index in seen:
            raise EvaluationError(f"{path} and {seen[index]} are both shard {index} of {run.num_shards}")
        seen[index] = path
    missing = sorted(set(range(run.num_shards)) - set(seen))
    if missing:
        listed = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        raise EvaluationError(f"missing shard(s) {listed} of {run.num_shards}")
    scores = sorted((score for *_, shard_scores in shards for score in shard_scores), key=lambda s: s.path)
    for previous, score in itertools.pairwise(scores):
        if previous.path == score.path:
            raise EvaluationError(f"{score.path} is scored twice (overlapping shards)")
    return run, scores


def _videos(
    labels: np.ndarray, probabilities: np.ndarray, keys: np.ndarray, threshold: float
) -> dict[str, Any] | None:
    """Video-level metrics over the rows grouped by `video_id`; None when no video has 2 frames."""
    ids, first, frames = np.unique(keys, return_index=True, return_counts=True)
    if not len(ids) or frames.max() < 2:
        return None
    video_labels = labels[first]
    result: dict[str, Any] = {
        "count": len(ids),
        "frames_per_video": {"min": int(frames.min()), "max": int(frames.max())},
        "confident_rule": asdict(DFDC_CONFIDENT_RULE),
    }
    for rule in VIDEO_RULES:
        _, scores = video_scores(probabilities, keys, rule)
        result[rule] = summarize(video_labels, scores, threshold)
    return result


def build_report(
    run: Run, scores: Sequence[Score], threshold: float, threshold_source: str
) -> dict[str, Any]:
    """The report: frame metrics, video metrics (mean and confident rules) and a breakdown per tag."""
    labels = np.array([s.label for s in scores], dtype=np.int64)
    probabilities = np.array([s.probability for s in scores], dtype=np.float64)
    return {
        "model": {"version": run.model_version, "threshold": run.threshold},
        "data": {"root": run.data, "format": run.format},
        "detector": {"range": run.detector_range, "min_confidence": run.min_confidence},
        "threshold": threshold,
        "threshold_source": threshold_source,
        "samples": len(scores),
        "no_face": sum(not s.face for s in scores),
        "frames": summarize(labels, probabilities, threshold),
        "videos": _videos(labels, probabilities, np.array([video_id(s) for s in scores]), threshold),
        "per_tag": per_tag(labels, probabilities, [s.tag for s in scores], threshold),
    }


def format_table(report: dict[str, Any]) -> str:
    """The report as a few header lines and one table row per frame, video and tag summary."""
    columns = ("n", "n_real", "n_fake", "auc", "average_precision", "eer", "accuracy", "log_loss")
    heads = ("n", "real", "fake", "AUC", "AP", "EER", "acc@T", "logloss")
    rows = [("frames", report["frames"])]
    if report["videos"] is not None:
        rows += [(f"videos ({rule})", report["videos"][rule]) for rule in VIDEO_RULES]
    rows += [(f"tag {tag}", values) for tag, values in report["per_tag"].items()]
    width = max(len(name) for name, _ in rows)

    def cell(value: Any) -> str:
        return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = [
        f"model {report['model']['version']}, threshold {report['threshold']:.4f} "
        f"({report['threshold_source']})",
        f"data {report['data']['root']} ({report['data']['format']}): {report['samples']} samples, "
        f"{report['no_face']} without a detected face (whole image used)",
        " " * width + "".join(f"{head:>9}" for head in heads),
    ]
    lines += [name.ljust(width) + "".join(f"{cell(v[c]):>9}" for c in columns) for name, v in rows]
    return "\n".join(lines)


def _finish(report: dict[str, Any], json_path: Path | None) -> None:
    print(format_table(report))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `fakeweb eval DATA` (scoring, and the report when unsharded)."""
    parser.add_argument("data", type=Path, help="data-set root")
    parser.add_argument("--format", choices=FORMATS, default="folders", help="data-set layout")
    parser.add_argument("--model", type=Path, default=DEFAULT_PACKAGE_DIR, help="model package folder")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="accelerator")
    parser.add_argument("--backend", choices=("auto", "tflite", "savedmodel"), default="auto")
    parser.add_argument("--threads", type=int, default=1, help="TFLite CPU threads")
    parser.add_argument("--detector-range", choices=("short", "full"), default="short")
    parser.add_argument("--min-confidence", type=float, default=0.5, help="face detector confidence")
    parser.add_argument(
        "--num-shards", type=int, default=None, help="score one of N shards; merge them with `eval merge`"
    )
    parser.add_argument(
        "--shard-index", type=int, default=None, help=f"this shard, 0..N-1 (default: ${ARRAY_INDEX_ENV})"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help=f"score file; {SHARD_PLACEHOLDER} becomes the shard index"
    )
    _add_report_arguments(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def add_merge_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `fakeweb eval merge SCORES...`."""
    parser.add_argument("scores", type=Path, nargs="+", help="score files of every shard of one run")
    _add_report_arguments(parser)


def _add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threshold", type=float, default=None, help="decision threshold (default: the model's manifest)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the report as JSON to this file")


def _shard_index(args: argparse.Namespace) -> int:
    index = args.shard_index
    if index is None:
        value = os.environ.get(ARRAY_INDEX_ENV)
        if value is None:
            raise EvaluationError(f"--num-shards needs --shard-index or ${ARRAY_INDEX_ENV}")
        try:
            index = int(value)
        except ValueError as exc:
            raise EvaluationError(f"${ARRAY_INDEX_ENV} is not an integer: {value!r}") from exc
    if not 0 <= index < args.num_shards:
        raise EvaluationError(f"shard index {index} is outside 0..{args.num_shards - 1}")
    return int(index)


def _check_threshold(threshold: float | None) -> None:
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise EvaluationError(f"--threshold must be in [0, 1], got {threshold}")


def run_scoring(args: argparse.Namespace) -> int:
    """`fakeweb eval DATA ...`: score one shard, or everything and report."""
    sharded = args.num_shards is not None
    if sharded:
        if args.num_shards < 1:
            raise EvaluationError("--num-shards must be >= 1")
        if args.out is None or args.threshold is not None or args.json is not None:
            raise EvaluationError(
                "a shard needs --out; --threshold and --json belong to `fakeweb eval merge`"
            )
    _check_threshold(args.threshold)
    try:
        detector_config = DetectorConfig(args.detector_range, args.min_confidence)
    except ValueError as exc:
        raise EvaluationError(str(exc)) from exc
    index = _shard_index(args) if sharded else 0
    samples = read_samples(args.data, args.format)
    if sharded:
        samples = [s for s in samples if shard_of(relative_path(s.path, args.data), args.num_shards) == index]
    package = ModelPackage.load(args.model)
    classifier = load_classifier(package, args.device, args.backend, args.threads)
    run = Run(
        package.manifest.version,
        package.manifest.threshold,
        str(args.data),
        args.format,
        detector_config.range,
        detector_config.min_confidence,
        args.num_shards or 1,
    )
    with FaceDetector(detector_config) as detector:
        scores = list(score_samples(samples, args.data, classifier, detector, progress=not args.quiet))
    if args.out is not None:
        out = Path(str(args.out).replace(SHARD_PLACEHOLDER, str(index)))
        write_scores(out, run, index, scores)
        print(f"wrote {len(scores)} scores (shard {index} of {run.num_shards}) to {out}")
    if not sharded:
        threshold, source = _threshold(args.threshold, run)
        _finish(build_report(run, sorted(scores, key=lambda s: s.path), threshold, source), args.json)
    return 0


def _threshold(override: float | None, run: Run) -> tuple[float, str]:
    return (run.threshold, "model manifest") if override is None else (override, "--threshold")


def run_merge(args: argparse.Namespace) -> int:
    """`fakeweb eval merge SCORES...`: check the shards, merge them and report."""
    _check_threshold(args.threshold)
    run, scores = merge_scores([(path, *read_scores(path)) for path in args.scores])
    threshold, source = _threshold(args.threshold, run)
    _finish(build_report(run, scores, threshold, source), args.json)
    return 0


def command(argv: Sequence[str]) -> int:
    """`fakeweb eval DATA ...` or `fakeweb eval merge SCORES...`: parse `argv` and run; expected failures raise
    EvaluationError (a FakewebError)."""
    arguments = list(argv)
    if arguments[:1] == ["merge"]:
        parser = argparse.ArgumentParser(
            prog="fakeweb eval merge", description="Merge the score files of a sharded run and report."
        )
        add_merge_arguments(parser)
        handler, arguments = run_merge, arguments[1:]
    else:
        parser = argparse.ArgumentParser(
            prog="fakeweb eval",
            description=__doc__.split("\n\n")[0],
            epilog="Merge shards with: fakeweb eval merge SCORES... [--threshold T] [--json REPORT]",
        )
        add_arguments(parser)
        handler = run_scoring
    return handler(parser.parse_args(arguments))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m training.evaluate DATA ...` or `... merge SCORES...`: `command`, an expected failure printed as
    `error: ...` with exit status 1 (`fakeweb eval` reports as every `fakeweb` command)."""
    try:
        return command(sys.argv[1:] if argv is None else argv)
    except FakewebError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
