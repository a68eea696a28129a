"""Spatial Calibration Module: a stack of Activation Diffusion Blocks (DESIGN section 2).

Each block diffuses the attention map F (B, N) over the 4-connected patch graph, weighted by the
semantic similarity of the patch tokens of S (B, C, H, W), through a Newton-Schulz approximation
of M^-1, filters the result and gates S with it. The module is used in training only.

Two implementations of the same function of (S, F, lambda, beta):
- "dense": the straightforward algorithm (dense E, dense M, X_{k+1} = X_k (2I - M X_k)).
- "fast": the same polynomial rearranged. With R_k = I - M X_k one has X_{k+1} = X_k (I + R_k)
  and R_{k+1} = R_k^2 for any M and X_0 (no commutation needed), so
      X_p^T F = (I + R'_{p-1}) ... (I + R'_0) X_0^T F,  R'_0 = I - X_0^T M,  R'_{k+1} = R'_k^2.
  Only X_p^T F is ever needed, so the products act on vectors where they can:
  * p <= KRYLOV_MAX_STEPS (the reference's 4-step blocks): X_p^T F = sum_{j < 2^p} R'^j X_0^T F,
    2^p - 1 applications of R'_0 = I - alpha M M to a vector, no N x N product at all
    (KrylovDiffusion);
  * longer blocks (the 16-step first block): p - 1 dense squarings of R'_0, one matrix product
    per iteration instead of the dense algorithm's two (SquaringDiffusion).
  Both have hand-written backward passes (the adjoints of exactly those steps) that save nothing
  but M, the R'_k and a few vectors. M is built from neighbour similarities only (M has at most
  5 non-zeros per row), not from a dense N x N cosine-similarity product. Because the identity
  holds for independent M and X_0, the gradients (X_0 detached) are those of the dense
  algorithm, not just the values; the tests check both in float64.

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
from torch.autograd.function import once_differentiable

BETA_MIN = 1e-4
EPS = 1e-12


def _cached(builder, height: int, width: int) -> torch.Tensor:
    """A grid constant from its lru_cache in eager mode (built once per grid size); under
    torch.compile the builder itself is traced, so the graph holds the constant and Dynamo never
    sees the cache wrapper."""
    if torch.compiler.is_compiling():
        return builder.__wrapped__(height, width)
    return builder(height, width)


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
    return _cached(_grid_laplacian_cpu, height, width).to(device=device, dtype=dtype)


@lru_cache(maxsize=16)
def _grid_degree_cpu(height: int, width: int) -> torch.Tensor:
    rows, cols = torch.arange(height), torch.arange(width)
    vertical = (rows > 0).float() + (rows < height - 1).float()  # (H,)
    horizontal = (cols > 0).float() + (cols < width - 1).float()  # (W,)
    return (vertical[:, None] + horizontal[None, :]).flatten()  # (N,)


def grid_degree(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Node degrees of the 4-connected grid (the Laplacian's diagonal), (N,)."""
    return _cached(_grid_degree_cpu, height, width).to(device=device, dtype=dtype)


@lru_cache(maxsize=16)
def _band_positions_cpu(height: int, width: int) -> torch.Tensor:
    n = height * width
    idx = torch.arange(n).view(height, width)
    right_a, right_b = idx[:, :-1].flatten(), idx[:, 1:].flatten()
    down_a, down_b = idx[:-1, :].flatten(), idx[1:, :].flatten()
    return torch.cat([
        idx.flatten() * (n + 1),  # diagonal
        right_a * n + right_b, right_b * n + right_a,
        down_a * n + down_b, down_b * n + down_a,
    ])  # (nnz,)


