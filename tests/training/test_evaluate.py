"""`fakeweb eval`: sharded scoring that merges to the unsharded report, the report schema and refused merges."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from face_photos import altered, face_photo, write_rgb

from stream import cli
from training import evaluate
from training.metrics import summarize

NUM_SHARDS = 3
SUMMARY_KEYS = set(summarize(np.array([0, 1]), np.array([0.2, 0.8]), 0.5))
REPORT_KEYS = {"model", "data", "detector", "threshold", "threshold_source", "samples", "no_face"}
REPORT_KEYS |= {"frames", "videos", "per_tag"}


def score_args(root: Path, model: Path, *extra: str) -> list[str]:
    return [str(root), "--format", "ciplab", "--model", str(model), "-q", *extra]


def read_rows(path: Path) -> tuple[dict, list[dict]]:
    header, *rows = (json.loads(line) for line in path.read_text().splitlines())
    return header, rows


@pytest.fixture(scope="module")
def runs(ciplab_root: Path, tiny_package: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One unsharded run (scores and report), three shards and their merged report."""
    out = tmp_path_factory.mktemp("eval")
    whole = ["--out", str(out / "all.jsonl"), "--json", str(out / "whole.json")]
    assert evaluate.main(score_args(ciplab_root, tiny_package, *whole)) == 0
    for index in range(NUM_SHARDS):
        shard = [
            "--num-shards",
            str(NUM_SHARDS),
            "--shard-index",
            str(index),
            "--out",
            str(out / "s{shard}.jsonl"),
        ]
        assert evaluate.main(score_args(ciplab_root, tiny_package, *shard)) == 0
    shards = [str(out / f"s{index}.jsonl") for index in range(NUM_SHARDS)]
    assert cli.main(["eval", "merge", *shards, "--json", str(out / "merged.json")]) == 0
    return {"dir": out, "all": out / "all.jsonl", "whole": out / "whole.json", "merged": out / "merged.json"}


def test_shards_merge_to_the_unsharded_report_exactly(runs: dict[str, Path]) -> None:
    assert json.loads(runs["merged"].read_text()) == json.loads(runs["whole"].read_text())


def test_shards_are_disjoint_cover_everything_and_follow_the_path_hash(runs: dict[str, Path]) -> None:
    _, everything = read_rows(runs["all"])
    seen: list[dict] = []
    for index in range(NUM_SHARDS):
        header, rows = read_rows(runs["dir"] / f"s{index}.jsonl")
        assert header["shard_index"] == index and header["num_shards"] == NUM_SHARDS
        assert header["samples"] == len(rows)
        assert all(evaluate.shard_of(row["path"], NUM_SHARDS) == index for row in rows)
        seen += rows
    assert sorted(seen, key=lambda r: r["path"]) == sorted(everything, key=lambda r: r["path"])
    assert len(everything) == 12
    assert set(everything[0]) == {"path", "label", "group", "tag", "probability", "face"}


def test_shard_hash_is_stable() -> None:
    # Pinned: changing the hash would reshuffle the shards of runs already under way.
    assert [evaluate.shard_of(f"fake/easy_{i}.jpg", 7) for i in range(6)] == [0, 3, 3, 1, 6, 5]


def test_report_schema_and_per_difficulty(runs: dict[str, Path], tiny_package: Path) -> None:
    report = json.loads(runs["whole"].read_text())
    assert set(report) == REPORT_KEYS
    assert report["threshold"] == 0.5 and report["threshold_source"] == "model manifest"
    assert report["data"]["format"] == "ciplab" and report["samples"] == 12
    assert report["detector"] == {"range": "short", "min_confidence": 0.5}
    assert set(report["frames"]) == SUMMARY_KEYS
    assert report["frames"]["n_real"] == 6 and report["frames"]["n_fake"] == 6
    assert report["videos"] is None  # CIPLAB images are their own groups: no video has two frames
    assert set(report["per_tag"]) == {"real", "easy", "mid", "hard"}
    for tag in ("easy", "mid", "hard"):
        entry = report["per_tag"][tag]
        assert set(entry) == SUMMARY_KEYS | {"versus"}
        assert entry["versus"] == "all real" and entry["n_fake"] == 2 and entry["n_real"] == 6
        assert entry["auc"] is not None
    assert report["per_tag"]["real"]["versus"] == "all fake"


