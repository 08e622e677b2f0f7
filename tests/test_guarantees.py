"""What an explanation promises beyond its map: bounded memory, the caller's world left as found (also after an
error), and threads that do not interfere. README, "Guarantees and limits"."""

from __future__ import annotations

import copy
import gc
import os
import threading

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from semantic_pullbacks import Relative, UnknownClassError
from semantic_pullbacks.methods import METHODS, DeepLift, GuidedGradCam, PullbackAscent, SoftPullback
from small_methods import CAPTUM_NOTES, ignoring_captum_notes, small_explainer
from small_methods import small_net as net


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads RSS from /proc")
def test_memory_returns_to_its_baseline_after_300_explanations():
    model, x = net(), torch.randn(2, 3, 16, 16)
    explainer = SoftPullback(model, {"relu": Relative(2.0)})
    for _ in range(30):  # warm up: allocator pools, lazily built caches
        explainer.attribute(x, target=1)
    gc.collect()
    baseline = rss_bytes()
    for i in range(300):
        explainer.attribute(x, target=i % 5)
    gc.collect()
    grown = rss_bytes() - baseline
    assert grown < 5 * 2**20, f"RSS grew by {grown / 2**20:.2f} MiB over 300 explanations"


def _world(model: nn.Module, x: torch.Tensor) -> dict:
    return {
        "x": x.detach().clone(),
        "x.requires_grad": x.requires_grad,
        "x.grad": x.grad,
        "x.grad value": None if x.grad is None else x.grad.clone(),
        "state": copy.deepcopy(model.state_dict()),
        "grads": [p.grad for p in model.parameters()],
        "grad values": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "modes": [m.training for m in model.modules()],
    }


def _assert_same_world(before: dict, model: nn.Module, x: torch.Tensor) -> None:
    now = _world(model, x)
    assert torch.equal(now["x"], before["x"]) and now["x.requires_grad"] == before["x.requires_grad"]
    assert now["x.grad"] is before["x.grad"] and torch.equal(now["x.grad value"], before["x.grad value"])
    for key, value in before["state"].items():
        assert torch.equal(now["state"][key], value), key
    assert all(a is b for a, b in zip(now["grads"], before["grads"]))
    assert all(torch.equal(a, b) for a, b in zip(now["grad values"], before["grad values"]))
    assert now["modes"] == before["modes"]


def _caller_world(train: bool) -> tuple[nn.Module, torch.Tensor]:
    model = net()
    if train:  # the awkward case: a model in training mode, whose BatchNorm updates its statistics on every pass
        model.train()
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    x.grad = torch.full_like(x, 5.0)
    return model, x


@ignoring_captum_notes
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", list(METHODS))
def test_the_callers_world_is_left_as_found_also_after_an_error(name, train):
    model, x = _caller_world(train)
    before = _world(model, x)
    explainer = small_explainer(name, model)
    calls = []

    def counted_target(output: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return output[:, 1]

    with pytest.warns(UserWarning, match="training mode") if train else _no_warning():
        explainer.attribute(x, target=counted_target)
    _assert_same_world(before, model, x)

    last, calls[:] = len(calls), []

    def failing_target(output: torch.Tensor) -> torch.Tensor:  # fails at its last call, after every pass but one
        calls.append(1)
        if len(calls) == last:
            raise UnknownClassError("no such class")
        return output[:, 1]

    with pytest.raises(UnknownClassError), pytest.warns(UserWarning) if train else _no_warning():
        explainer.attribute(x, target=failing_target)
    assert len(calls) == last
    _assert_same_world(before, model, x)
    plain = x.detach().clone().requires_grad_(True)  # and the ordinary gradient is back
    model.eval()(plain)[:, 1].sum().backward()
    reference = x.detach().clone().requires_grad_(True)
    net()(reference)[:, 1].sum().backward()
    torch.testing.assert_close(plain.grad, reference.grad)


class _ReentrantCheckpoint(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = net()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[6:](checkpoint(self.net[:6], x, use_reentrant=True))


@pytest.mark.parametrize("name", [n for n, cls in METHODS.items() if not issubclass(cls, (DeepLift, GuidedGradCam))])
def test_reentrant_checkpointing_adds_nothing_to_the_parameters_grad(name):
    """Reentrant checkpointing refuses ``autograd.grad``: the pullback is taken with ``.backward()``, which also
    accumulates into every parameter's ``.grad``. Those must come back as they were, objects and values."""
    model = _ReentrantCheckpoint().eval()
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    x.grad = torch.full_like(x, 5.0)
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    before = _world(model, x)
    small_explainer(name, model).attribute(x, target=1)
    _assert_same_world(before, model, x)


class _no_warning:
    """No warning but Captum's notes on its own hooks."""

    def __enter__(self) -> None:
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("error")
        for note in CAPTUM_NOTES:
            warnings.filterwarnings("ignore", f"{note}.*", UserWarning)

    def __exit__(self, *exc: object) -> None:
        self._catch.__exit__(*exc)


def test_two_threads_explaining_at_once_get_the_maps_of_one_after_the_other():
    model = net()
    xs = [torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    settings = [{"relu": 0.3}, {"relu": Relative(3.0), "maxpool": 1.0}]
    shared = SoftPullback(model)  # one explainer used by both threads, and one of its own per thread
    own = [SoftPullback(model, s) for s in settings]
    jobs = [(shared, xs[0], 1), (shared, xs[1], 2), (own[0], xs[0], 3), (own[1], xs[1], 4)] * 3
    expected = [explainer.attribute(x, target=t) for explainer, x, t in jobs]

    results: dict[int, torch.Tensor] = {}
    barrier = threading.Barrier(2)

    def worker(parity: int) -> None:
        barrier.wait()
        for i in range(parity, len(jobs), 2):
            explainer, x, t = jobs[i]
            results[i] = explainer.attribute(x, target=t)

    threads = [threading.Thread(target=worker, args=(p,)) for p in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == len(jobs)
    for i, reference in enumerate(expected):
        torch.testing.assert_close(results[i], reference, rtol=1e-6, atol=1e-9)


@ignoring_captum_notes
@pytest.mark.parametrize("name", [n for n, cls in METHODS.items() if not cls.stochastic])
def test_one_sample_alone_is_its_row_of_the_batch_with_relative_temperatures(name):
    """Relative temperatures take each sample's own spread: batching never changes a sample's map. (Stochastic
    methods draw their noise for the whole batch, so there a sample's draws depend on the batch.)"""
    model = net()
    x = torch.randn(3, 3, 8, 8)
    relative = {"relu": Relative(2.0), "gelu": Relative(1.0), "maxpool": Relative(0.5)}
    explainer = small_explainer(name, model, **({"temperatures": relative} if METHODS[name].uses_pullback else {}))
    batch = explainer.attribute(x, target=[0, 1, 2])
    for i in range(3):
        torch.testing.assert_close(explainer.attribute(x[i : i + 1], target=i), batch[i : i + 1])


def test_batchnorm_in_training_mode_under_an_eval_model_warns_and_is_restored():
    model = net()
    model[1].train()  # the top level says eval, one BatchNorm does not
    stats = copy.deepcopy(model[1].state_dict())
    with pytest.warns(UserWarning, match=r"training mode \(1\)"):
        PullbackAscent(model, steps=4).attribute(torch.randn(2, 3, 8, 8), target=1)
    assert int(model[1].num_batches_tracked) == int(stats["num_batches_tracked"]) == 0
    for key, value in stats.items():
        assert torch.equal(model[1].state_dict()[key], value), key
    assert model[1].training and not model.training
