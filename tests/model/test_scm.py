"""Known-answer tests of the Spatial Calibration Module against docs/scm.md."""

import pytest
import torch

from scm_ray.model import SpatialCalibration, grid_laplacian, minmax, newton_schulz_dense
from tests.model.reference_scm import adb_stack


@pytest.mark.parametrize("h,w", [(1, 2), (2, 2), (3, 5), (14, 14), (7, 4)])
def test_laplacian_structure(h, w):
    lap = grid_laplacian(h, w, dtype=torch.float64)
    n = h * w
    assert lap.shape == (n, n)
    assert torch.equal(lap, lap.T)
    assert torch.allclose(lap.sum(1), torch.zeros(n, dtype=torch.float64))
    for i in range(h):
        for j in range(w):
            node = i * w + j
            neighbours = [
                (i + di) * w + (j + dj)
                for di, dj in ((0, 1), (1, 0), (0, -1), (-1, 0))
                if 0 <= i + di < h and 0 <= j + dj < w
            ]
            assert lap[node, node] == len(neighbours)
            row = lap[node].clone()
            row[node] = 0
            expected = torch.zeros(n, dtype=torch.float64)
            expected[neighbours] = -1
            assert torch.equal(row, expected)
    # corners have degree 2 on any grid of at least 2 x 2
    if h >= 2 and w >= 2:
        assert lap[0, 0] == 2 and lap[n - 1, n - 1] == 2


def test_newton_schulz_converges_to_inverse():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(30, 30, dtype=torch.float64))
    eig = torch.linspace(1.0, 2.0, 30, dtype=torch.float64)
    m = (q * eig) @ q.T  # symmetric, condition number 2
    alpha = torch.tensor(0.3, dtype=torch.float64)  # alpha * sigma_max^2 = 1.2 < 2
    x = newton_schulz_dense(m[None], alpha, steps=12)[0]
    assert torch.allclose(x, torch.linalg.inv(m), atol=1e-10)
    # few steps are a polynomial, not the inverse yet
    x2 = newton_schulz_dense(m[None], alpha, steps=1)[0]
    assert not torch.allclose(x2, torch.linalg.inv(m), atol=1e-3)


def _random_inputs(B, C, H, W, seed):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    f = minmax(torch.rand(B, H * W, generator=g, dtype=torch.float64))
    return s, f


@pytest.mark.parametrize("implementation", ["dense", "fast"])
@pytest.mark.parametrize(
    "B,C,H,W,iterations",
    [(2, 5, 4, 6, [16, 4, 4]), (3, 7, 5, 3, [4, 2]), (1, 4, 6, 6, [0, 3, 4, 4])],
)
def test_adb_stack_matches_float64_reference(implementation, B, C, H, W, iterations):
    s, f = _random_inputs(B, C, H, W, seed=H * 10 + W)
    g = torch.Generator().manual_seed(7)
    lams = (0.5 + torch.rand(len(iterations), generator=g, dtype=torch.float64)).tolist()
    betas = (0.2 + torch.rand(len(iterations), generator=g, dtype=torch.float64)).tolist()
    scm = SpatialCalibration(len(iterations), alpha=0.002, iterations=iterations,
                             implementation=implementation).double()
    with torch.no_grad():
        for block, lam, beta in zip(scm.blocks, lams, betas):
            block.lam.fill_(lam)
            block.beta.fill_(beta)
    s_out, f_out = scm(s, f)
    lam_t = [torch.tensor(v, dtype=torch.float64) for v in lams]
    beta_t = [torch.tensor(v, dtype=torch.float64) for v in betas]
    s_ref, f_ref = adb_stack(s, f, lam_t, beta_t, iterations, alpha=0.002)
    assert torch.allclose(f_out, f_ref, rtol=1e-9, atol=1e-9)
    assert torch.allclose(s_out, s_ref, rtol=1e-9, atol=1e-9)
    assert scm.pop_guard_counts() == {"alpha_capped": 0, "beta_clamped": 0, "nonfinite": 0}


