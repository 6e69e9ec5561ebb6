"""Data-set readers, the group split and face crops, on tiny layouts written to a temporary folder."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from face_photos import CIPLAB_FAKES, CIPLAB_REALS, face_photo, write_rgb

from models.detector import FaceDetector
from models.errors import InputError
from models.preprocess import CropSpec
from training.data import (
    FAKE,
    REAL,
    Sample,
    load_crops,
    read_ciplab,
    read_real_fake_folders,
    read_real_folder,
    source_group,
    split_by_group,
    subsample,
)


def test_read_ciplab_labels_difficulty_and_groups(ciplab_root: Path) -> None:
    samples = read_ciplab(ciplab_root)
    assert Counter(s.label for s in samples) == {REAL: CIPLAB_REALS, FAKE: len(CIPLAB_FAKES)}
    by_name = {s.path.name: s for s in samples}
    assert by_name["real_00000.jpg"].difficulty == "real"
    difficulties = [by_name[name].difficulty for name in CIPLAB_FAKES]
    assert difficulties == ["easy", "easy", "mid", "mid", "hard", "hard"]
    assert len({s.group for s in samples}) == len(samples)


def test_read_ciplab_rejects_unknown_fake_name(tmp_path: Path) -> None:
    write_rgb(tmp_path / "real" / "real_00001.jpg", face_photo())
    write_rgb(tmp_path / "fake" / "medium_1_0001.jpg", face_photo())
    with pytest.raises(InputError, match="medium_1_0001"):
        read_ciplab(tmp_path)


def test_missing_label_folder_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    with pytest.raises(InputError, match="fake/ is missing"):
        read_real_fake_folders(tmp_path)


def test_read_folders_without_fakes_when_allowed(tmp_path: Path) -> None:
    write_rgb(tmp_path / "real" / "id1" / "a.jpg", face_photo())
    samples = read_real_fake_folders(tmp_path, require_fakes=False)
    assert [(s.label, s.group) for s in samples] == [(REAL, "id1")]


def test_read_folders_groups_by_first_subfolder(tmp_path: Path) -> None:
    image = face_photo()
    for relative in [
        "real/id1/a.jpg",
        "real/id1/sub/b.png",
        "fake/id1/c.jpg",
        "fake/id2/d.jpg",
        "real/e.jpg",
    ]:
        write_rgb(tmp_path / relative, image)
    (tmp_path / "real" / "notes.txt").write_text("not an image")
    groups = {
        s.path.relative_to(tmp_path).as_posix(): (s.label, s.group) for s in read_real_fake_folders(tmp_path)
    }
    assert groups == {
        "real/id1/a.jpg": (REAL, "id1"),
        "real/id1/sub/b.png": (REAL, "id1"),
        "fake/id1/c.jpg": (FAKE, "id1"),
        "fake/id2/d.jpg": (FAKE, "id2"),
        "real/e.jpg": (REAL, "real/e"),
    }


def synthetic_samples(groups: int, per_group: int, mixed: bool) -> list[Sample]:
    samples = []
    for group in range(groups):
        for item in range(per_group):
            label = item % 2 if mixed else group % 2
            samples.append(Sample(Path(f"{group}_{item}.jpg"), label, f"g{group}"))
    return samples


@pytest.mark.parametrize("mixed", [False, True])
def test_split_keeps_groups_on_one_side(mixed: bool) -> None:
    samples = synthetic_samples(groups=40, per_group=4, mixed=mixed)
    split = split_by_group(samples, 0.2, 0.2, seed=1)
    parts = [split.train, split.val, split.test]
    group_sets = [{s.group for s in part} for part in parts]
    assert sum(len(part) for part in parts) == len(samples)
    for i in range(3):
        for j in range(i + 1, 3):
            assert not group_sets[i] & group_sets[j]
    assert [len(g) for g in group_sets] == [24, 8, 8]


def test_split_is_stratified_by_label_and_difficulty() -> None:
    samples = [Sample(Path(f"r{i}.jpg"), REAL, f"r{i}", "real") for i in range(100)]
    samples += [Sample(Path(f"f{i}.jpg"), FAKE, f"f{i}", ("easy", "mid", "hard")[i % 3]) for i in range(60)]
    split = split_by_group(samples, 0.15, 0.25, seed=3)
    test_counts = Counter(s.difficulty for s in split.test)
    assert test_counts == {"real": 25, "easy": 5, "mid": 5, "hard": 5}
    assert Counter(s.difficulty for s in split.val) == {"real": 15, "easy": 3, "mid": 3, "hard": 3}


def test_split_is_seeded() -> None:
    samples = synthetic_samples(groups=30, per_group=1, mixed=False)
    first = split_by_group(samples, 0.2, 0.2, seed=7)
    assert split_by_group(samples, 0.2, 0.2, seed=7) == first
    assert split_by_group(samples, 0.2, 0.2, seed=8).test != first.test


def test_small_strata_still_reach_val_and_test() -> None:
    split = split_by_group(synthetic_samples(groups=6, per_group=1, mixed=False), 0.1, 0.1, seed=0)
    for part in (split.val, split.test):
        assert {s.label for s in part} == {REAL, FAKE}


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (-0.1, 0.2), (0.2, 1.0)])
def test_split_rejects_bad_fractions(fractions: tuple[float, float]) -> None:
    with pytest.raises(ValueError):
        split_by_group(synthetic_samples(4, 1, False), *fractions, seed=0)


def test_subsample_keeps_label_proportions_and_is_seeded() -> None:
    samples = synthetic_samples(groups=100, per_group=1, mixed=False)
    chosen = subsample(samples, 10, seed=0)
    assert Counter(s.label for s in chosen) == {REAL: 5, FAKE: 5}
    assert subsample(samples, 10, seed=0) == chosen
    assert subsample(samples, 1000, seed=0) == samples


def test_load_crops_detects_faces_and_counts_misses(tmp_path: Path) -> None:
    write_rgb(tmp_path / "face.jpg", face_photo())
    blank = np.full((100, 60, 3), 128, dtype=np.uint8)
    write_rgb(tmp_path / "blank.png", blank)
    samples = [Sample(tmp_path / "face.jpg", REAL, "a"), Sample(tmp_path / "blank.png", FAKE, "b")]
    with FaceDetector() as detector:
        crops = load_crops(samples, CropSpec(size=48, margin=0.25), detector)
    assert crops.images.shape == (2, 48, 48, 3) and crops.images.dtype == np.uint8
    assert crops.labels.tolist() == [REAL, FAKE]
    assert crops.no_face == 1
    # the whole 60x100 image, squared (black bands left and right) and unpadded above and below
    assert crops.images[1, 24, 24].tolist() == [128, 128, 128]
    assert crops.images[1, 24, 0].tolist() == [0, 0, 0]
    assert crops.images[1, 0, 24].tolist() == [128, 128, 128]


def test_load_crops_rejects_unreadable_image(tmp_path: Path) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with FaceDetector() as detector, pytest.raises(InputError, match="broken.jpg"):
        load_crops([Sample(tmp_path / "broken.jpg", REAL, "a")], CropSpec(size=32), detector)


@pytest.mark.shared_data
def test_read_ciplab_on_shared_data(shared_data: Path) -> None:
    samples = read_ciplab(shared_data / "faces" / "ciplab-real-and-fake")
    assert Counter(s.difficulty for s in samples) == {"real": 1081, "easy": 240, "mid": 480, "hard": 240}


def test_source_group_keeps_the_words_of_a_file_name() -> None:
    assert source_group(Path("0_0_aidai_0014.jpg")) == "aidai"
    assert source_group(Path("a-smile-2127788_1280.jpg")) == "a-smile"
    assert source_group(Path("Portrait-Woman-99.png")) == "portrait-woman"
    assert source_group(Path("0173.jpg")) == "0173"  # numbers only: its own group


def test_read_real_folder_tags_by_folder_and_rejects_empty(tmp_path: Path) -> None:
    folder = tmp_path / "portraits"
    folder.mkdir()
    for name in ("man-1_640.jpg", "man-2_640.jpg", "woman-7.jpg"):
        cv2.imwrite(str(folder / name), np.zeros((8, 8, 3), np.uint8))
    samples = read_real_folder(folder)
    assert {s.label for s in samples} == {0} and {s.difficulty for s in samples} == {"portraits"}
    assert [s.group for s in samples] == ["portraits/man", "portraits/man", "portraits/woman"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        read_real_folder(tmp_path / "empty")


@pytest.mark.shared_data
def test_split_of_shared_reals_keeps_every_source_photo_group_on_one_side(shared_data: Path) -> None:
    faces = shared_data / "faces"
    samples = read_ciplab(faces / "ciplab-real-and-fake")
    for folder in ("pixabay-portraits", "face-mask-detection-without-mask"):
        samples += read_real_folder(faces / folder)
    split = split_by_group(samples, 0.15, 0.2, seed=0)
    sides = [{s.group for s in part} for part in (split.train, split.val, split.test)]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    paths = [{s.path for s in part} for part in (split.train, split.val, split.test)]
    assert sum(map(len, paths)) == len(samples)
    for part in (split.val, split.test):  # every source is held out in part
        assert {s.difficulty for s in part if s.label == 0} >= {"real", "pixabay-portraits"}
