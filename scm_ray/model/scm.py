"""Spatial Calibration Module: a stack of Activation Diffusion Blocks (docs/scm.md).

Each block diffuses the attention map F (B, N) over the 4-connected patch graph, weighted by the
semantic similarity of the patch tokens of S (B, C, H, W), through a Newton-Schulz approximation
of M^-1, filters the result and gates S with it. The module is used in training only.

Two implementations of the same function of (S, F, lambda, beta):
- "dense": the straightforward algorithm (dense E, dense M, X_{k+1} = X_k (2I - M X_k)).
- "fast": the same polynomial rearranged. With R_k = I - M X_k one has X_{k+1} = X_k (I + R_k)
  and R_{k+1} = R_k^2 for any M and X_0 (no commutation needed), so
      X_p^T F = (I + R'_{p-1}) ... (I + R'_0) X_0^T F,  R'_0 = I - X_0^T M,  R'_{k+1} = R'_k^2.
  Only X_p^T F is ever needed, so the products act on vectors where they can
  (PolynomialDiffusion): the last t = VECTOR_TAIL steps of a block are sum_{j < 2^t} R'_q^j
  applied to a vector (the reference's 4-step blocks square nothing), the first p - t steps
  are Newton-Schulz steps on P = X^T with M as a stencil, one matrix product per iteration
  instead of the dense algorithm's two (docs/scm.md, "Float32 error", says why not squaring).
  The backward is hand-written (the adjoint of exactly those steps), saves nothing but M's
  band, the R'_k and a few vectors, and keeps the adjoint of R' factored while it is low-rank.
  M (at most 5 non-zeros per row) is built and used as its band: neighbour similarities only,
  not a dense N x N cosine-similarity product, and 5-point stencils for products with M. Because the identity holds for independent M and X_0, the
  gradients (X_0 detached) are those of the dense algorithm, not just the values; the tests
  check both in float64.

Numerical safety (see README, "Numerical safety"): Newton-Schulz from X_0 = alpha M^T converges
only while alpha * sigma_max(M)^2 < 2. Each image's alpha is capped at 1 / r^2, r the Gershgorin
bound max_i sum_j |M_ij| >= sigma_max, which never fires at the reference settings (r <= 8 at
lambda = 1). beta is clamped to >= BETA_MIN and min-max of a constant map is 0, not NaN. Every
intervention is counted in the non-persistent buffer `guards` (alpha capped, beta clamped,
non-finite), which the training loop reads, reports and resets (pop_guard_counts).
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


def _cached(builder, height: int, width: int, device=None, dtype=None) -> torch.Tensor:
    """A grid constant, built once per (grid size, device, dtype) in eager mode, so a GPU step
    makes no host-to-device copy for it; under torch.compile the builder itself is traced, so the
    graph holds the constant and Dynamo never sees a cache wrapper."""
    if torch.compiler.is_compiling():
        return builder.__wrapped__(height, width).to(device=device, dtype=dtype)
    device = torch.device(device) if device is not None else None
    return _on_device(builder, height, width, device, dtype)


@lru_cache(maxsize=64)
def _on_device(builder, height: int, width: int, device, dtype) -> torch.Tensor:
    return builder(height, width).to(device=device, dtype=dtype)


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
    return _cached(_grid_laplacian_cpu, height, width, device, dtype)


@lru_cache(maxsize=16)
def _grid_degree_cpu(height: int, width: int) -> torch.Tensor:
    rows, cols = torch.arange(height), torch.arange(width)
    vertical = (rows > 0).float() + (rows < height - 1).float()  # (H,)
    horizontal = (cols > 0).float() + (cols < width - 1).float()  # (W,)
    return (vertical[:, None] + horizontal[None, :]).flatten()  # (N,)


def grid_degree(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Node degrees of the 4-connected grid (the Laplacian's diagonal), (N,)."""
    return _cached(_grid_degree_cpu, height, width, device, dtype)


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
    return _cached(_band_positions_cpu, height, width, device)


