"""DFDC and FaceForensics++ readers, frame sampling and the crop cache, on tiny layouts of synthetic clips."""

from __future__ import annotations

import json
from collections import Counter
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from clips import background, face_crop, paste_face, write_h264

from models.detector import DetectorConfig, FaceDetector
from models.errors import InputError
from models.preprocess import CropSpec
from training import crop_cache, evaluate
from training.data import FAKE, REAL, load_crops, read_dfdc, read_ffpp
from training.video_frames import frame_count, read_frames, spread

FRAMES = 6


def face_clip(path: Path, shade: int = 0) -> Path:
    """6 frames of 160x120 with the astronaut's face (60 px) drifting right; `shade` darkens the face."""
    crop = np.clip(face_crop().astype(np.int16) - shade, 0, 255).astype(np.uint8)
    images = []
    for index in range(FRAMES):
        image = background(160, 120)
        paste_face(image, crop, (70 + 4 * index, 60), 60)
        images.append(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_h264(path, images, Fraction(25))


@pytest.fixture(scope="module")
def dfdc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two parts: real a with fakes b, c; real d with fake e."""
    root = tmp_path_factory.mktemp("dfdc")
    parts = {
        "dfdc_train_part_0": {"a.mp4": None, "b.mp4": "a.mp4", "c.mp4": "a.mp4"},
        "dfdc_train_part_1": {"d.mp4": None, "e.mp4": "d.mp4"},
    }
    for part, videos in parts.items():
        metadata = {}
        for name, original in videos.items():
            face_clip(root / part / name, shade=0 if original is None else 40)
            label = "REAL" if original is None else "FAKE"
            metadata[name] = {"label": label, "split": "train", "original": original}
        (root / part / "metadata.json").write_text(json.dumps(metadata))
    return root


@pytest.fixture(scope="module")
def ffpp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ffpp")
    for name in ("000", "003", "010"):
        face_clip(root / "original_sequences" / "youtube" / "c23" / "videos" / f"{name}.mp4")
    for method, names in {"Deepfakes": ("000_003", "003_000"), "Face2Face": ("000_003",)}.items():
        for name in names:
            face_clip(root / "manipulated_sequences" / method / "c23" / "videos" / f"{name}.mp4", shade=40)
    face_clip(root / "manipulated_sequences" / "Deepfakes" / "c40" / "videos" / "010_000.mp4")
    return root


def test_spread_picks_evenly_spaced_frames() -> None:
    assert spread(10, 4) == [0, 3, 6, 9]
    assert spread(3, 8) == [0, 1, 2]
    assert spread(9, 1) == [4]
    with pytest.raises(ValueError):
        spread(10, 0)


def test_read_frames_decodes_the_requested_frames(tmp_path: Path) -> None:
    path = face_clip(tmp_path / "clip.mp4")
    assert frame_count(path) == FRAMES
    frames = read_frames(path, [4, 0, 4])
    assert [f.shape for f in frames] == [(120, 160, 3)] * 3
    np.testing.assert_array_equal(frames[0], frames[2])
    assert not np.array_equal(frames[0], frames[1])  # the face moved
    with pytest.raises(InputError, match="ends before frame 6"):
        read_frames(path, [6])
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(InputError, match="junk.mp4"):
        frame_count(tmp_path / "junk.mp4")


def test_read_dfdc_groups_fakes_with_their_original(dfdc_root: Path) -> None:
    samples = read_dfdc(dfdc_root, frames_per_video=3)
    by_video: dict[str, list] = {}
    for sample in samples:
        by_video.setdefault(sample.path.name, []).append(sample)
    assert sorted(by_video) == ["a.mp4", "b.mp4", "c.mp4", "d.mp4", "e.mp4"]
    assert all([s.frame for s in video] == [0, 2, 5] for video in by_video.values())
    groups = {name: (video[0].label, video[0].group) for name, video in by_video.items()}
    assert groups == {"a.mp4": (REAL, "a"), "b.mp4": (FAKE, "a"), "c.mp4": (FAKE, "a")} | {
        "d.mp4": (REAL, "d"),
        "e.mp4": (FAKE, "d"),
    }
    assert {s.difficulty for s in samples} == {None}


def test_read_dfdc_reports_bad_metadata(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="metadata.json"):
        read_dfdc(tmp_path)
    face_clip(tmp_path / "part" / "a.mp4")
    (tmp_path / "part" / "metadata.json").write_text(
        json.dumps({"a.mp4": {"label": "FAKE", "original": None}})
    )
    with pytest.raises(InputError, match="a.mp4 needs"):
        read_dfdc(tmp_path)
    (tmp_path / "part" / "metadata.json").write_text(
        json.dumps({"z.mp4": {"label": "REAL", "original": None}})
    )
    with pytest.raises(InputError, match="z.mp4 is listed but missing"):
        read_dfdc(tmp_path)


def test_read_ffpp_joins_targets_and_sources_into_one_group(ffpp_root: Path) -> None:
    samples = read_ffpp(ffpp_root, frames_per_video=2)
    videos = {(s.path.parent.parent.parent.name, s.path.stem): s for s in samples}
    assert Counter(s.frame for s in samples) == {0: 6, 5: 6}
    assert sorted(videos) == [
        ("Deepfakes", "000_003"),
        ("Deepfakes", "003_000"),
        ("Face2Face", "000_003"),
        ("youtube", "000"),
        ("youtube", "003"),
        ("youtube", "010"),
    ]
    groups = {key: sample.group for key, sample in videos.items()}
    assert len({groups[key] for key in groups if key[1] != "010"}) == 1
    assert groups[("youtube", "010")] != groups[("youtube", "000")]  # its only fake is c40, not read
    tags = {key: (sample.label, sample.difficulty) for key, sample in videos.items()}
    assert tags[("youtube", "000")] == (REAL, "original")
    assert tags[("Face2Face", "000_003")] == (FAKE, "Face2Face")
    assert len(read_ffpp(ffpp_root, frames_per_video=1, compression="c40")) == 1
    with pytest.raises(InputError, match="no videos"):
        read_ffpp(ffpp_root, compression="raw")


def test_crop_cache_builds_shards_once_and_rebuilds_for_a_new_spec(
    dfdc_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(crop_cache, "SHARD_SIZE", 4)
    samples = read_dfdc(dfdc_root, frames_per_video=2)
    spec, config = CropSpec(64, 0.25), DetectorConfig()
    crops = crop_cache.cached_crops(samples, dfdc_root, spec, config, tmp_path)
    (entry,) = tmp_path.iterdir()
    index = json.loads((entry / "index.json").read_text())
    assert index["count"] == 10 and [s["count"] for s in index["shards"]] == [4, 4, 2]
    assert crops.images.shape == (10, 64, 64, 3) and crops.no_face == 0
    assert crops.labels.tolist() == [s.label for s in samples]
    assert crops.landmarks is not None
    has_mesh = np.isfinite(crops.landmarks).all(axis=(1, 2))
    assert has_mesh.tolist() == [s.label == REAL for s in samples]
    with FaceDetector(config) as detector:  # the cache holds exactly what serving's crop gives
        np.testing.assert_array_equal(crops.images, load_crops(samples, spec, detector).images)

    def no_detector(*args: object) -> None:
        raise AssertionError("the cache was rebuilt")

    monkeypatch.setattr(crop_cache, "FaceDetector", no_detector)
    again = crop_cache.cached_crops(samples, dfdc_root, spec, config, tmp_path)
    np.testing.assert_array_equal(again.images, crops.images)
    np.testing.assert_array_equal(again.landmarks, crops.landmarks)
    with pytest.raises(AssertionError, match="rebuilt"):
        crop_cache.cached_crops(samples, dfdc_root, CropSpec(48, 0.25), config, tmp_path)
    assert len(list(tmp_path.iterdir())) == 1  # the failed build left nothing behind


def test_eval_scores_video_frames(
    ffpp_root: Path, tiny_package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "report.json"
    argv = [str(ffpp_root), "--format", "ffpp", "--model", str(tiny_package), "-q", "--json", str(report)]
    assert evaluate.main(argv) == 0
    result = json.loads(report.read_text())
    assert result["samples"] == 6 * 6 and result["no_face"] == 0  # 8 frames per video asked, 6 exist
    assert set(result["per_tag"]) == {"original", "Deepfakes", "Face2Face"}
    assert result["videos"]["count"] == 6, "each video file is one video, even when several share a group"


def test_sharded_eval_of_videos_merges_into_the_unsharded_report(
    ffpp_root: Path, tiny_package: Path, tmp_path: Path
) -> None:
    base = [str(ffpp_root), "--format", "ffpp", "--model", str(tiny_package), "-q"]
    assert evaluate.main([*base, "--json", str(tmp_path / "whole.json")]) == 0
    for index in range(3):
        shard = ["--num-shards", "3", "--shard-index", str(index), "--out", str(tmp_path / f"s{index}.jsonl")]
        assert evaluate.main([*base, *shard]) == 0
    shards = [str(tmp_path / f"s{index}.jsonl") for index in range(3)]
    assert evaluate.main(["merge", *shards, "--json", str(tmp_path / "merged.json")]) == 0
    whole = json.loads((tmp_path / "whole.json").read_text())
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert merged["frames"] == whole["frames"] and merged["videos"] == whole["videos"]
