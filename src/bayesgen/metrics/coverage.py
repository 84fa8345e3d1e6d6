"""Toy coverage experiment of Inflationary Flows (run_toy_alphashape_mesh_exps.py, App. C).

Is the map calibrated? In latent space take test points z ~ N(0, diag σ²) and, for each radius
r, a shell of boundary points on the Mahalanobis sphere {z : ‖z/σ‖ = r} (directions uniform,
as the reference draws them). The fraction of test points inside the region the shell bounds is
P(χ²_d ≤ r²). Push test and boundary points through generation (`decode`) and back (`encode`);
a neighbourhood-preserving, invertible map keeps every fraction. The region is the alpha shape
of the shell: 2-D `alphashape.alphashape(points, 0.005)` tested with shapely (as the reference),
3-D the alpha mesh with circumradius < 10 (the reference's open3d `alpha=10`; here
`alphashape` with alpha = 1/10) tested with trimesh, or the convex hull when the mesh is convex.

Spaces, with the names of the reference's output files `{data}_{schedule}_{n}lssamples_
{name}_coverages.txt`: "init_ls" (latent, before generation), "ds" (data, after generation),
"ls_end_rdtrp" (latent, after generation and inflation back).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import ConvexHull
from scipy.stats import chi2
from torch import Tensor

RADII = np.linspace(0.5, 3.5, 7)
ALPHA_2D = 0.005  # alphashape's alpha = 1 / circumradius: triangles up to radius 200 (reference)
ALPHA_3D = 0.1  # open3d alpha = 10 (circumradius < 10) in alphashape's convention
SPACES = {"latent": "init_ls", "data": "ds", "roundtrip": "ls_end_rdtrp"}


def expected_coverage(radii: Sequence[float] | np.ndarray, dim: int) -> np.ndarray:
    """P(‖z/σ‖ ≤ r) = χ²_d CDF at r², z ~ N(0, diag σ²) in d dims."""
    return chi2.cdf(np.asarray(radii, dtype=np.float64) ** 2, dim)


def boundary_points(radii: Sequence[float] | np.ndarray, n_boundary: int, latent_std: Tensor,
                    generator: torch.Generator | None = None) -> Tensor:
    """Shells of `n_boundary` points r·σ⊙u, u uniform on the unit sphere, one per radius,
    stacked radius by radius: (len(radii)·n_boundary, d), dtype/device of `latent_std`."""
    d = latent_std.shape[0]
    u = torch.randn(len(radii), n_boundary, d, generator=generator, dtype=latent_std.dtype,
                    device=latent_std.device)
    u = u / torch.linalg.vector_norm(u, dim=-1, keepdim=True)
    r = torch.as_tensor(np.asarray(radii), dtype=latent_std.dtype, device=latent_std.device)
    return (r[:, None, None] * latent_std * u).reshape(-1, d)


def inside(boundary: np.ndarray, points: np.ndarray, alpha: float | None = None) -> np.ndarray:
    """Whether each point (m, d) lies inside the alpha shape of `boundary` (n, d), d = 2 or 3.
    `alpha` is alphashape's (1/circumradius; default 0.005 in 2-D, 0.1 in 3-D; 0 = convex
    hull). Points on the boundary count as outside."""
    from bayesgen.extras import require

    alphashape = require("alphashape", "metrics", "the coverage experiment")
    shapely = require("shapely", "metrics", "the coverage experiment")

    def alpha_shape(points, alpha):
        with warnings.catch_warnings():  # alphashape builds np.matrix objects
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            return alphashape.alphashape(points, alpha)

    boundary, points = np.asarray(boundary, np.float64), np.asarray(points, np.float64)
    d = boundary.shape[1]
    if d == 2:
        shape = alpha_shape(boundary, ALPHA_2D if alpha is None else alpha)
        return shapely.contains_xy(shape, points[:, 0], points[:, 1])
    if d != 3:
        raise ValueError(f"coverage needs 2-D or 3-D points, got {d}-D")
    alpha = ALPHA_3D if alpha is None else alpha
    if alpha > 0:
        trimesh = require("trimesh", "metrics", "3-D coverage")
        mesh = alpha_shape(boundary, alpha)
        if not isinstance(mesh, trimesh.Trimesh) or not mesh.is_watertight:
            raise ValueError(
                f"the alpha mesh (alpha={alpha}) of the shell is not watertight, so inside and "
                "outside are undefined; use a smaller alpha (0 = convex hull) or more points"
            )
        if not mesh.is_convex:
            return mesh.contains(points)
        boundary = np.asarray(mesh.vertices)
    hull = ConvexHull(boundary)  # inside: every facet's outward equation a·p + b < 0
    return np.all(points @ hull.equations[:, :-1].T + hull.equations[:, -1] < 0, axis=1)


@dataclass
class Coverage:
    """Result of `coverage_experiment`.

    `total_in[space]` (R,): test points inside each radius' shell; `points[space]`
    (n_test + R·n_boundary, d): test points, then the shells radius by radius; spaces
    "latent", "data", "roundtrip" (see `SPACES` for the reference's names).
    """

    radii: np.ndarray
    n_test: int
    n_boundary: int
    total_in: dict[str, np.ndarray]
    points: dict[str, np.ndarray]
    expected: np.ndarray

    def fraction(self, space: str) -> np.ndarray:
        """Fraction of test points inside each shell (R,)."""
        return self.total_in[space] / self.n_test

    def to_reference(self) -> dict[str, dict[float, dict[str, float]]]:
        """The reference's records: {"init_ls" | "ds" | "ls_end_rdtrp": {radius: {total_in,
        total_out, percent_in, percent_out}}}, percentages in %."""
        out = {}
        for space, name in SPACES.items():
            out[name] = {
                float(r): {
                    "total_in": int(n_in),
                    "total_out": int(self.n_test - n_in),
                    "percent_in": 100 * float(n_in) / self.n_test,
                    "percent_out": 100 * float(self.n_test - n_in) / self.n_test,
                }
                for r, n_in in zip(self.radii, self.total_in[space], strict=True)
            }
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """JSON of `to_reference()` plus "expected": {radius: χ² CDF}."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = self.to_reference()
        record["expected"] = {float(r): float(p) for r, p in zip(self.radii, self.expected,
                                                                   strict=True)}
        path.write_text(json.dumps(record, indent=2))
        return path