def band_to_dense(band: torch.Tensor) -> torch.Tensor:
    """The symmetric (B, N, N) matrix of a band (B, 3, H, W) (see ActivationDiffusionBlock.band)."""
    B, _, H, W = band.shape
    n = H * W
    diag = band[:, 0].flatten(1)  # (B, N)
    right = band[:, 1, :, :-1].flatten(1)  # (B, H(W-1))
    down = band[:, 2, :-1, :].flatten(1)  # (B, (H-1)W)
    values = torch.cat([diag, right, right, down, down], dim=1)  # (B, nnz)
    dense = band.new_zeros(B, n * n).index_copy(1, _band_positions(H, W, band.device), values)
    return dense.view(B, n, n)


def band_row_abs_sums(band: torch.Tensor) -> torch.Tensor:
    """sum_j |M_ij| (B, N) from the band: the Gershgorin bound without touching N^2 entries."""
    a = band.abs()  # (B, 3, H, W)
    right, down = a[:, 1, :, :-1], a[:, 2, :-1, :]
    sums = a[:, 0] + F.pad(right, (0, 1)) + F.pad(right, (1, 0))
    sums = sums + F.pad(down, (0, 0, 0, 1)) + F.pad(down, (0, 0, 1, 0))  # (B, H, W)
    return sums.flatten(1)  # (B, N)