def _band_positions(height: int, width: int, device) -> torch.Tensor:
    """Flat positions in an N x N matrix of M's non-zeros, in the order
    [diagonal, right edges (i, i+1), their mirrors, down edges (i, i+W), their mirrors]."""
    return _cached(_band_positions_cpu, height, width).to(device)


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
        self, s: torch.Tensor, f: torch.Tensor, lap: torch.Tensor | None, guards: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """s (B, C, H, W), f (B, N), lap (N, N) (dense only); guards (3,) updated in place."""
        B, C, H, W = s.shape
        sn = F.normalize(s.flatten(2), dim=1, eps=EPS)  # (B, C, N) unit vectors along C
        if self.implementation == "dense":
            e = sn.transpose(1, 2) @ sn  # (B, N, N) cosine similarity
            m = lap * (self.lam * e - 1.0)  # (B, N, N) elementwise, symmetric
            alpha = self._safe_alpha(m.detach().abs().sum(-1).amax(-1), guards)  # (B, 1, 1)
            x = newton_schulz_dense(m, alpha, self.iterations)  # (B, N, N)
            fd = (x.transpose(1, 2) @ f.unsqueeze(-1)).squeeze(-1)  # (B, N)
        else:
            m, row_abs = self._stencil_matrix(sn, H, W)  # (B, N, N), (B, N)
            alpha = self._safe_alpha(row_abs.detach().amax(-1), guards)  # (B, 1, 1)
            if self.iterations <= KRYLOV_MAX_STEPS:
                fd = KrylovDiffusion.apply(m, m.detach(), f, alpha, self.iterations)  # (B, N)
            else:
                fd = SquaringDiffusion.apply(m, m.detach(), f, alpha, self.iterations)  # (B, N)
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

    def _stencil_matrix(self, sn: torch.Tensor, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
        """M = Lap * (lam E - 1) from the similarities of grid neighbours only (O(N C), not N^2 C),
        written into a zero (B, N, N) matrix by one index_copy; also the row sums of |M| (the
        Gershgorin bound) from the band, without a pass over N^2 entries.

        The diagonal uses E_ii = |sn_i|^2 (1 for any non-zero token), exactly as the dense form.
        """
        B, C, N = sn.shape
        grid = sn.view(B, C, H, W)
        e_right = (grid[..., :, :-1] * grid[..., :, 1:]).sum(1)  # (B, H, W-1)
        e_down = (grid[..., :-1, :] * grid[..., 1:, :]).sum(1)  # (B, H-1, W)
        e_self = (sn * sn).sum(1)  # (B, N)
        w_right = 1.0 - self.lam * e_right  # (B, H, W-1)
        w_down = 1.0 - self.lam * e_down  # (B, H-1, W)
        diag = grid_degree(H, W, sn.device, sn.dtype) * (self.lam * e_self - 1.0)  # (B, N)
        wr, wd = w_right.flatten(1), w_down.flatten(1)  # (B, H(W-1)), (B, (H-1)W)
        values = torch.cat([diag, wr, wr, wd, wd], dim=1)  # (B, nnz)
        m = sn.new_zeros(B, N * N).index_copy(1, _band_positions(H, W, sn.device), values)
        with torch.no_grad():
            ar, ad = w_right.abs(), w_down.abs()
            row_abs = (
                F.pad(ar, (0, 1)) + F.pad(ar, (1, 0)) + F.pad(ad, (0, 0, 0, 1)) + F.pad(ad, (0, 0, 1, 0))
            ).flatten(1) + diag.abs()  # (B, N) = sum_j |M_ij|
        return m.view(B, N, N), row_abs

    def _safe_alpha(self, r: torch.Tensor, guards: torch.Tensor) -> torch.Tensor:
        """Per-image alpha, capped where Newton-Schulz could diverge; r (B,) = max_i sum_j |M_ij|
        (Gershgorin, >= sigma_max(M) for symmetric M)."""
        with torch.no_grad():
            cap = 1.0 / (r * r).clamp_min(EPS)  # alpha * r^2 <= 1 < 2
            capped = self.alpha * r * r >= 2.0
            guards[0] += capped.sum()
            alpha = torch.where(capped, cap, torch.full_like(cap, self.alpha))
        return alpha.view(-1, 1, 1)


class SquaringDiffusion(torch.autograd.Function):
    """X_p^T f for the fast ADB by the R-recursion with dense squarings (module docstring):
    g_0 = A f, R_0 = I - A M, g_{k+1} = (I + R_k) g_k, R_{k+1} = R_k^2, with A = X_0^T = alpha M
    (no gradient). Used for blocks too long for KrylovDiffusion (2^p vector products).

    The backward is the adjoint of exactly these steps, written out so that no N x N matrix is
    saved but the R_k themselves: gbar_k = (I + R_k)^T gbar_{k+1} and
    Rbar_k = gbar_{k+1} g_k^T + Rbar_{k+1} R_k^T + R_k^T Rbar_{k+1} (two accumulating products per
    squaring), then Mbar = -A^T Rbar_0 and fbar = A^T gbar_0.
    """

    @staticmethod
    def forward(
        ctx, m: torch.Tensor, m0: torch.Tensor, f: torch.Tensor, alpha: torch.Tensor, steps: int
    ) -> torch.Tensor:
        """m (B, N, N), m0 = M without gradient (X_0^T = alpha m0), f (B, N), alpha (B, 1, 1)
        -> X_p^T f (B, N)."""
        g = alpha * _matvec(m0, f.unsqueeze(-1))  # (B, N, 1) = g_0
        eye = torch.eye(m.shape[-1], device=m.device, dtype=m.dtype).expand_as(m)
        r = torch.baddbmm(eye, alpha * m0, m, alpha=-1.0)  # (B, N, N) = R_0
        rs, gs = [], []
        for k in range(steps):
            rs.append(r)
            gs.append(g)
            g = g + _matvec(r, g)  # (B, N, 1) = g_{k+1}
            if k + 1 < steps:
                r = r @ r  # (B, N, N) = R_{k+1}
        ctx.steps = steps
        ctx.save_for_backward(m0, alpha, *rs, *gs)
        return g.squeeze(-1)  # (B, N)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: torch.Tensor):
        m0, alpha, *saved = ctx.saved_tensors
        rs, gs = saved[: ctx.steps], saved[ctx.steps:]
        gbar = grad_y.unsqueeze(-1)  # (B, N, 1)
        rbar = None
        for k in reversed(range(ctx.steps)):
            outer = gbar * gs[k].mT  # (B, N, N) = gbar_{k+1} g_k^T
            if rbar is not None:  # R_{k+1} = R_k R_k
                outer = torch.baddbmm(outer, rbar, rs[k].mT)
                outer = torch.baddbmm(outer, rs[k].mT, rbar)
            rbar = outer  # (B, N, N) = Rbar_k
            gbar = gbar + _matvec(rs[k], gbar, True)  # (B, N, 1) = gbar_k
        grad_f = alpha * _matvec(m0, gbar, True)  # (B, N, 1) = A^T gbar_0
        grad_m = None
        if rbar is not None and ctx.needs_input_grad[0]:
            grad_m = -alpha * (m0.mT @ rbar)  # (B, N, N) = -A^T Rbar_0
        return grad_m, None, grad_f.squeeze(-1), None, None


# Blocks with at most this many Newton-Schulz steps use KrylovDiffusion (2^p - 1 applications
# of R'_0 to a vector) instead of p - 1 dense squarings of R'_0: 15 cheap products against
# three N^3 ones (and their backward) for the reference's 4-step blocks.
KRYLOV_MAX_STEPS = 5


class KrylovDiffusion(torch.autograd.Function):
    """X_p^T f for the fast ADB, from vectors only: with A = X_0^T = alpha M (no gradient),
    g_0 = A f and R = I - A M, X_p^T f = sum_{j < 2^p} R^j g_0 (the R-recursion, multiplied out).

    Autograd over 2^p - 1 chained matrix-vector products would build 2^p N x N outer products in
    the backward; instead, with u_i = (R^T)^i ybar and w_l = g_0 + R g_0 + ... + R^l g_0,
    Rbar = sum_{i <= n-2} u_i w_{n-2-i}^T  (n = 2^p), so  Mbar = -A^T U W^T  (two thin products)
    and fbar = A^T sum_{i < n} u_i: the exact adjoint of this function of (M, f). It equals the
    dense algorithm's gradient (X_0 detached) because M is symmetric by construction, so only
    symmetric perturbations of M reach the parameters (the tests check both claims).
    """

    @staticmethod
    def forward(
        ctx, m: torch.Tensor, m0: torch.Tensor, f: torch.Tensor, alpha: torch.Tensor, steps: int
    ) -> torch.Tensor:
        """m (B, N, N), m0 = M without gradient (X_0^T = alpha m0), f (B, N), alpha (B, 1, 1)
        -> X_p^T f (B, N). A x is computed as alpha * (m0 x)."""
        v = alpha * _matvec(m0, f.unsqueeze(-1))  # (B, N, 1) = g_0
        powers = [v]
        for _ in range(2**steps - 1):
            v = v - alpha * _matvec(m0, _matvec(m, v))  # (B, N, 1) = R v
            powers.append(v)
        vs = torch.cat(powers, dim=2)  # (B, N, n): R^j g_0, j < n
        ctx.save_for_backward(m, m0, alpha, vs[..., :-1])
        ctx.steps = steps
        return vs.sum(dim=2)  # (B, N)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: torch.Tensor):
        m, m0, alpha, vs = ctx.saved_tensors  # vs (B, N, n-1)
        u = grad_y.unsqueeze(-1)  # (B, N, 1)
        adjoints = [u]
        for _ in range(2**ctx.steps - 1):
            u = u - _matvec(m, alpha * _matvec(m0, u, True), True)  # (B, N, 1) = R^T u
            adjoints.append(u)
        us = torch.cat(adjoints, dim=2)  # (B, N, n): (R^T)^i ybar
        grad_f = alpha * _matvec(m0, us.sum(dim=2, keepdim=True), True)  # (B, N, 1)
        grad_m = None
        if ctx.needs_input_grad[0] and vs.shape[-1] > 0:
            ws = vs.cumsum(dim=2).flip(2)  # (B, N, n-1): column i = w_{n-2-i}
            grad_m = (-alpha * (m0.mT @ us[..., :-1])) @ ws.mT  # (B, N, N) = -A^T U W^T
        return grad_m, None, grad_f.squeeze(-1), None, None


def _matvec(m: torch.Tensor, v: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """m @ v (or m^T @ v) for m (B, N, N), v (B, N, 1). CPU BLAS runs a batched matrix-vector
    product about 4x slower than a multiply-and-sum over the same matrix (measured at N = 196);
    on a GPU bmm is one memory-bound kernel, the fewer launches the better."""
    if m.device.type != "cpu":
        return (m.mT if transpose else m) @ v  # (B, N, 1)
    if transpose:
        return (m * v).sum(1).unsqueeze(-1)  # (B, N, 1)
    return (m * v.mT).sum(-1, keepdim=True)  # (B, N, 1)


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
        self._uses_dense = any(b.implementation == "dense" for b in self.blocks)
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
            lap = (
                grid_laplacian(H, W, device=s.device, dtype=s.dtype) if self._uses_dense else None
            )
            for block in self.blocks:
                s, f = block(s, f, lap, self.guards)
        return s, f

    def pop_guard_counts(self) -> dict[str, int]:
        """Read and reset the guard counters (a host sync: call once per epoch or log step)."""
        alpha, beta, nonfinite = (int(v) for v in self.guards.tolist())
        self.guards.zero_()
        return {"alpha_capped": alpha, "beta_clamped": beta, "nonfinite": nonfinite}
