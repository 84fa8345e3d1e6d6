"""Cross-correlations of denoiser outputs and residuals across time (Inflationary Flows
calc_net_residuals_autocorrelations.py, App. C.1).

Extraction (reference `extract` / `extracttoys`): one fixed set of clean data x; at every time
t, fresh noise x̃ = x + B·(σ(t) ⊙ ε), ε ~ N(0, I) (IF: σ = √γ(t) in the eigenbasis B = W), the
network's denoised estimate D(x̃, t), and its residual D(x̃, t) − x (output minus the clean data
it should recover, in data coordinates).

Correlation (reference `calc` / `calctoys`): for values v (N, T, D), with per-time, per-dim mean
μ_t and standard deviation σ_t over the N samples (denominator N),

    C[t, i, j] = mean_n (v[n, s, i] − μ_s,i)(v[n, t, j] − μ_t,j) / (σ_s,i · σ_t,j)

against the reference time s (the reference uses s = 0, the first time). The reference code
divides by σ_s,j·σ_t,j (numpy broadcasting), which agrees on the diagonal i = j only; here each
factor takes its own index. Output keys follow the reference's npz files: `net_outputs`,
`net_residuals` (extraction; stored there time-major, (T, N, D), here (N, T, D)) and
`net_output_acs`, `net_residual_acs` (correlations; the README calls the latter
`net_residuals_acs`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from rich.progress import track
from torch import Tensor


@torch.no_grad()
def extract_outputs(denoise: Callable[[Tensor, Tensor], Tensor], data: Tensor,
                    times: Sequence[float] | Tensor, noise_std: Callable[[Tensor], Tensor],
                    basis: Tensor | None = None, batch_size: int | None = None,
                    generator: torch.Generator | None = None, progress: bool = True
                    ) -> dict[str, Tensor]:
    """Denoiser outputs and residuals of `data` (N, *S) at each of `times` (T,).

    At time t each example gets fresh noise x̃ = x + reshape(B·(σ(t) ⊙ ε)), with
    σ(t) = `noise_std(t)` for t of shape (b,) returning (b, D) or (D,) standard deviations in
    the coordinates of `basis` B (D, D) (columns; None = identity, i.e. data coordinates), and
    the denoiser is called as `denoise(x̃, t)` with t (b,) in the data's dtype/device.
    Returns {"net_outputs": D(x̃, t), "net_residuals": D(x̃, t) − x} both (N, T, D) on the CPU,
    and "times" (T,).
    """
    times = torch.as_tensor(times, dtype=data.dtype, device=data.device).reshape(-1)
    n, batch_size = len(data), batch_size or len(data)
    outputs = []
    for t in track(times, description="denoiser outputs", disable=not progress):
        per_time = []
        for x in data.split(batch_size):
            tb = t.expand(len(x))
            eps = torch.randn(len(x), x[0].numel(), generator=generator, dtype=x.dtype,
                              device=x.device)
            noise = noise_std(tb) * eps
            noise = noise if basis is None else noise @ basis.to(noise).T
            per_time.append(denoise(x + noise.reshape(x.shape), tb).reshape(len(x), -1).cpu())
        outputs.append(torch.cat(per_time))
    outputs = torch.stack(outputs, dim=1)  # (N, T, D)
    residuals = outputs - data.reshape(n, 1, -1).to(outputs)
    return {"net_outputs": outputs, "net_residuals": residuals, "times": times.cpu()}


def cross_correlations(values: Tensor, reference: int | None = 0) -> Tensor:
    """Correlation of each dimension at time `reference` with each dimension at every time,
    (T, D, D) for values (N, T, D); `reference=None`: every pair of times, (T, T, D, D).
    Means and standard deviations per time and dimension over N (denominator N), float64;
    a constant series (σ = 0) gives nan."""
    if values.ndim != 3:
        raise ValueError(f"values must be (N, T, D), got shape {tuple(values.shape)}")
    v = values.double()
    z = (v - v.mean(0)) / v.std(0, correction=0)
    if reference is None:
        return torch.einsum("nsi,ntj->stij", z, z) / len(z)
    return torch.einsum("ni,ntj->tij", z[:, reference], z) / len(z)


def autocorrelations(extracted: dict[str, Tensor], reference: int | None = 0
                     ) -> dict[str, Tensor]:
    """{"net_output_acs", "net_residual_acs"}: `cross_correlations` of the outputs and
    residuals of `extract_outputs` (the reference's output npz; save with `np.savez`)."""
    return {
        "net_output_acs": cross_correlations(extracted["net_outputs"], reference),
        "net_residual_acs": cross_correlations(extracted["net_residuals"], reference),
    }