@torch.no_grad()
def coverage_experiment(encode: Callable[[Tensor], Tensor], decode: Callable[[Tensor], Tensor],
                        dim: int, n_test: int = 20000, n_boundary: int = 200,
                        radii: Sequence[float] | np.ndarray = RADII,
                        latent_std: Tensor | None = None, alpha: float | None = None,
                        generator: torch.Generator | None = None,
                        dtype: torch.dtype = torch.float32, device=None) -> Coverage:
    """Coverage of latent Mahalanobis shells in latent, data and roundtrip space.

    Latent test points z ~ N(0, diag σ²) (σ = `latent_std`, default ones; PRR flows:
    √eps in the compressed dims) and shells at `radii` (scaled by σ) are decoded in one batch,
    x = decode(z), and encoded back, z' = encode(x). For each radius and space, counts the
    test points inside the alpha shape of the shell's points (`inside`). In latent space the
    expected fraction is `expected_coverage(radii, dim)`.
    """
    std = torch.ones(dim, dtype=dtype, device=device) if latent_std is None else (
        torch.as_tensor(latent_std, dtype=dtype, device=device))
    if std.shape != (dim,):
        raise ValueError(f"latent_std must have shape ({dim},), got {tuple(std.shape)}")
    z_test = std * torch.randn(n_test, dim, generator=generator, dtype=dtype, device=device)
    z = torch.cat([z_test, boundary_points(radii, n_boundary, std, generator)])
    x = decode(z)
    z_back = encode(x)
    points = {
        space: v.reshape(len(z), -1).double().cpu().numpy()
        for space, v in (("latent", z), ("data", x), ("roundtrip", z_back))
    }
    radii = np.asarray(radii, dtype=np.float64)
    total_in = {}
    for space, p in points.items():
        test, shells = p[:n_test], p[n_test:].reshape(len(radii), n_boundary, -1)
        total_in[space] = np.array([inside(shell, test, alpha).sum() for shell in shells])
    return Coverage(radii, n_test, n_boundary, total_in, points, expected_coverage(radii, dim))