def test_table_is_printed(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert evaluate.main(["merge", str(runs["all"]), "--threshold", "0.3"]) == 0
    printed = capsys.readouterr().out
    assert "threshold 0.3000 (--threshold)" in printed
    for row in ("frames", "tag easy", "tag mid", "tag hard"):
        assert f"\n{row} " in printed


def test_array_index_env_chooses_the_shard(
    runs: dict[str, Path],
    ciplab_root: Path,
    tiny_package: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(evaluate.ARRAY_INDEX_ENV, "1")
    shard = ["--num-shards", str(NUM_SHARDS), "--out", str(tmp_path / "part-{shard}.jsonl")]
    assert evaluate.main(score_args(ciplab_root, tiny_package, *shard)) == 0
    assert read_rows(tmp_path / "part-1.jsonl") == read_rows(runs["dir"] / "s1.jsonl")
    assert not (tmp_path / "part-1.jsonl.partial").exists()


def test_sharding_needs_an_index(
    ciplab_root: Path,
    tiny_package: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv(evaluate.ARRAY_INDEX_ENV, raising=False)
    shard = ["--num-shards", "2", "--out", str(tmp_path / "s.jsonl")]
    assert evaluate.main(score_args(ciplab_root, tiny_package, *shard)) == 1
    assert (
        capsys.readouterr().err == f"error: --num-shards needs --shard-index or ${evaluate.ARRAY_INDEX_ENV}\n"
    )


def shard_file(runs: dict[str, Path], index: int) -> Path:
    return runs["dir"] / f"s{index}.jsonl"


def test_merge_refuses_a_repeated_shard(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    shards = [shard_file(runs, 0), shard_file(runs, 1), shard_file(runs, 2), shard_file(runs, 1)]
    assert evaluate.main(["merge", *map(str, shards)]) == 1
    assert "are both shard 1 of 3" in capsys.readouterr().err


def test_merge_refuses_overlapping_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = evaluate.Run("v1", 0.5, "/data", "ciplab", "short", 0.5, 2)
    score = evaluate.Score("fake/easy_1_1000.jpg", 1, "fake/easy_1_1000", "easy", 0.7, True)
    evaluate.write_scores(tmp_path / "a.jsonl", run, 0, [score])
    evaluate.write_scores(tmp_path / "b.jsonl", run, 1, [replace(score, probability=0.2)])
    assert evaluate.main(["merge", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]) == 1
    assert "fake/easy_1_1000.jpg is scored twice (overlapping shards)" in capsys.readouterr().err


def test_merge_refuses_missing_foreign_and_truncated_shards(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert evaluate.main(["merge", str(shard_file(runs, 0)), str(shard_file(runs, 2))]) == 1
    assert "missing shard(s) 1 of 3" in capsys.readouterr().err
    assert evaluate.main(["merge", str(shard_file(runs, 0)), str(runs["all"])]) == 1
    assert "are from different runs (num_shards)" in capsys.readouterr().err
    lines = runs["all"].read_text().splitlines()
    truncated = tmp_path / "truncated.jsonl"
    truncated.write_text("\n".join(lines[:-1]) + "\n")
    assert evaluate.main(["merge", str(truncated)]) == 1
    assert "11 rows where the header promises 12" in capsys.readouterr().err
    assert evaluate.main(["merge", str(runs["whole"])]) == 1
    assert "not a score file" in capsys.readouterr().err


def test_expected_errors_are_one_line(
    ciplab_root: Path,
    tiny_package: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert evaluate.main(score_args(tmp_path / "absent", tiny_package)) == 1
    assert capsys.readouterr().err == f"error: data folder not found: {tmp_path / 'absent'}\n"
    (tmp_path / "broken").mkdir()
    assert evaluate.main(score_args(ciplab_root, tmp_path / "broken")) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'broken'}: no manifest.json\n"
    assert evaluate.main([str(ciplab_root), "--format", "ffpp", "--model", str(tiny_package)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {ciplab_root}: no videos in original_sequences") and err.count("\n") == 1


def test_video_level_metrics_on_folders_of_frames(
    tiny_package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """real/vN/ and fake/vN/ hold the frames of one video each: videos are scored by both rules."""
    for video in range(2):
        for frame in range(3):
            photo = face_photo(3 * video + frame)
            write_rgb(tmp_path / "data" / "real" / f"v{video}" / f"{frame}.jpg", photo)
            write_rgb(tmp_path / "data" / "fake" / f"v{video}" / f"{frame}.jpg", altered(photo, 0.6))
    report_path = tmp_path / "report.json"
    args = [str(tmp_path / "data"), "--model", str(tiny_package), "-q", "--json", str(report_path)]
    assert evaluate.main(args) == 0
    report = json.loads(report_path.read_text())
    videos = report["videos"]
    assert videos["count"] == 4 and videos["frames_per_video"] == {"min": 3, "max": 3}
    assert videos["confident_rule"] == {
        "fake_above": 0.8,
        "fake_fraction": 0.4,
        "real_below": 0.2,
        "real_fraction": 0.9,
    }
    for rule in ("mean", "confident"):
        assert set(videos[rule]) == SUMMARY_KEYS and videos[rule]["n_real"] == videos[rule]["n_fake"] == 2
    assert report["per_tag"] == {} and report["frames"]["n"] == 12
    assert "videos (confident)" in capsys.readouterr().out
