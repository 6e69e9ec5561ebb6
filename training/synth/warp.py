"""Landmark-driven warps: least-squares similarity or affine fits, and a piecewise-affine map over FaceMesh's
own triangles, from donor crop pixels to target crop pixels.

The triangles are FaceMesh's tessellation (its eye and mouth openings closed by fans), not a Delaunay
triangulation of the points: on a turned face, Delaunay joins points of different mesh rows that are close in
the image, and the warp then tears the donor into speckles.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import cv2
import mediapipe as mp
import numpy as np

SUBPIXEL_BITS = 4  # triangles are drawn with 1/16 px precision
# The maps are median-filtered, then blurred (px), to smooth where triangles fold over on a turned face and
# the step from the mesh to the global fit at its outline.
MAP_MEDIAN = 5
MAP_SIGMA = 1.0


def _mesh_triangles() -> np.ndarray:
    """(T, 3) landmark indices: the tessellation's triangles and fans over its inner holes (eyes, mouth)."""
    edges = {tuple(sorted(edge)) for edge in mp.solutions.face_mesh.FACEMESH_TESSELATION}
    neighbours: dict[int, set[int]] = defaultdict(set)
    for a, b in edges:
        neighbours[a].add(b)
        neighbours[b].add(a)
    cliques = {tuple(sorted((a, b, c))) for a, b in edges for c in neighbours[a] & neighbours[b]}
    uses = Counter(edge for tri in cliques for edge in ((tri[0], tri[1]), (tri[1], tri[2]), (tri[0], tri[2])))
    # a triangle of edges that each border three triangles is a 3-cycle around real triangles, not one itself
    triangles = [t for t in cliques if min(uses[(t[0], t[1])], uses[(t[1], t[2])], uses[(t[0], t[2])]) < 3]
    border: dict[int, set[int]] = defaultdict(set)
    for edge, count in uses.items():
        if count == 1:
            border[edge[0]].add(edge[1])
            border[edge[1]].add(edge[0])
    loops, unvisited = [], set(border)
    while unvisited:
        loop = [min(unvisited)]
        unvisited.discard(loop[0])
        while following := sorted(border[loop[-1]] & unvisited):
            loop.append(following[0])
            unvisited.discard(following[0])
        loops.append(loop)
    for loop in sorted(loops, key=len)[:-1]:  # the longest loop is the face's outline
        triangles += [(loop[0], loop[i], loop[i + 1]) for i in range(1, len(loop) - 1)]
    return np.array(sorted(triangles), dtype=np.int64)


TRIANGLES = _mesh_triangles()


def fit(source: np.ndarray, target: np.ndarray, similarity: bool) -> np.ndarray:
    """The 2x3 map taking (K, 2) `source` points closest to `target` in least squares: a similarity (Umeyama:
    rotation, uniform scale, move) or a full affine map."""
    if not similarity:
        ones = np.ones((len(source), 1))
        solution, *_ = np.linalg.lstsq(np.hstack([source, ones]), target, rcond=None)
        return solution.T
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    centred_source, centred_target = source - source_mean, target - target_mean
    u, singular, vt = np.linalg.svd(centred_target.T @ centred_source / len(source))
    reflect = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt))])
    rotation = u @ reflect @ vt
    scale = np.trace(np.diag(singular) @ reflect) / max((centred_source**2).sum() / len(source), 1e-12)
    move = target_mean - scale * rotation @ source_mean
    return np.hstack([scale * rotation, move[:, None]])


def piecewise_affine_maps(target: np.ndarray, donor: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """`cv2.remap` maps (side, side) float32 x and y that take donor pixels to the target crop so that each
    donor landmark lands on the target's: affine inside each mesh triangle, the global affine fit outside.

    Triangles that face the other way in the target than in the donor (folded in one of them, on a turned
    face) are drawn first, so that consistent triangles cover them; the maps are then smoothed (MAP_MEDIAN,
    MAP_SIGMA).
    """
    inverse = fit(target, donor, similarity=False)
    grid_x, grid_y = np.meshgrid(np.arange(side, dtype=np.float64), np.arange(side, dtype=np.float64))
    pixels = np.stack([grid_x, grid_y], axis=-1)  # (side, side, 2)
    coordinates = pixels @ inverse[:, :2].T + inverse[:, 2]  # donor x, y
    corners, donor_corners = target[TRIANGLES], donor[TRIANGLES]  # (T, 3, 2)
    edges, donor_edges = corners[:, 1:] - corners[:, :1], donor_corners[:, 1:] - donor_corners[:, :1]
    turn, donor_turn = (e[:, 0, 0] * e[:, 1, 1] - e[:, 0, 1] * e[:, 1, 0] for e in (edges, donor_edges))
    usable = np.flatnonzero(np.abs(turn) > 1e-6)  # twice the signed area
    folded = np.sign(turn[usable]) != np.sign(donor_turn[usable])
    order = np.concatenate([usable[folded], usable[~folded]])
    # per triangle, donor = origin + (pixel - corner 0) @ linear, with linear = inverse(edges) @ donor edges
    a, b, c, d = (edges[order, i, j] for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)))
    inverse_edges = np.stack([np.stack([d, -b], -1), np.stack([-c, a], -1)], -2) / turn[order, None, None]
    linear = inverse_edges @ donor_edges[order]
    index = np.full((side, side), -1, dtype=np.int32)
    outlines = np.round(corners[order] * (1 << SUBPIXEL_BITS)).astype(np.int32)
    for number, outline in enumerate(outlines):
        cv2.fillConvexPoly(index, outline, (number,), cv2.LINE_8, SUBPIXEL_BITS)
    covered = index >= 0
    triangle = index[covered]
    offsets = (pixels[covered] - corners[order][triangle, 0])[:, None, :]
    coordinates[covered] = donor_corners[order][triangle, 0] + (offsets @ linear[triangle])[:, 0]
    map_x, map_y = (
        cv2.GaussianBlur(
            cv2.medianBlur(coordinates[..., axis].astype(np.float32), MAP_MEDIAN), (0, 0), MAP_SIGMA
        )
        for axis in (0, 1)
    )
    return map_x, map_y


def warp_maps(image: np.ndarray, maps: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """`image` remapped by `piecewise_affine_maps`, bilinear, reflected at its borders."""
    return cv2.remap(image, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
