"""What a training run shows in TensorBoard beside its scalar curves: every epoch, grids of synthesised fakes with
their masks, and the model's scores on a fixed validation batch, so a reader sees what the model learns from and
how its judgement of the same faces moves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tensorflow as tf

from training import sbi
from training.prepare import PreparedData
from training.synth.examples import grid as tile_grid

EXAMPLES_PER_KIND = 4
SCORED_CROPS = 16
GRID_COLUMNS = 8
EXAMPLE_SEED = 4_000_037
WHITE, BLACK = (255, 255, 255), (0, 0, 0)


def _mask_rgb(mask: np.ndarray) -> np.ndarray:
    return np.repeat(np.clip(mask * 255.0, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def _with_score(crop: np.ndarray, label: int, score: float) -> np.ndarray:
    """The crop with "R 0.12" or "F 0.97" (true label, model score) written on it."""
    out = np.ascontiguousarray(crop.copy())
    scale = max(crop.shape[0] / 128.0, 0.3) * 0.45
    text = f"{'F' if label else 'R'} {score:.2f}"
    for colour, width in ((BLACK, 3), (WHITE, 1)):
        cv2.putText(out, text, (3, out.shape[0] - 5), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, width)
    return out


class SyntheticExamples(tf.keras.callbacks.Callback):
    """Writes `synthetic/<kind>` (rows of real, fake, mask) and `validation_scores` image summaries each epoch."""

    def __init__(self, log_dir: Path, data: PreparedData, recipe: dict[str, Any], seed: int) -> None:
        super().__init__()
        self._writer = tf.summary.create_file_writer(str(Path(log_dir) / "images"))
        self._grids = self._synthetic_grids(data, tuple(recipe), seed)
        val = data.parts["val"].crops
        chosen = np.random.default_rng(seed).permutation(len(val.images))[:SCORED_CROPS]
        self._val_images, self._val_labels = val.images[np.sort(chosen)], val.labels[np.sort(chosen)]

    @staticmethod
    def _synthetic_grids(data: PreparedData, kinds: tuple[str, ...], seed: int) -> dict[str, np.ndarray]:
        pool = data.pool
        grids: dict[str, np.ndarray] = {}
        if not len(pool.images):
            return grids
        for kind in kinds:
            tiles: list[np.ndarray] = []
            for example in range(min(EXAMPLES_PER_KIND, len(pool.images))):
                rng = sbi.seeded_rng(seed + EXAMPLE_SEED, example)
                index = int(rng.integers(len(pool.images)))
                fake, mask = pool.fake(index, kind, rng)
                tiles += [pool.images[index], fake, _mask_rgb(mask)]
            grids[kind] = tile_grid(tiles, columns=3)
        return grids

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        scores = np.asarray(self.model.predict(self._val_images.astype(np.float32), verbose=0)).reshape(-1)
        scored = [
            _with_score(crop, int(label), float(score))
            for crop, label, score in zip(self._val_images, self._val_labels, scores, strict=True)
        ]
        with self._writer.as_default(step=epoch + 1):
            for kind, grid in self._grids.items():
                tf.summary.image(f"synthetic/{kind}", grid[None], description="real | fake | mask")
            tf.summary.image(
                "validation_scores",
                tile_grid(scored, columns=GRID_COLUMNS)[None],
                description="fixed validation crops: true label (R/F) and the model's score",
            )
        self._writer.flush()
