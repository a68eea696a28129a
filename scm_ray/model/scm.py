"""Spatial Calibration Module: a stack of Activation Diffusion Blocks (DESIGN section 2).

Each block diffuses the attention map F (B, N) over the 4-connected patch graph, weighted by the
semantic similarity of the patch tokens of S (B, C, H, W), through a Newton-Schulz approximation
of M^-1, filters the result and gates S with it. The module is used in training only.

Two implementations of the same function of (S, F, lambda, beta):
- "dense": the straightforward algorithm (dense E, dense M, X_{k+1} = X_k (2I - M X_k)).
- "fast": the same polynomial rearranged. With R_k = I - M X_k one has X_{k+1} = X_k (I + R_k)
  and R_{k+1} = R_k^2 for any M and X_0 (no commutation needed), so
      X_p^T F = (I + R'_{p-1}) ... (I + R'_0) X_0^T F,  R'_0 = I - X_0^T M,  R'_{k+1} = R'_k^2.
  That is one matrix product per iteration instead of two, matrix-vector products for the rest,
  and M built from neighbour similarities only (M has at most 5 non-zeros per row) instead of a
  dense N x N cosine-similarity product. Because the identity holds for independent M and X_0,
  the gradients (X_0 detached) are those of the dense algorithm, not just the values.

Numerical safety (see README, "Numerical safety"): Newton-Schulz from X_0 = alpha M^T converges
only while alpha * sigma_max(M)^2 < 2. Each image's alpha is capped at 1 / r^2, r the Gershgorin
bound max_i sum_j |M_ij| >= sigma_max, which never fires at the reference settings (r <= 8 at
lambda = 1). beta is clamped to >= BETA_MIN and min-max of a constant map is 0, not NaN. Every
intervention is counted in the non-persistent buffers `guard_alpha` / `guard_beta` /
`guard_nonfinite`, which the training loop reads, reports and resets.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

BETA_MIN = 1e-4
EPS = 1e-12


@lru_cache(maxsize=16)
def _grid_laplacian_cpu(height: int, width: int) -> torch.Tensor:
    n = height * width
    idx = torch.arange(n).view(height, width)
    adj = torch.zeros(n, n)
    right = (idx[:, :-1].reshape(-1), idx[:, 1:].reshape(-1))
    down = (idx[:-1, :].reshape(-1), idx[1:, :].reshape(-1))
    for a, b in (right, down):
        adj[a, b] = 1.0
        adj[b, a] = 1.0
    return torch.diag(adj.sum(1)) - adj  # (N, N)


def grid_laplacian(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Lap = D - A of the 4-connected height x width grid (no self loops), row-major nodes."""
    return _grid_laplacian_cpu(height, width).to(device=device, dtype=dtype)


def minmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Per-slice min-max to [0, 1]; a constant slice maps to 0 (not NaN)."""
    lo = x.amin(dim=dim, keepdim=True)
    hi = x.amax(dim=dim, keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(EPS)


def newton_schulz_dense(m: torch.Tensor, alpha: torch.Tensor, steps: int) -> torch.Tensor:
    """X_p with X_0 = alpha M^T (no gradient), X_{k+1} = X_k (2I - M X_k). m (B, N, N)."""
    x = alpha * m.detach().transpose(1, 2)  # (B, N, N)
    two_eye = 2.0 * torch.eye(m.shape[-1], device=m.device, dtype=m.dtype)
    for _ in range(steps):
        x = x @ (two_eye - m @ x)  # (B, N, N)
    return x


class ActivationDiffusionBlock(nn.Module):
    """One ADB with its learnable scalars `lam` (similarity scale) and `beta` (filter width)."""

    def __init__(self, iterations: int, alpha: float, lambda_init: float, beta_init: float,
                 implementation: str = "fast"):
        super().__init__()
        if implementation not in ("fast", "dense"):
            raise ValueError(f"implementation must be 'fast' or 'dense', got {implementation!r}")
        self.iterations = int(iterations)
        self.alpha = float(alpha)
        self.implementation = implementation
        self.lam = nn.Parameter(torch.full((1,), float(lambda_init)))
        self.beta = nn.Parameter(torch.full((1,), float(beta_init)))

    def extra_repr(self) -> str:
        return f"iterations={self.iterations}, alpha={self.alpha}, impl={self.implementation}"

    def forward(
        self, s: torch.Tensor, f: torch.Tensor, lap: torch.Tensor, guards: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """s (B, C, H, W), f (B, N), lap (N, N); guards (3,) counters updated in place."""
        B, C, H, W = s.shape
        sn = F.normalize(s.flatten(2), dim=1, eps=EPS)  # (B, C, N) unit vectors along C
        if self.implementation == "dense":
            e = sn.transpose(1, 2) @ sn  # (B, N, N) cosine similarity
            m = lap * (self.lam * e - 1.0)  # (B, N, N) elementwise, symmetric
        else:
            m = self._stencil_matrix(sn, lap, H, W)  # (B, N, N)
        alpha = self._safe_alpha(m, guards)  # (B, 1, 1)
        if self.implementation == "dense":
            x = newton_schulz_dense(m, alpha, self.iterations)  # (B, N, N)
            fd = (x.transpose(1, 2) @ f.unsqueeze(-1)).squeeze(-1)  # (B, N)
        else:
            fd = _newton_schulz_apply(m, alpha, f, self.iterations)  # (B, N)
        beta = self.beta.clamp_min(BETA_MIN)
        guards[1] += (self.beta.detach() < BETA_MIN).sum()
        scale = beta * f.amax(dim=1, keepdim=True).clamp_min(EPS)  # (B, 1)
        t = F.tanhshrink(fd / scale)  # (B, N)
        t = minmax(t)  # (B, N)
        bad = ~torch.isfinite(t).all(dim=1, keepdim=True)  # (B, 1)
        guards[2] += bad.sum()
        t = torch.where(bad, torch.zeros_like(t), t)  # a non-finite image passes unchanged
        f = f + t  # (B, N)
        s = s * (1.0 + t.view(B, 1, H, W))  # (B, C, H, W)
        return s, f

    def _stencil_matrix(self, sn: torch.Tensor, lap: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """M = Lap * (lam E - 1) from the similarities of grid neighbours only (O(N C), not N^2 C).

        The diagonal uses E_ii = |sn_i|^2 (1 for any non-zero token), exactly as the dense form.
        """
        B, C, N = sn.shape
        grid = sn.view(B, C, H, W)
        e_right = (grid[..., :, :-1] * grid[..., :, 1:]).sum(1)  # (B, H, W-1)
        e_down = (grid[..., :-1, :] * grid[..., 1:, :]).sum(1)  # (B, H-1, W)
        e_self = (sn * sn).sum(1)  # (B, N)
        deg = lap.diagonal()  # (N,)
        idx = torch.arange(N, device=sn.device).view(H, W)
        m = torch.diag_embed(deg * (self.lam * e_self - 1.0))  # (B, N, N)
        flat = m.view(B, N * N)
        for e, a, b in (
            (e_right, idx[:, :-1], idx[:, 1:]),
            (e_down, idx[:-1, :], idx[1:, :]),
        ):
            w = (1.0 - self.lam * e).reshape(B, -1)  # (B, edges)
            a, b = a.reshape(-1), b.reshape(-1)
            flat = flat.index_put((torch.arange(B, device=sn.device)[:, None], (a * N + b)[None]), w)
            flat = flat.index_put((torch.arange(B, device=sn.device)[:, None], (b * N + a)[None]), w)
        return flat.view(B, N, N)

    def _safe_alpha(self, m: torch.Tensor, guards: torch.Tensor) -> torch.Tensor:
        """Per-image alpha, capped where Newton-Schulz could diverge (Gershgorin bound)."""
        with torch.no_grad():
            r = m.abs().sum(-1).amax(-1)  # (B,) >= sigma_max(M) for symmetric M
            cap = 1.0 / (r * r).clamp_min(EPS)  # alpha * r^2 <= 1 < 2
            capped = self.alpha * r * r >= 2.0
            guards[0] += capped.sum()
            alpha = torch.where(capped, cap, torch.full_like(cap, self.alpha))
        return alpha.view(-1, 1, 1)


def _newton_schulz_apply(
    m: torch.Tensor, alpha: torch.Tensor, f: torch.Tensor, steps: int
) -> torch.Tensor:
    """X_p^T f by the R-recursion (module docstring): p products and p + 1 matrix-vector ones."""
    x0t = alpha * m.detach()  # (B, N, N) = X_0^T (M symmetric)
    g = (x0t @ f.unsqueeze(-1))  # (B, N, 1) = X_0^T f
    if steps == 0:
        return g.squeeze(-1)
    eye = torch.eye(m.shape[-1], device=m.device, dtype=m.dtype)
    r = eye - x0t @ m  # (B, N, N) = R'_0
    for k in range(steps):
        g = g + r @ g  # (B, N, 1)
        if k + 1 < steps:
            r = r @ r  # (B, N, N) = R'_{k+1}
    return g.squeeze(-1)


class SpatialCalibration(nn.Module):
    """The SCM: `num_blocks` ADBs applied in sequence to (S, F). num_blocks=0 is the identity."""

    def __init__(
        self,
        num_blocks: int,
        alpha: float = 0.002,
        iterations: Sequence[int] | int = (16, 4, 4, 4),
        lambda_init: float = 1.0,
        beta_init: float = 0.5,
        implementation: str = "fast",
    ):
        super().__init__()
        if num_blocks < 0:
            raise ValueError(f"num_blocks must be >= 0, got {num_blocks}")
        if isinstance(iterations, int):
            its = [iterations] * num_blocks
        else:
            its = list(iterations)
            if len(its) == 1:
                its = its * num_blocks
            if len(its) < num_blocks:
                raise ValueError(
                    f"iterations needs one count per block ({num_blocks}), got {list(iterations)}"
                )
        self.blocks = nn.ModuleList(
            ActivationDiffusionBlock(its[i], alpha, lambda_init, beta_init, implementation)
            for i in range(num_blocks)
        )
        # Guard counters: [alpha capped (images), beta clamped (blocks), non-finite (images)].
        self.register_buffer("guards", torch.zeros(3, dtype=torch.long), persistent=False)

    def forward(self, semantic: torch.Tensor, attention: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """semantic S (B, C, H, W), attention F (B, H*W) -> updated (S, F), float32."""
        if not self.blocks:
            return semantic, attention
        B, C, H, W = semantic.shape
        if attention.shape != (B, H * W):
            raise ValueError(f"attention must be (B, H*W) = {(B, H * W)}, got {tuple(attention.shape)}")
        # The diffusion runs in float32 even under bf16 autocast: E, M and the Newton-Schulz
        # products are not safe in bf16.
        with torch.autocast(device_type=semantic.device.type, enabled=False):
            dtype = torch.promote_types(semantic.dtype, torch.float32)
            s, f = semantic.to(dtype), attention.to(dtype)
            lap = grid_laplacian(H, W, device=s.device, dtype=s.dtype)
            for block in self.blocks:
                s, f = block(s, f, lap, self.guards)
        return s, f

    def pop_guard_counts(self) -> dict[str, int]:
        """Read and reset the guard counters (a host sync: call once per epoch or log step)."""
        alpha, beta, nonfinite = (int(v) for v in self.guards.tolist())
        self.guards.zero_()
        return {"alpha_capped": alpha, "beta_clamped": beta, "nonfinite": nonfinite}