@pytest.mark.parametrize("H,W,iterations", [(4, 6, [16, 4]), (14, 14, [16, 4, 4, 4]), (3, 8, [5])])
def test_fast_matches_dense_values_and_gradients(H, W, iterations):
    """The structured Newton-Schulz gives the dense algorithm's values AND gradients."""
    s, f = _random_inputs(2, 6, H, W, seed=3)
    results = []
    for implementation in ("dense", "fast"):
        torch.manual_seed(0)
        scm = SpatialCalibration(len(iterations), iterations=iterations, lambda_init=1.3,
                                 beta_init=0.7, implementation=implementation).double()
        s_in, f_in = s.clone().requires_grad_(), f.clone().requires_grad_()
        s_out, f_out = scm(s_in, f_in)
        loss = (s_out.mean((2, 3)).logsumexp(1)).sum() + (f_out ** 2).sum()
        loss.backward()
        grads = [s_in.grad, f_in.grad] + [p.grad for p in scm.parameters()]
        results.append((s_out.detach(), f_out.detach(), grads))
    (sd, fd, gd), (sf, ff, gf) = results
    assert torch.allclose(sd, sf, rtol=1e-8, atol=1e-10)
    assert torch.allclose(fd, ff, rtol=1e-8, atol=1e-10)
    for a, b in zip(gd, gf):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-9), (a - b).abs().max()


def test_fast_matches_dense_in_float32():
    s, f = _random_inputs(4, 20, 14, 14, seed=11)
    s, f = s.float(), f.float()
    out = {}
    for implementation in ("dense", "fast"):
        scm = SpatialCalibration(4, implementation=implementation)
        out[implementation] = scm(s, f)
    assert torch.allclose(out["dense"][1], out["fast"][1], rtol=1e-3, atol=1e-3)
    assert torch.allclose(out["dense"][0], out["fast"][0], rtol=1e-3, atol=1e-3)


def test_zero_blocks_is_identity():
    s, f = _random_inputs(2, 3, 4, 4, seed=0)
    scm = SpatialCalibration(0)
    s_out, f_out = scm(s, f)
    assert s_out is s and f_out is f
    assert list(scm.parameters()) == []


def test_block_scalars_and_iterations():
    scm = SpatialCalibration(3, iterations=[16, 4, 2], lambda_init=1.5, beta_init=0.25)
    assert [b.iterations for b in scm.blocks] == [16, 4, 2]
    for block in scm.blocks:
        assert block.lam.shape == (1,) and block.lam.item() == 1.5
        assert block.beta.shape == (1,) and block.beta.item() == 0.25
    assert [b.iterations for b in SpatialCalibration(2, iterations=3).blocks] == [3, 3]
    with pytest.raises(ValueError, match="one count per block"):
        SpatialCalibration(3, iterations=[16, 4])


@pytest.mark.parametrize("implementation", ["dense", "fast"])
def test_forced_divergence_is_guarded_and_reported(implementation):
    """A huge lambda would make Newton-Schulz diverge (alpha * sigma_max^2 >> 2): the alpha
    cap keeps everything finite, the counters say so, and an optimizer step stays finite."""
    s, f = _random_inputs(2, 4, 6, 6, seed=5)
    s, f = s.float().abs() + 1.0, f.float()  # very similar neighbours: E close to 1
    scm = SpatialCalibration(2, iterations=[16, 4], lambda_init=60.0, implementation=implementation)
    # without the guard the same computation diverges
    from scm_ray.model.scm import grid_laplacian as lapf
    import torch.nn.functional as F
    sn = F.normalize(s.flatten(2), dim=1)
    m = lapf(6, 6) * (60.0 * (sn.transpose(1, 2) @ sn) - 1.0)
    raw = newton_schulz_dense(m, torch.tensor(0.002), 16)
    assert not torch.isfinite(raw).all()

    opt = torch.optim.SGD(scm.parameters(), lr=0.1)
    s_out, f_out = scm(s, f)
    assert torch.isfinite(s_out).all() and torch.isfinite(f_out).all()
    s_out.mean().backward()
    opt.step()
    assert all(torch.isfinite(p).all() for p in scm.parameters())
    counts = scm.pop_guard_counts()
    assert counts["alpha_capped"] >= 2
    assert scm.pop_guard_counts()["alpha_capped"] == 0  # popped


