"""The coupling function K_mu(x_i, x_j) of paper D, its degree normalisation, and blocked evaluation.

Normalisations (``mode``), both followed by K <- (K + K^T) / 2 when ``symmetric``:

* "positive": K = d n softmax(logits over all n^2 ordered pairs), so K_ij > 0 and the mean degree
  (1/n) sum_ij K_ij equals d (D section III A, global synchrony);
* "signed":   K_ij = d logit_ij / sum_j |logit_ij|, so every row has absolute in-degree d before
  symmetrising (D section III B, cluster synchrony).

For large n, :func:`build_coupling` fills the n x n matrix block by block (the pair MLP never sees
more than ``block_bytes`` of activations) or, when the matrix itself would exceed
``max_dense_bytes``, returns a :class:`BlockedCoupling` that recomputes blocks at every product.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

MODES = ("positive", "signed")


class CouplingNet(nn.Module):
    """K_mu: an MLP of the concatenated pair (x_i, x_j) -> one logit per ordered pair.

    Architecture (as the authors' code): Linear(2m, h) [BatchNorm] LeakyReLU, ``depth - 1`` times
    Linear(h, h) [BatchNorm] LeakyReLU, then Linear(h, 1) without bias. The first layer is applied
    as W_a x_i + W_b x_j + c, which equals the linear layer on the concatenation at O(n h) cost.
    """

    def __init__(
        self, feature_dim: int, hidden: int = 128, depth: int = 2, batch_norm: bool = True
    ) -> None:
        super().__init__()
        if feature_dim < 1 or hidden < 1 or depth < 1:
            raise ValueError("feature_dim, hidden and depth must be >= 1")
        self.feature_dim = feature_dim
        self.first = nn.Linear(2 * feature_dim, hidden)
        self.inner = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth - 1))
        norm = (lambda: nn.BatchNorm1d(hidden)) if batch_norm else nn.Identity
        self.norms = nn.ModuleList(norm() for _ in range(depth))
        self.out = nn.Linear(hidden, 1, bias=False)

    def pair_logits(self, xa: Tensor, xb: Tensor) -> Tensor:
        """Logits of all ordered pairs (xa_i, xb_j): (a, m), (b, m) -> (a, b)."""
        if not self.training and not torch.is_grad_enabled():
            return self._folded_logits(xa, xb)
        m = self.feature_dim
        w = self.first.weight
        h = (xa @ w[:, :m].T + self.first.bias)[:, None, :] + (xb @ w[:, m:].T)[None, :, :]
        h = nn.functional.leaky_relu(self.norms[0](h.reshape(-1, h.shape[-1])))
        for lin, norm in zip(self.inner, self.norms[1:], strict=True):
            h = nn.functional.leaky_relu(norm(lin(h)))
        return self.out(h).reshape(xa.shape[0], xb.shape[0])

    def _affine(self, i: int) -> tuple[Tensor, Tensor]:
        """Eval-mode normalisation i as y = s x + t."""
        bn = self.norms[i]
        if not isinstance(bn, nn.BatchNorm1d):
            one = torch.ones_like(self.first.bias)
            return one, torch.zeros_like(one)
        s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        return s, bn.bias - bn.running_mean * s

    def _folded_logits(self, xa: Tensor, xb: Tensor) -> Tensor:
        """The same logits with eval-mode BatchNorm folded into the linear layers (no autograd)."""
        m = self.feature_dim
        s, t = self._affine(0)
        w = self.first.weight * s[:, None]
        a = torch.addmm(s * self.first.bias + t, xa, w[:, :m].T)
        h = torch.add(a[:, None, :], (xb @ w[:, m:].T)[None, :, :]).reshape(-1, w.shape[0])
        nn.functional.leaky_relu_(h)
        for i, lin in enumerate(self.inner, start=1):
            s, t = self._affine(i)
            h = torch.addmm(s * lin.bias + t, h, (lin.weight * s[:, None]).T)
            nn.functional.leaky_relu_(h)
        return (h @ self.out.weight.T).reshape(xa.shape[0], xb.shape[0])

    def forward(self, x: Tensor) -> Tensor:
        """Logits of all ordered pairs of one network's features x (n, m): (n, n)."""
        return self.pair_logits(x, x)


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown coupling normalisation {mode!r} ({', '.join(MODES)})")


def normalise(logits: Tensor, mode: str = "positive", avg_degree: float = 1.0) -> Tensor:
    """Degree-normalised couplings from pair logits (n, n) (see the module docstring)."""
    check_mode(mode)
    n = logits.shape[-1]
    if mode == "positive":
        flat = torch.softmax(logits.reshape(*logits.shape[:-2], -1), -1)
        return (avg_degree * n) * flat.reshape(logits.shape)
    return avg_degree * logits / logits.abs().sum(-1, keepdim=True).clamp_min(1e-30)


def symmetrise(k: Tensor) -> Tensor:
    """(K + K^T) / 2 over the last two axes."""
    return 0.5 * (k + k.transpose(-1, -2))


def coupling_matrix(
    net: CouplingNet,
    x: Tensor,
    mode: str = "positive",
    avg_degree: float = 1.0,
    symmetric: bool = True,
) -> Tensor:
    """K = sym(normalise(K_mu(x_i, x_j))) for one network (n, m) -> (n, n), differentiable."""
    k = normalise(net(x), mode, avg_degree)
    return symmetrise(k) if symmetric else k


def mean_degree(k: Tensor) -> Tensor:
    """<d> = (1/n) sum_ij K_ij."""
    return k.sum((-1, -2)) / k.shape[-1]


def _rows_per_block(n: int, hidden: int, block_bytes: int) -> int:
    return max(1, min(n, block_bytes // max(1, 4 * n * hidden * 2)))


class BlockedCoupling:
    """K as an operator v -> K v that recomputes the pair logits block by block (O(n b h) memory).

    The normaliser (the softmax's log-sum-exp, or the row absolute sums) is computed once.
    """

    def __init__(
        self,
        net: CouplingNet,
        x: Tensor,
        mode: str,
        avg_degree: float,
        symmetric: bool,
        block_bytes: int = 2**28,
    ) -> None:
        check_mode(mode)
        self.net, self.x, self.mode, self.d, self.symmetric = net, x, mode, avg_degree, symmetric
        self.n = x.shape[0]
        self.rows = _rows_per_block(self.n, net.first.out_features, block_bytes)
        with torch.no_grad():
            if mode == "positive":
                lse = torch.stack([torch.logsumexp(b.reshape(-1), 0) for b in self._logit_rows()])
                self.norm = torch.logsumexp(lse, 0)
            else:
                self.norm = torch.cat([b.abs().sum(1) for b in self._logit_rows()]).clamp_min(1e-30)

    def _blocks(self) -> list[slice]:
        return [slice(i, min(i + self.rows, self.n)) for i in range(0, self.n, self.rows)]

    def _logit_rows(self):
        for s in self._blocks():
            yield self.net.pair_logits(self.x[s], self.x)

    def rows_of(self, s: slice) -> Tensor:
        """Rows ``s`` of K: (len, n)."""
        a = self.net.pair_logits(self.x[s], self.x)
        if self.mode == "positive":
            k = (self.d * self.n) * torch.exp(a - self.norm)
        else:
            k = self.d * a / self.norm[s, None]
        if not self.symmetric:
            return k
        b = self.net.pair_logits(self.x, self.x[s]).T  # logits (x_j, x_i) for i in s
        kt = (
            (self.d * self.n) * torch.exp(b - self.norm)
            if self.mode == "positive"
            else self.d * b / self.norm[None, :]
        )
        return 0.5 * (k + kt)

    @torch.no_grad()
    def __call__(self, v: Tensor) -> Tensor:
        return torch.cat([self.rows_of(s) @ v for s in self._blocks()])

    @torch.no_grad()
    def max_abs(self) -> float:
        return max(float(self.rows_of(s).abs().max()) for s in self._blocks())


@torch.no_grad()
def dense_coupling(
    net: CouplingNet,
    x: Tensor,
    mode: str = "positive",
    avg_degree: float = 1.0,
    symmetric: bool = True,
    block_bytes: int = 2**28,
    tick: Callable[[int, int], None] | None = None,
) -> Tensor:
    """The n x n matrix of :func:`coupling_matrix`, filled in row blocks and symmetrised in place.

    ``tick(rows_done, n)`` reports progress after every row block.
    """
    check_mode(mode)
    n = x.shape[0]
    rows = _rows_per_block(n, net.first.out_features, block_bytes)
    k = torch.empty((n, n), dtype=x.dtype, device=x.device)
    for i in range(0, n, rows):
        k[i : i + rows] = net.pair_logits(x[i : i + rows], x)
        if tick is not None:
            tick(min(i + rows, n), n)
    if mode == "positive":
        lse = torch.logsumexp(
            torch.stack(
                [torch.logsumexp(k[i : i + rows].reshape(-1), 0) for i in range(0, n, rows)]
            ),
            0,
        )
        for i in range(0, n, rows):
            k[i : i + rows].sub_(lse).exp_().mul_(avg_degree * n)
    else:
        for i in range(0, n, rows):
            blk = k[i : i + rows]
            blk.mul_(avg_degree / blk.abs().sum(1, keepdim=True).clamp_min(1e-30))
    if symmetric:
        symmetrise_(k)
    return k


def symmetrise_(k: Tensor, block: int = 2048) -> Tensor:
    """K <- (K + K^T) / 2 in place, one pair of square blocks at a time."""
    n = k.shape[0]
    for i in range(0, n, block):
        for j in range(i, n, block):
            avg = 0.5 * (k[i : i + block, j : j + block] + k[j : j + block, i : i + block].T)
            k[i : i + block, j : j + block] = avg
            k[j : j + block, i : i + block] = avg.T
    return k


def build_coupling(
    net: CouplingNet,
    x: Tensor,
    mode: str = "positive",
    avg_degree: float = 1.0,
    symmetric: bool = True,
    max_dense_bytes: int = 2**31,
    block_bytes: int = 2**28,
    tick: Callable[[int, int], None] | None = None,
) -> Tensor | BlockedCoupling:
    """Evaluation-time couplings of a network in eval mode: a dense matrix if n^2 floats fit in
    ``max_dense_bytes``, else a :class:`BlockedCoupling` operator."""
    if net.training:
        raise ValueError("blocked coupling evaluation needs the network in eval mode")
    n = x.shape[0]
    if n * n * x.element_size() <= max_dense_bytes:
        return dense_coupling(net, x, mode, avg_degree, symmetric, block_bytes, tick)
    return BlockedCoupling(net, x, mode, avg_degree, symmetric, block_bytes)


class BlockControl:
    """The block-coupling control: K_ij = +b within a group and -b across groups (D section III B).

    Row-normalising the +-1 pattern gives +-1/n; ``b`` rescales it to the trained couplings'
    largest |K_ij| as in the paper. Applied as an O(n k) operator.
    """

    def __init__(self, labels: Tensor, b: float) -> None:
        _, index = torch.unique(labels, return_inverse=True)
        self.onehot = nn.functional.one_hot(index).to(torch.float32)
        self.b = float(b)

    def __call__(self, v: Tensor) -> Tensor:
        onehot = self.onehot.to(v)
        return self.b * (2 * onehot @ (onehot.T @ v) - v.sum(-2, keepdim=True))

    def dense(self) -> Tensor:
        return self.b * (2 * self.onehot @ self.onehot.T - 1)


def max_abs(k: Tensor | BlockedCoupling) -> float:
    """max_ij |K_ij| of a dense or blocked coupling."""
    return k.max_abs() if isinstance(k, BlockedCoupling) else float(k.abs().max())


__all__ = [
    "MODES",
    "BlockControl",
    "BlockedCoupling",
    "CouplingNet",
    "build_coupling",
    "coupling_matrix",
    "dense_coupling",
    "max_abs",
    "mean_degree",
    "normalise",
    "symmetrise",
]
