"""Every invariant on every model of the zoo (tests/model_zoo.py), plus the documented errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import synbal
from model_zoo import ZOO, ZooModel, build
from model_zoo import outputs as _outputs
from model_zoo import same_state as _same_state
from synbal.errors import InvalidWeightError, ModelError, UnsupportedOperationError, VerificationError
from synbal.torch import TorchAdapter, discover

IDS = [z.name for z in ZOO]


@pytest.mark.parametrize("entry", ZOO, ids=IDS)
def test_discovered_groups_exact(entry: ZooModel) -> None:
    model, x = build(entry)
    d = discover(model, (x,))
    assert len(d.groups) == entry.n_groups
    for name, members in entry.members.items():
        assert name in d.names, f"{name} not among groups {d.names[:10]}…"
        group = d.groups[d.names.index(name)]
        assert [d.table.label(int(s)) for s in group] == members
    for key, reason in entry.excluded.items():
        assert key in d.excluded, f"{key} not in {d.excluded}"
        assert reason in d.excluded[key]
    # every neuron slot is either in exactly one group or excluded
    assert sum(g.size for g in d.groups) + int((d.group_of_slot[1:] < 0).sum()) == d.table.n_slots - 1


@pytest.mark.parametrize("entry", ZOO, ids=IDS)
def test_exact_balance_keeps_function_and_reaches_balance(entry: ZooModel) -> None:
    model, x = build(entry)
    original = copy.deepcopy(model)
    res = synbal.balance(model, "l2", "exact", example_inputs=(x,))
    assert res.converged
    assert res.net is not model and _same_state(model, original)  # input untouched
    assert torch.allclose(_outputs(res.net, x), _outputs(original, x), rtol=1e-10, atol=1e-12)
    assert res.regularizer_after <= res.regularizer_before * (1 + 1e-12)
    # R counts every parameter of the model
    total = sum(float((p.detach() ** 2).sum()) for p in original.parameters())
    assert res.regularizer_before == pytest.approx(total, rel=1e-12)
    after = synbal.deficit(res.net, "l2", example_inputs=(x,))
    assert after.max_relative_deficit <= 1e-8
    assert after.regularizer_value == pytest.approx(res.regularizer_after, rel=1e-9)


@pytest.mark.parametrize("entry", ZOO, ids=IDS)
def test_stochastic_agrees_with_exact_and_never_increases_r(entry: ZooModel) -> None:
    model, x = build(entry)
    exact = synbal.balance(model, "l2", "exact", example_inputs=(x,))
    sto = synbal.balance(model, "l2", "stochastic", example_inputs=(x,), seed=3)
    assert sto.converged
    R = np.array([h.regularizer for h in sto.history])
    assert np.all(np.diff(R) <= 1e-12 * R[0])
    np.testing.assert_allclose(sto.log_scales, exact.log_scales, atol=1e-6)
    for name, p in exact.net.named_parameters():
        q = dict(sto.net.named_parameters())[name]
        assert torch.allclose(p, q, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("entry", ZOO, ids=IDS)
@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_any_scaling_keeps_function(entry: ZooModel, seed: int) -> None:
    """Discovery is sound: applying random log-scales to the groups never changes the outputs."""
    model, x = build(entry)
    adapter = TorchAdapter(model, example_inputs=(x,), verify=True)
    u = np.random.default_rng(seed).uniform(-1.0, 1.0, adapter.discovery.n)
    scaled = adapter.apply(u, inplace=False)  # verify=True raises if the function changed
    assert torch.allclose(_outputs(scaled, x), _outputs(model, x), rtol=1e-9, atol=1e-12)
    factors = adapter.parameter_factors(u)
    for name, p in scaled.named_parameters():
        assert torch.allclose(p, dict(model.named_parameters())[name] * factors[name], rtol=1e-12)


def test_every_method_balances_the_mlp() -> None:
    entry = ZOO[0]
    model, x = build(entry)
    reference = synbal.balance(model, "l2", "exact", example_inputs=(x,))
    for method in sorted(synbal._solvers.METHODS):
        if method == "tied":
            continue  # one λ per layer: a different (coarser) optimum
        res = synbal.balance(model, "l2", method, example_inputs=(x,), seed=0)
        assert res.converged, method
        np.testing.assert_allclose(res.log_scales, reference.log_scales, atol=1e-6, err_msg=method)
    tied = synbal.balance(model, "l2", "tied", example_inputs=(x,))
    assert tied.regularizer_after <= tied.regularizer_before


def test_layers_are_the_hidden_layers_of_a_chain() -> None:
    model, x = build(ZOO[0])
    layers = discover(model, (x,)).layers
    assert layers is not None and [len(layer) for layer in layers] == [7, 6]
    rnn_model, rx = build(next(z for z in ZOO if z.name == "rnn"))
    assert discover(rnn_model, (rx,)).layers is None  # hidden units feed each other


def test_other_regularizers() -> None:
    model, x = build(ZOO[0])
    for reg in ("l1", "l0.5", "1*l2+0.1*l1"):
        res = synbal.balance(model, reg, "exact", example_inputs=(x,))
        assert res.converged and res.max_relative_deficit <= 1e-8
        assert torch.allclose(_outputs(res.net, x), _outputs(model, x), rtol=1e-10)
    custom = synbal.CustomRegularizer(g=lambda a: a**2 + a**3, dg=lambda a: 2 * a + 3 * a**2, name="sq+cube")
    res = synbal.balance(model, custom, "stochastic", example_inputs=(x,), seed=0, tol=1e-9)
    assert res.converged and res.regularizer_after < res.regularizer_before


def test_inplace_semantics() -> None:
    model, x = build(ZOO[0])
    before = _outputs(model, x)
    original = copy.deepcopy(model)
    res = synbal.balance(model, "l2", example_inputs=(x,))
    assert _same_state(model, original)
    res2 = synbal.balance(model, "l2", example_inputs=(x,), inplace=True)
    assert res2.net is model and not _same_state(model, original)
    assert _same_state(model, res.net)
    assert torch.allclose(_outputs(model, x), before, rtol=1e-10)


def test_mode_is_restored() -> None:
    model, x = build(next(z for z in ZOO if z.name == "mixed"))
    model.train()
    res = synbal.balance(model, "l2", example_inputs=(x,))
    assert model.training and all(m.training for m in model.modules())
    assert res.net.training


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_round_trip(dtype: torch.dtype) -> None:
    model, x = build(ZOO[0])
    low = copy.deepcopy(model).to(dtype)
    res = synbal.balance(low, "l2", example_inputs=(x.to(dtype),))
    assert all(p.dtype == dtype for p in res.net.parameters())
    # computed in float64: the low-precision result equals the float64 result rounded once
    ref = synbal.balance(model, "l2", example_inputs=(x,))
    for (name, p), (_, q) in zip(res.net.named_parameters(), ref.net.named_parameters(), strict=True):
        scale = float(q.detach().abs().max())
        assert float((p.detach().double() - q.detach()).abs().max()) <= 2e-2 * scale, name
    assert res.regularizer_after < res.regularizer_before


def test_fold_batchnorm_option() -> None:
    entry = next(z for z in ZOO if z.name == "resnet_block")
    model, x = build(entry)
    res = synbal.balance(model, "l2", example_inputs=(x,), fold_batchnorm=True)
    assert res.converged and res.max_relative_deficit <= 1e-8
    assert not any(isinstance(m, nn.BatchNorm2d) for m in res.net.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the input is untouched
    assert torch.allclose(_outputs(res.net, x), _outputs(model, x), rtol=1e-9, atol=1e-12)
    assert "conv1[0]" in res.scales  # conv channels are units once BN is folded


# ------------------------------------------------------------------ documented errors
def test_train_mode_batchnorm_is_refused() -> None:
    model, x = build(next(z for z in ZOO if z.name == "resnet_block"))
    model.train()
    with pytest.raises(ModelError, match=r"BatchNorm 'bn1' is in training mode.*model.eval\(\)"):
        synbal.balance(model, "l2", example_inputs=(x,))
    assert model.training


class _Rolled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 5)
        self.b = nn.Linear(5, 5)
        self.c = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        h = torch.roll(h, 1, dims=1)
        return self.c(torch.relu(self.b(h)))


def test_unsupported_operation_names_node_op_and_module() -> None:
    model = _Rolled().double()
    x = torch.randn(3, 4, dtype=torch.float64)
    with pytest.raises(UnsupportedOperationError, match=r"node 'roll'.*torch\.roll.*module '<root>'.*barriers=True"):
        synbal.balance(model, "l2", example_inputs=(x,))
    res = synbal.balance(model, "l2", example_inputs=(x,), barriers=True)
    assert set(res.scales) == {f"b[{i}]" for i in range(5)}  # a's units touch the barrier
    assert "barrier" in res.excluded["a[0]..a[4] (5 units)"]
    assert torch.allclose(_outputs(res.net, x), _outputs(model, x), rtol=1e-10)


def test_nan_weights_are_refused() -> None:
    model, x = build(ZOO[0])
    with torch.no_grad():
        model[2].weight[1, 3] = float("nan")
    with pytest.raises(InvalidWeightError, match=r"'2.weight' has 1 NaN or infinite"):
        synbal.balance(model, "l2", example_inputs=(x,))


def test_missing_example_inputs() -> None:
    model, _ = build(next(z for z in ZOO if z.name == "cnn"))
    with pytest.raises(ModelError, match="example_inputs"):
        synbal.balance(model, "l2")
    mlp, x = build(ZOO[0])  # a plain MLP needs no tracing, and is checked on probe inputs
    res = synbal.balance(mlp, "l2")
    assert res.converged and torch.allclose(_outputs(res.net, x), _outputs(mlp, x), rtol=1e-10)


def test_verification_catches_a_wrong_scaling() -> None:
    model, x = build(ZOO[0])
    adapter = TorchAdapter(model, example_inputs=(x,))
    adapter.discovery.uses.pop("4.weight")  # pretend the outgoing weights were not compensated
    with pytest.raises(VerificationError, match="does not compute the same function"):
        adapter.apply(np.ones(adapter.discovery.n), inplace=False)


def test_inspect_prints_groups_and_reasons() -> None:
    model, x = build(next(z for z in ZOO if z.name == "gelu_block"))
    text = str(synbal.inspect(model, x))
    assert text.startswith("Sequential: 6 scalable groups (6 neurons)")
    assert "group 2[0]: 1 neuron, degree 1" in text
    assert "in : 2.weight[0, :]  2.bias[0]" in text and "out: 4.weight[:, 0]" in text
    assert "0[0]..0[5] (6 units): feeds nn.GELU" in text


def test_embedding_units() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    idx = torch.tensor([[1, 2, 3], [4, 5, 9]])
    d = discover(model, (idx,))
    assert d.names == [f"0[{i}]" for i in range(4)] + [f"2[{i}]" for i in range(3)]
    res = synbal.balance(model, "l2", example_inputs=(idx,))
    assert res.converged and torch.allclose(_outputs(res.net, idx), _outputs(model, idx), rtol=1e-10)


def test_fold_batchnorm_inplace() -> None:
    model, x = build(next(z for z in ZOO if z.name == "resnet_block"))
    before = _outputs(model, x)
    res = synbal.balance(model, "l2", example_inputs=(x,), fold_batchnorm=True, inplace=True)
    assert res.net is model and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert torch.allclose(_outputs(model, x), before, rtol=1e-9, atol=1e-12)


class _Arith(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(3, 2)
        self.out = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x)) / 2.0 * 3.0  # numbers pass scales through
        g = 2.0 / (torch.relu(self.b(x)) + 1.0)  # a constant added, then a reciprocal: not scalable
        return self.out(torch.cat([h, g], dim=1))


def test_arithmetic_with_numbers() -> None:
    torch.manual_seed(0)
    model = _Arith().double()
    x = torch.randn(4, 3, dtype=torch.float64)
    d = discover(model, (x,))
    assert d.names == [f"a[{i}]" for i in range(4)]
    assert "constant is added" in d.excluded["b[0]..b[1] (2 units)"]
    res = synbal.balance(model, "l2", example_inputs=(x,))
    assert torch.allclose(_outputs(res.net, x), _outputs(model, x), rtol=1e-10)


@pytest.mark.parametrize("name", ["resnet_block", "rnn", "transposed"])
def test_every_method_on_models(name: str) -> None:
    """Every engine method runs on the extracted unit graph and reaches the exact state."""
    model, x = build(next(z for z in ZOO if z.name == name))
    adapter = TorchAdapter(model, example_inputs=(x,))
    reference = synbal.balance(model, "l2", "exact", example_inputs=(x,))
    for method in sorted(synbal._solvers.METHODS):
        if method == "tied":
            continue
        if method == "alternating" and adapter.discovery.layers is None:
            with pytest.raises(synbal.SynbalError, match="bipartite"):
                synbal.balance(model, "l2", method, example_inputs=(x,))
            continue
        res = synbal.balance(model, "l2", method, example_inputs=(x,), seed=0)
        assert res.converged, method
        np.testing.assert_allclose(res.log_scales, reference.log_scales, atol=1e-6, err_msg=method)


def test_discovery_falls_back_to_real_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    """If an op cannot run on fake tensors, discovery walks the graph on the real inputs instead."""
    import synbal._adapters.torch.discovery as discovery

    def no_fake(*args: object, **kwargs: object) -> None:
        raise RuntimeError("fake tensors unsupported here")

    entry = next(z for z in ZOO if z.name == "locally_connected")
    model, x = build(entry)
    monkeypatch.setattr(discovery, "_walk_fake", no_fake)
    assert len(discover(model, (x,)).groups) == entry.n_groups


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 6)
        self.norm = nn.LayerNorm(6)
        self.mid = nn.Linear(6, 6)
        self.pre = nn.Linear(6, 6)
        self.attn = nn.MultiheadAttention(6, 2, batch_first=True)
        self.out = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pre(torch.relu(self.mid(self.norm(self.inp(x)))))
        a, _ = self.attn(h, h, h)
        return torch.softmax(self.out(a), dim=-1)


def test_layernorm_attention_and_softmax_block_units() -> None:
    torch.manual_seed(0)
    model = _Attention().double().eval()
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    d = discover(model, (x,))
    # the LayerNorm's affine γ, β feed new units; its input is normalised, so fixed
    # pre's units scale against the attention's input columns; each query feature inversely to the key
    # feature it meets; each value feature against an out_proj column
    assert d.names == ([f"norm[{i}]" for i in range(6)] + [f"mid[{i}]" for i in range(6)]
                       + [f"pre[{i}]" for i in range(6)] + [f"attn.q[{i}]" for i in range(6)]
                       + [f"attn.v[{i}]" for i in range(6)] + [f"attn.out_proj[{i}]" for i in range(6)])
    assert "normalised by LayerNorm 'norm'" in d.excluded["inp[0]..inp[5] (6 units)"]
    assert set(d.excluded) == {"inp[0]..inp[5] (6 units)", "out[0]..out[2] (3 units)"}
    assert "softmax" in d.excluded["out[0]..out[2] (3 units)"]
    assert "attn.in_proj_weight" in d.uses and "norm.weight" in d.uses
    res = synbal.balance(model, "l2", example_inputs=(x,))
    assert res.converged and torch.allclose(_outputs(res.net, x), _outputs(model, x), rtol=1e-10)


@pytest.mark.parametrize(("kernel", "stride", "padding"), [((3, 2), (2, 1), (1, 0)), ((2, 2), (1, 2), (1, 1))])
def test_locally_connected_column_slots_match_unfold(kernel: tuple[int, int], stride: tuple[int, int],
                                                     padding: tuple[int, int]) -> None:
    from synbal._adapters.torch.locally_connected import LocallyConnected2d
    from synbal._adapters.torch.rules import _unfold_ids

    layer = LocallyConnected2d(2, 3, (5, 6), kernel, stride, padding)
    ids = np.arange(1, 2 * 5 * 6 + 1).reshape(2, 5, 6)
    expected = torch.nn.functional.unfold(torch.from_numpy(ids).double()[None], kernel, padding=padding,
                                          stride=stride)[0].numpy().astype(np.int64)
    np.testing.assert_array_equal(_unfold_ids(ids, kernel, stride, padding, layer.out_size), expected)
    model = nn.Sequential(layer, nn.ReLU(), nn.Flatten(), nn.Linear(3 * layer.out_size[0] * layer.out_size[1], 2))
    model = model.double()
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64)
    res = synbal.balance(model, "l2", example_inputs=(x,))
    assert res.converged and torch.allclose(_outputs(res.net, x), _outputs(model, x), rtol=1e-10)


@pytest.mark.parametrize(("kernel", "stride", "padding"), [(3, 1, 0), ((3, 2), (2, 1), (1, 0))])
def test_locally_connected_forward_and_gradients_match_the_definition(
        kernel: int | tuple[int, int], stride: int | tuple[int, int], padding: int | tuple[int, int]) -> None:
    """out[n, o, l] = Σ_k patch[n, k, l] · weight[l, o, k] (+ bias), with exact gradients."""
    from synbal._adapters.torch.locally_connected import LocallyConnected2d

    layer = LocallyConnected2d(2, 3, (7, 6), kernel, stride, padding).double()
    x = torch.randn(4, 2, 7, 6, dtype=torch.float64, requires_grad=True)
    cols = torch.nn.functional.unfold(x, layer.kernel_size, padding=layer.padding, stride=layer.stride)
    expected = torch.einsum("nkl,lok->nol", cols, layer.weight).reshape(4, 3, *layer.out_size) + layer.bias
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(layer, (x,))