def test_non_positive_beta_and_constant_maps_stay_finite():
    s, f = _random_inputs(2, 4, 5, 5, seed=9)
    f = torch.zeros_like(f)  # a constant map: max F = 0 and min-max of a constant
    scm = SpatialCalibration(2, iterations=[4, 4], beta_init=0.5).double()
    with torch.no_grad():
        scm.blocks[1].beta.fill_(-1.0)
    s_out, f_out = scm(s, f)
    assert torch.isfinite(s_out).all() and torch.isfinite(f_out).all()
    assert scm.pop_guard_counts()["beta_clamped"] == 1
    assert torch.equal(minmax(torch.ones(3, 4)), torch.zeros(3, 4))


# --- the fast path's pieces (PolynomialDiffusion on a band, the band-built M) --------------

from scm_ray.model.scm import (  # noqa: E402
    PolynomialDiffusion,
    _band_positions,
    _stencil,
    band_row_abs_sums,
    band_to_dense,
    grid_degree,
)


def _random_band(h, w, seed, batch=2, scale=0.5):
    """A band (B, 3, H, W) with zeros where a grid node has no right / lower neighbour."""
    g = torch.Generator().manual_seed(seed)
    band = scale * torch.randn(batch, 3, h, w, generator=g, dtype=torch.float64)
    band[:, 1, :, -1] = 0.0
    band[:, 2, -1, :] = 0.0
    return band


# (steps, tail): pure squarings, pure vectors, mixed; with N = 6 the factored adjoint turns
# dense once its rank passes 3 (N / 2), so both backward regimes run.
STEP_TAILS = [(0, 0), (1, 0), (1, 1), (3, 0), (3, 3), (3, 1), (4, 2), (5, 0)]


@pytest.mark.parametrize("steps,tail", STEP_TAILS)
def test_polynomial_diffusion_passes_gradcheck(steps, tail):
    """The hand-written backward is the exact adjoint of the forward, for any band and any
    (fixed) X_0 source band0: X_0 is detached, so band0 gets no gradient."""
    band = _random_band(2, 3, seed=steps * 10 + tail, scale=0.4).requires_grad_()
    band0 = _random_band(2, 3, seed=99, scale=0.4)
    f = torch.rand(2, 6, generator=torch.Generator().manual_seed(tail), dtype=torch.float64)
    f.requires_grad_()
    alpha = torch.tensor([0.3, 0.2], dtype=torch.float64).view(2, 1, 1)
    fn = lambda b_, f_: PolynomialDiffusion.apply(b_, band0, f_, alpha, steps, tail)  # noqa: E731
    # padding entries of the band are not part of M: perturb only the real ones
    mask = _random_band(2, 3, seed=0).ne(0).double()
    assert torch.autograd.gradcheck(lambda b_, f_: fn(b_ * mask, f_), (band, f))


@pytest.mark.parametrize("steps", [0, 1, 2, 4, 5, 7, 16])
@pytest.mark.parametrize("tail", [0, 2, 4])
def test_polynomial_diffusion_matches_dense_values_and_gradients(steps, tail):
    """Every split gives X_p^T f and the dense algorithm's gradients (band and f)."""
    h, w = 3, 4
    f0 = torch.rand(2, h * w, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    alpha = torch.tensor([0.02, 0.03], dtype=torch.float64).view(2, 1, 1)
    weights = torch.linspace(-1, 2, h * w, dtype=torch.float64)
    outs = []
    for dense in (True, False):
        band = _random_band(h, w, seed=steps).requires_grad_()
        f = f0.clone().requires_grad_()
        if dense:
            m = band_to_dense(band)
            y = (newton_schulz_dense(m, alpha, steps).transpose(1, 2) @ f.unsqueeze(-1)).squeeze(-1)
        else:
            y = PolynomialDiffusion.apply(band, band.detach(), f, alpha, steps, tail)
        (y * weights).sum().backward()
        grad_band = torch.zeros_like(band) if band.grad is None else band.grad
        outs.append((y.detach(), grad_band, f.grad))
    for a, b in zip(*outs):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12), (a - b).abs().max()