def _stencil(band: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """M x for the symmetric 5-point M of `band` (B, 3, H, W) and x (B, N, r): five shifted
    multiply-adds over x instead of a product with the dense N x N matrix."""
    B, _, H, W = band.shape
    grid = x.reshape(B, H, W, -1)  # (B, H, W, r), rows are grid nodes
    diag, right, down = (band[:, i, ..., None] for i in range(3))  # (B, H, W, 1) each
    out = diag * grid  # (B, H, W, r)
    # addcmul_ on views: one kernel each (`out[...] += a * b` would be three: mul, add, copy)
    out[:, :, :-1].addcmul_(right[:, :, :-1], grid[:, :, 1:])
    out[:, :, 1:].addcmul_(right[:, :, :-1], grid[:, :, :-1])
    out[:, :-1].addcmul_(down[:, :-1], grid[:, 1:])
    out[:, 1:].addcmul_(down[:, :-1], grid[:, :-1])
    return out.view(B, H * W, -1)  # (B, N, r)


def _stencil_right(band: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x M for x (B, r, N) and the symmetric 5-point M of `band`: the stencil along x's last
    axis, on x's own memory layout (no transposed copy, unlike _stencil(band, x.mT).mT)."""
    B, _, H, W = band.shape
    grid = x.reshape(B, -1, H, W)  # (B, r, H, W), columns are grid nodes
    diag, right, down = (band[:, i, None] for i in range(3))  # (B, 1, H, W) each
    out = diag * grid  # (B, r, H, W)
    out[..., :, :-1].addcmul_(right[..., :, :-1], grid[..., :, 1:])
    out[..., :, 1:].addcmul_(right[..., :, :-1], grid[..., :, :-1])
    out[..., :-1, :].addcmul_(down[..., :-1, :], grid[..., 1:, :])
    out[..., 1:, :].addcmul_(down[..., :-1, :], grid[..., :-1, :])
    return out.view(B, -1, H * W)  # (B, r, N)


def _band_of_product(band: torch.Tensor, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The band (B, 3, H, W) of the gradient wrt a symmetric band given Mbar = P Q^T, P and Q
    (B, N, r): diagonal Mbar_ii, and Mbar_ij + Mbar_ji for each right / down neighbour pair."""
    B, _, H, W = band.shape
    pg, qg = p.reshape(B, H, W, -1), q.reshape(B, H, W, -1)  # (B, H, W, r)
    out = torch.zeros_like(band)  # (B, 3, H, W)
    out[:, 0] = (pg * qg).sum(-1)
    out[:, 1, :, :-1] = (pg[:, :, :-1] * qg[:, :, 1:]).sum(-1) + (pg[:, :, 1:] * qg[:, :, :-1]).sum(-1)
    out[:, 2, :-1] = (pg[:, :-1] * qg[:, 1:]).sum(-1) + (pg[:, 1:] * qg[:, :-1]).sum(-1)
    return out


def _band_of_dense(band: torch.Tensor, mbar: torch.Tensor) -> torch.Tensor:
    """The band (B, 3, H, W) of the gradient wrt a symmetric band given a dense Mbar (B, N, N)."""
    B, _, H, W = band.shape
    n = H * W
    picked = mbar.reshape(B, n * n).index_select(1, _band_positions(H, W, band.device))
    diag, rest = picked[:, :n], picked[:, n:]
    e_r, e_d = H * (W - 1), (H - 1) * W
    out = torch.zeros_like(band)  # (B, 3, H, W)
    out[:, 0] = diag.view(B, H, W)
    out[:, 1, :, :-1] = (rest[:, :e_r] + rest[:, e_r: 2 * e_r]).view(B, H, W - 1)
    down = rest[:, 2 * e_r:]
    out[:, 2, :-1] = (down[:, :e_d] + down[:, e_d:]).view(B, H - 1, W)
    return out


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
        if self.implementation == "dense":
            sn = F.normalize(s.flatten(2), dim=1, eps=EPS)  # (B, C, N) unit vectors along C
            e = sn.transpose(1, 2) @ sn  # (B, N, N) cosine similarity
            m = lap * (self.lam * e - 1.0)  # (B, N, N) elementwise, symmetric
            alpha = self._safe_alpha(m.detach().abs().sum(-1).amax(-1), guards)  # (B, 1, 1)
            x = newton_schulz_dense(m, alpha, self.iterations)  # (B, N, N)
            fd = (x.transpose(1, 2) @ f.unsqueeze(-1)).squeeze(-1)  # (B, N)
        else:
            band = self.band(s)  # (B, 3, H, W)
            alpha = self._safe_alpha(band_row_abs_sums(band.detach()).amax(-1), guards)  # (B, 1, 1)
            fd = PolynomialDiffusion.apply(band, band.detach(), f, alpha, self.iterations, VECTOR_TAIL)
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

    def band(self, s: torch.Tensor) -> torch.Tensor:
        """M = Lap * (lam E - 1) as its band (B, 3, H, W): [diagonal, weight to the right
        neighbour, weight to the neighbour below], zero where there is none; M is symmetric.

        Only neighbour similarities are formed (O(N C), not N^2 C), from the raw tokens and their
        norms: E_ij = s_i . s_j / (max(|s_i|, eps) max(|s_j|, eps)), F.normalize's definition,
        so autograd keeps s (kept anyway for the gating) instead of a normalised copy. The
        diagonal uses E_ii = |s_i|^2 / max(|s_i|, eps)^2 (1 for any non-zero token), as the
        dense form does.
        """
        B, C, H, W = s.shape
        norm = torch.linalg.vector_norm(s, dim=1)  # (B, H, W)
        inv = 1.0 / norm.clamp_min(EPS)  # (B, H, W)
        e_right = (s[..., :, :-1] * s[..., :, 1:]).sum(1) * inv[..., :, :-1] * inv[..., :, 1:]
        e_down = (s[..., :-1, :] * s[..., 1:, :]).sum(1) * inv[..., :-1, :] * inv[..., 1:, :]
        e_self = (norm * inv) ** 2  # (B, H, W)
        deg = grid_degree(H, W, s.device, s.dtype).view(H, W)
        diag = deg * (self.lam * e_self - 1.0)  # (B, H, W)
        right = F.pad(1.0 - self.lam * e_right, (0, 1))  # (B, H, W), last column 0
        down = F.pad(1.0 - self.lam * e_down, (0, 0, 0, 1))  # (B, H, W), last row 0
        return torch.stack([diag, right, down], dim=1)  # (B, 3, H, W)

    def _safe_alpha(self, r: torch.Tensor, guards: torch.Tensor) -> torch.Tensor:
        """Per-image alpha, capped where Newton-Schulz could diverge; r (B,) = max_i sum_j |M_ij|
        (Gershgorin, >= sigma_max(M) for symmetric M)."""
        with torch.no_grad():
            cap = 1.0 / (r * r).clamp_min(EPS)  # alpha * r^2 <= 1 < 2
            capped = self.alpha * r * r >= 2.0
            guards[0] += capped.sum()
            alpha = torch.where(capped, cap, torch.full_like(cap, self.alpha))
        return alpha.view(-1, 1, 1)


# How many of a block's last Newton-Schulz steps run on vectors (PolynomialDiffusion). Each such
# step saves one N^3 product in the forward (and one saved N x N matrix) for twice as many
# matrix-vector products as the step before: 4 means 15 products, one kernel each on a GPU,
# against 4 products of 2 * B * N^3 flops; the reference's 4-step blocks form no product.
VECTOR_TAIL = 4


class PolynomialDiffusion(torch.autograd.Function):
    """X_p^T f for the fast ADB (docs/scm.md, "The fast path"), with P_k = X_k^T and
    A = P_0 = alpha M0 (M0 = M, no gradient):

        P_{k+1} = 2 P_k - P_k M P_k   (k < q = p - t),
        X_p^T f = sum_{j < 2^t} R^j g,   R = I - P_q M,  g = P_q f.

    The first q steps are the dense algorithm's own steps (the transposed X recursion), but the
    product with M is a five-point stencil, so each costs one N^3 product, not two. The last t
    steps act on vectors only: with R_k = I - P_k M one has P_{k+1} = (I + R_k) P_k and
    R_{k+1} = R_k^2, so (I + R_{p-1}) ... (I + R_q) = sum_{j < 2^t} R_q^j, 2^t - 1 products R v.

    Why P and not R = I - P M squared (the earlier form): R's eigenvalues sit near 1 in the
    directions that are still converging, its float32 rounding is absolute there, and every
    squaring doubles it (about 2^12 at p = 16); P carries those directions at their own scale,
    as the dense algorithm does, so its error is the dense algorithm's (docs/scm.md, "Float32
    error"). The tail squares nothing, so its R is formed once and used t times at most.

    The backward is the adjoint of exactly these steps, written out and saving only the band,
    P_1 ... P_q, R and the tail vectors:
    - tail: u_i = (R^T)^i ybar, w_l = sum_{j <= l} R^j g; Rbar = U W^T with columns u_i and
      w_{n-2-i} (i <= n-2, n = 2^t), gbar = sum_{i < n} u_i;
    - R = I - P_q M and g = P_q f: Pbar_q = -Rbar M + gbar f^T, Mbar = -P_q^T Rbar,
      fbar = P_q^T gbar;
    - each step: Pbar_k = 2 Pbar - Pbar P_k^T M - M P_k^T Pbar, Mbar += -P_k^T Pbar P_k^T.
      While Pbar is low-rank (U V^T, rank r <= N / 2) it stays factored,
      [U, -M P_k^T U] [2V - M P_k V, V]^T (ranks 2^t, 2^(t+1), ... from the top), and Mbar's
      term is (-P_k^T U)(P_k V)^T. Only M's band of Mbar is ever formed (the gradient of a band
      entry is Mbar_ii, or Mbar_ij + Mbar_ji for the two places a neighbour weight sits), from
      factors: N^2 work, not N^3.
    It equals the dense algorithm's gradient (X_0 detached) since the steps are the dense
    algorithm's, and M is symmetric by construction (gradcheck and float64 tests).
    """

    @staticmethod
    def forward(
        ctx,
        band: torch.Tensor,
        band0: torch.Tensor,
        f: torch.Tensor,
        alpha: torch.Tensor,
        steps: int,
        tail: int,
    ) -> torch.Tensor:
        """band (B, 3, H, W) of M, band0 the same without gradient (X_0^T = alpha M0), f (B, N),
        alpha (B, 1, 1) -> X_p^T f (B, N)."""
        tail = min(tail, steps)
        p = alpha * band_to_dense(band0)  # (B, N, N) = P_0 = A
        ps = []
        for _ in range(steps - tail):
            p = torch.baddbmm(p, p, _stencil(band, p), beta=2.0, alpha=-1.0)  # 2P - P (M P)
            ps.append(p)
        q = _stencil_right(band, p)  # (B, N, N) = Q = I - R = P_q M
        # Vectors are kept as rows (B, 1, N): v^T Q^T is a (1 x N)(N x N) batched product, which
        # CPU BLAS runs about 10x faster than Q v as (N x N)(N x 1) (N = 196, B = 8).
        v = f.unsqueeze(1) @ p.mT  # (B, 1, N) = g^T = (P_q f)^T
        powers = [v]
        for _ in range(2**tail - 1):
            v = torch.baddbmm(v, v, q.mT, alpha=-1.0)  # (B, 1, N) = (R^j g)^T, R v = v - Q v
            powers.append(v)
        vs = torch.cat(powers, dim=1)  # (B, 2^t, N)
        ctx.tail = tail
        # band and band0 share storage in the ADB: keeping both costs nothing
        ctx.save_for_backward(band, band0, f, alpha, vs[:, :-1], q, *ps)
        return vs.sum(dim=1)  # (B, N)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: torch.Tensor):
        band, band0, f, alpha, vs, q, *ps = ctx.saved_tensors  # vs (B, 2^t - 1, N); P_1..P_q
        ps = [alpha * band_to_dense(band0)] + ps  # P_0 = A is cheaper to rebuild than to keep
        n = q.shape[-1]
        u, adjoints = grad_y.unsqueeze(1), [grad_y.unsqueeze(1)]
        for _ in range(2**ctx.tail - 1):
            u = torch.baddbmm(u, u, q, alpha=-1.0)  # (B, 1, N) = ((R^T)^i ybar)^T
            adjoints.append(u)
        us = torch.cat(adjoints, dim=1)  # (B, 2^t, N)
        gbar = us.sum(dim=1, keepdim=True)  # (B, 1, N)
        fac_u, fac_w = us[:, :-1].mT, vs.cumsum(dim=1).flip(1).mT  # Rbar = U W^T, (B, N, 2^t - 1)
        p = ps[-1]
        grad_f = (gbar @ p).squeeze(1)  # (B, N) = (P_q^T gbar)^T
        grad_band = None
        if fac_u.shape[-1] > 0:  # Mbar = -P_q^T Rbar
            grad_band = _band_of_product(band, -(p.mT @ fac_u), fac_w)
        if len(ps) == 1:
            return grad_band, None, grad_f, None, None, None
        # Pbar_q = -U (M W)^T + gbar f^T, as factors (B, N, rank)
        left = torch.cat([-fac_u, gbar.mT], dim=-1)
        right = torch.cat([_stencil(band, fac_w), f.unsqueeze(-1)], dim=-1)
        pbar = None  # dense once the rank passes N / 2
        for k in reversed(range(len(ps) - 1)):
            p = ps[k]  # (B, N, N)
            if pbar is None and left.shape[-1] > n // 2:
                pbar = left @ right.mT  # (B, N, N)
            if pbar is None:
                pt_u, p_v = p.mT @ left, p @ right  # (B, N, rank)
                term = _band_of_product(band, -pt_u, p_v)
                left = torch.cat([left, -_stencil(band, pt_u)], dim=-1)
                right = torch.cat([torch.add(-_stencil(band, p_v), right, alpha=2.0), right], dim=-1)
            else:
                s1, s2 = p.mT @ pbar, pbar @ p.mT  # (B, N, N): P^T Pbar, Pbar P^T
                term = -_band_of_product(band, s1, p)  # band of -P^T Pbar P^T
                # Pbar_k = 2 Pbar - M (P^T Pbar) - (Pbar P^T) M
                nxt = _stencil(band, s1).add_(_stencil_right(band, s2))
                pbar = nxt.neg_().add_(pbar, alpha=2.0)
            grad_band = term if grad_band is None else grad_band + term
        return grad_band, None, grad_f, None, None, None


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
