"""Training by gradient descent on the time-averaged synchrony loss (D eqs. 3-4).

One gradient step: a batch of n training oscillators (a seeded permutation per epoch), their
couplings K = K_mu(X), a simulation from theta_0 and the window loss: circular variance for the
disorder cases, the cluster loss of eqs. 5-6 for labelled data.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor

from .checkpoint import Checkpoint, build_net
from .config import BATCH_ORDER, EVAL_PHASES, NET_INIT, PHASES, KuraNetConfig, derive_seed
from .coupling import CouplingNet, coupling_matrix
from .data import CaseData, Features, case_data, stream
from .losses import circular_variance, cluster_loss
from .simulate import initial_phases, simulate


def resolve_device(name: str) -> torch.device:
    """cuda when asked for and available, else cpu."""
    return torch.device("cuda" if name == "cuda" and torch.cuda.is_available() else "cpu")


def load_case(cfg: KuraNetConfig) -> CaseData:
    """The configured case's training and test features."""
    opts = dict(cfg.data_options)
    if cfg.case == "III":
        opts.setdefault("max_delay", cfg.max_delay)
    return case_data(cfg.case, cfg.seed, cfg.train_size, cfg.test_size, cfg.image, cfg.mask, **opts)


def loss_function(feats: Features) -> Callable[[Tensor], Tensor]:
    """Circular variance, or the (normalised) cluster loss when the oscillators carry labels."""
    return circular_variance if feats.labels is None else partial(cluster_loss, labels=feats.labels)


def init_net(cfg: KuraNetConfig, feature_dim: int, key: int = NET_INIT) -> CouplingNet:
    """A freshly initialised coupling network, seeded by (cfg.seed, key)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, key))
        return build_net(cfg, feature_dim)


def batch_loss(
    net: CouplingNet, feats: Features, cfg: KuraNetConfig, generator: torch.Generator | None
) -> Tensor:
    """Window loss of one network of oscillators ``feats`` under ``net``'s couplings."""
    k = coupling_matrix(net, feats.x, cfg.mode, cfg.avg_degree, cfg.symmetric)
    theta0 = initial_phases(feats.n, cfg.init, generator, feats.x.device)
    return simulate(feats, k, cfg.integration, theta0, loss_function(feats)).loss


@torch.no_grad()
def test_loss(
    net: CouplingNet, data: CaseData, cfg: KuraNetConfig, batches: int, key: int
) -> float:
    """Mean window loss over the first ``batches`` test networks of n oscillators (eval mode)."""
    was = net.training
    net.eval()
    dev = next(net.parameters()).device
    total, count = 0.0, 0
    for b in range(min(batches, data.test.n // cfg.n)):
        feats = data.test.subset(slice(b * cfg.n, (b + 1) * cfg.n)).to(dev)
        total += float(batch_loss(net, feats, cfg, _gen(cfg.seed, key, b)))
        count += 1
    net.train(was)
    return total / max(count, 1)


def _gen(seed: int, *keys: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, *keys))


def make_optimizer(cfg: KuraNetConfig, net: CouplingNet) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(net.parameters(), lr=cfg.lr)
    return torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum)


def train(
    cfg: KuraNetConfig,
    progress: Callable[[int, float], None] | None = None,
    log: Callable[[str], None] = print,
) -> Checkpoint:
    """Train K_mu on ``cfg``'s case; ``progress(step, loss)`` after every gradient step."""
    device = resolve_device(cfg.device)
    data = load_case(cfg)
    if data.train.n < cfg.n:
        raise ValueError(f"the training set has {data.train.n} oscillators, fewer than n = {cfg.n}")
    net = init_net(cfg, data.train.x.shape[1]).to(device).train()
    opt = make_optimizer(cfg, net)
    train_feats = data.train.to(device)
    per_epoch = data.train.n // cfg.n
    history: list[float] = []
    tests: list[float] = []
    for epoch in range(cfg.epochs):
        order = torch.as_tensor(
            stream(cfg.seed, BATCH_ORDER, epoch).permutation(data.train.n), device=device
        )
        for b in range(per_epoch):
            step = epoch * per_epoch + b
            feats = train_feats.subset(order[b * cfg.n : (b + 1) * cfg.n])
            opt.zero_grad(set_to_none=True)
            loss = batch_loss(net, feats, cfg, _gen(cfg.seed, PHASES, step))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.max_grad_norm)
            opt.step()
            history.append(float(loss.detach()))
            if progress is not None:
                progress(step + 1, history[-1])
        tests.append(test_loss(net, data, cfg, cfg.eval_batches, key=EVAL_PHASES))
        recent = history[-per_epoch:]
        log(
            f"epoch {epoch + 1}/{cfg.epochs}: train loss {sum(recent) / len(recent):.4f}, test loss {tests[-1]:.4f}"
        )
    return Checkpoint(cfg, net.cpu().eval(), torch.tensor(history), torch.tensor(tests))