@pytest.mark.parametrize("h,w", [(1, 5), (4, 1), (3, 4), (14, 14), (5, 9)])
def test_band_built_m_equals_dense_m(h, w):
    """The band from raw tokens and norms is Lap * (lam E - 1) of the dense form; its dense
    matrix, stencil products and row sums agree with the dense ones."""
    g = torch.Generator().manual_seed(h * w)
    s = torch.randn(2, 7, h, w, generator=g, dtype=torch.float64)
    s[0, :, 0, 0] = 0.0  # a zero token: E_ii = 0, as F.normalize gives
    block = SpatialCalibration(1, lambda_init=1.3).double().blocks[0]
    band = block.band(s)
    m = band_to_dense(band)
    sn = torch.nn.functional.normalize(s.flatten(2), dim=1)
    lam = block.lam.detach()
    dense = grid_laplacian(h, w, dtype=torch.float64) * (lam * (sn.transpose(1, 2) @ sn) - 1.0)
    assert torch.allclose(m, dense, atol=1e-12)
    assert torch.allclose(band_row_abs_sums(band), dense.abs().sum(-1), atol=1e-12)
    x = torch.randn(2, h * w, 3, generator=g, dtype=torch.float64)
    assert torch.allclose(_stencil(band, x), dense @ x, atol=1e-12)
    assert torch.equal(grid_degree(h, w, dtype=torch.float64), grid_laplacian(h, w).diagonal().double())
    assert _band_positions(h, w, "cpu").unique().numel() == _band_positions(h, w, "cpu").numel()


@pytest.mark.parametrize(
    "H,W,iterations",
    [(1, 6, [6, 2]), (5, 1, [3]), (7, 9, [0, 1, 5, 6]), (2, 3, [16])],
)
def test_fast_matches_dense_across_grids_and_block_settings(H, W, iterations):
    """Blocks shorter and longer than the vector tail, degenerate grids, zero-step blocks."""
    s, f = _random_inputs(2, 5, H, W, seed=H + 7 * W)
    results = []
    for implementation in ("dense", "fast"):
        scm = SpatialCalibration(len(iterations), iterations=iterations, lambda_init=0.8,
                                 beta_init=0.6, implementation=implementation).double()
        s_in, f_in = s.clone().requires_grad_(), f.clone().requires_grad_()
        s_out, f_out = scm(s_in, f_in)
        ((s_out.mean((2, 3)) ** 2).sum() + f_out.sin().sum()).backward()
        grads = [s_in.grad, f_in.grad] + [
            torch.zeros_like(p) if p.grad is None else p.grad for p in scm.parameters()
        ]
        results.append([s_out.detach(), f_out.detach()] + grads)
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-10), (a - b).abs().max()


def test_fast_scm_compiles_without_graph_breaks():
    """torch.compile(fullgraph=True) traces the fast ADB stack (custom Functions, in-place guard
    counters, cached index tensors) as one graph, forward and backward, matching eager."""
    s, f = _random_inputs(2, 4, 4, 5, seed=2)
    s, f = s.float(), f.float()
    scm = SpatialCalibration(2, iterations=[6, 2])
    compiled = torch.compile(scm, fullgraph=True, backend="aot_eager")
    outs = []
    for module in (scm, compiled):
        s_in = s.clone().requires_grad_()
        s_out, f_out = module(s_in, f)
        (s_out.sum() + f_out.sum()).backward()
        outs.append((s_out.detach(), f_out.detach(), s_in.grad))
    for a, b in zip(*outs):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    assert scm.pop_guard_counts() == {"alpha_capped": 0, "beta_clamped": 0, "nonfinite": 0}
