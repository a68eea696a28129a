"""An independent float64 transcription of docs/scm.md (steps 1-6), used as the oracle.

Deliberately naive: explicit loops over images, dense matrices, no shared code with scm_ray.
"""

import torch


def laplacian(h: int, w: int) -> torch.Tensor:
    n = h * w
    a = torch.zeros(n, n, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            for di, dj in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                ii, jj = i + di, j + dj
                if 0 <= ii < h and 0 <= jj < w:
                    a[i * w + j, ii * w + jj] = 1.0
    return torch.diag(a.sum(1)) - a


def adb_stack(s, f, lams, betas, iterations, alpha):
    """s (B, C, H, W), f (B, N) float64 tensors; lams/betas lists of float64 scalar tensors."""
    B, C, H, W = s.shape
    lap = laplacian(H, W)
    for lam, beta, p in zip(lams, betas, iterations):
        s_out, f_out = [], []
        for b in range(B):
            tokens = s[b].reshape(C, H * W).T  # (N, C)
            norms = tokens.norm(dim=1, keepdim=True)
            unit = tokens / norms
            e = unit @ unit.T
            m = lap * (lam * e - 1.0)
            x = alpha * m.detach().T
            eye = torch.eye(H * W, dtype=torch.float64)
            for _ in range(p):
                x = x @ (2 * eye - m @ x)
            fd = x.T @ f[b]
            t = fd / (beta * f[b].max())
            t = t - torch.tanh(t)
            t = (t - t.min()) / (t.max() - t.min())
            f_out.append(f[b] + t)
            s_out.append(s[b] * (1 + t.reshape(1, H, W)))
        s, f = torch.stack(s_out), torch.stack(f_out)
    return s, f
