"""The held-out clips: only photos of the recorded run's test split, reals and the data set's own fakes apart,
and clips of the length asked for."""

from __future__ import annotations

import argparse
from pathlib import Path

import av
import pytest
from face_photos import face_photo, write_rgb

from training.data import FAKE, REAL
from training.heldout_clips import HEIGHT, WIDTH, folder_photos, heldout_photos, write_clip
from training.prepare import read_samples, split_samples

ARGUMENTS = {"format": "ciplab", "val_fraction": 0.2, "test_fraction": 0.3, "seed": 0}


def test_heldout_photos_are_the_test_split_by_kind_and_origin(ciplab_root: Path, tmp_path: Path) -> None:
    extra = tmp_path / "portraits"
    for index in range(6):
        write_rgb(extra / f"{('man', 'woman', 'child')[index % 3]}-{index}_1280.jpg", face_photo(index))
    arguments = {**ARGUMENTS, "data": str(ciplab_root), "extra_reals": [str(extra)]}
    clips = heldout_photos(arguments)

    args = argparse.Namespace(synthetic=0.0, frames_per_video=1, max_images=None, reviewed=[], **arguments)
    args.data, args.extra_reals = ciplab_root, [extra]
    test = {sample.path for sample in split_samples(args).test}
    assert set(clips) == {"heldout-data", "heldout-fakes-data", "heldout-portraits"}
    assert all(sample.path in test for samples in clips.values() for sample in samples)
    assert {sample.label for sample in clips["heldout-data"] + clips["heldout-portraits"]} == {REAL}
    assert {sample.label for sample in clips["heldout-fakes-data"]} == {FAKE}
    assert all(sample.path.parent == extra for sample in clips["heldout-portraits"])
    assert len(read_samples(args)) > sum(len(samples) for samples in clips.values()), (
        "training photos left out"
    )


def test_clip_has_the_frames_asked_for_at_camera_size(tmp_path: Path) -> None:
    for index in range(2):
        write_rgb(tmp_path / "photos" / f"p{index}.jpg", face_photo(index))
    photos = folder_photos(tmp_path / "photos")
    assert [photo.path.name for photo in photos] == ["p0.jpg", "p1.jpg"]
    path = tmp_path / "clip.mp4"
    assert write_clip(photos, path, frames_per_photo=4) == 8
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 8 and {(frame.width, frame.height) for frame in frames} == {(WIDTH, HEIGHT)}


def test_a_folder_without_photos_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no images in"):
        folder_photos(tmp_path)
