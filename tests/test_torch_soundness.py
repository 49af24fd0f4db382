"""Issue 11's held-out audit: discovery never lets a scale pass an op it does not understand.

Each test reproduces one defect of the audit (numbered as in the issue) and fails without its fix.
The layout ops, weight norm, pixel shuffle and layer scale models are in the zoo
(tests/model_zoo.py), where every zoo invariant covers them too.
"""

from __future__ import annotations

import copy
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

import synbal
from model_zoo import ZOO, Recurrent, ZooModel, build, tanh_mlp
from model_zoo import outputs as _out
from model_zoo import same_state as _same_state
from synbal._adapters.torch.apply import scale_parameters_undoably
from synbal._adapters.torch.undo import ScaledMatrixUndo
from synbal._cli.main import main
from synbal._front import NO_SCALABLE_UNITS
from synbal.errors import ModelError, UnsupportedOperationError, VerificationError
from synbal.torch import TorchAdapter, discover

IDS = [z.name for z in ZOO]


def _zoo(name: str) -> tuple[nn.Module, torch.Tensor]:
    return build(next(z for z in ZOO if z.name == name))


# ------------------------------------------------------------------ the function check on the whole zoo
@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["f64", "f32"])
@pytest.mark.parametrize("entry", ZOO, ids=IDS)
def test_function_check_holds_on_every_zoo_model(entry: ZooModel, dtype: torch.dtype, rtol: float) -> None:
    model, x = build(entry)
    model, x = model.to(dtype), x.to(dtype)
    res = synbal.balance(model, "l2", example_inputs=(x,))
    before, after = _out(model, x).double(), _out(res.net, x).double()
    assert float((after - before).abs().max()) <= rtol * float(before.abs().max())
    assert res.regularizer_after <= res.regularizer_before * (1 + 1e-9)


# ------------------------------------------------------------------ 1. no scalable unit
NO_UNITS = {
    "tanh_mlp": (tanh_mlp, (2, 3)), "lstm": (lambda: Recurrent("lstm"), (2, 5, 3)),
    "gru": (lambda: Recurrent("gru"), (2, 5, 3)), "tanh_rnn": (lambda: Recurrent("tanh"), (2, 5, 3)),
    "relu_rnn_h0": (lambda: Recurrent("relu", zero_state=True), (2, 5, 3)),
}


@pytest.mark.parametrize("name", list(NO_UNITS))
def test_no_scalable_units_is_a_result_that_changes_nothing(name: str) -> None:
    make, shape = NO_UNITS[name]
    model, x = build(ZooModel(name, make, shape, 0))
    original = copy.deepcopy(model)
    for method in ("exact", "stochastic", "layer", "tied"):
        res = synbal.balance(model, "l2", method, example_inputs=(x,))
        assert res.notes[0] == NO_SCALABLE_UNITS and res.report()["notes"][0] == NO_SCALABLE_UNITS
        assert res.converged and res.problem.n == 0 and res.scales == {}
        assert res.regularizer_after == res.regularizer_before > 0
        assert _same_state(res.net, original) and _same_state(model, original)
    report = synbal.deficit(model, "l2", example_inputs=(x,))
    assert report.units == [] and report.max_relative_deficit == 0.0 and report.regularizer_value > 0


def test_no_scalable_units_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.torch import save_model

    weights, out = tmp_path / "w.safetensors", tmp_path / "out.safetensors"
    save_model(tanh_mlp(), str(weights))
    code = main(["balance", "--factory", "model_zoo:tanh_mlp", "--weights", str(weights), "--example-shape", "2,3",
                 "-o", str(out)])
    assert code == 0 and out.exists()
    assert NO_SCALABLE_UNITS in capsys.readouterr().out


def test_relu_rnn_with_a_constant_initial_state_says_why() -> None:
    model, x = build(ZooModel("h0", lambda: Recurrent("relu", zero_state=True), (2, 5, 3), 0))
    assert "initial state of 'rnn' is a constant" in discover(model, (x,)).excluded["rnn.l0[0]..rnn.l0[3] (4 units)"]


# ------------------------------------------------------------------ 2. shape-moving ops are exact or barriers
def test_transposes_and_data_keep_the_function_without_verification() -> None:
    """The audit: h.T.T, h.mT.mT and h.data were constants of scale 1; verify=False returned a changed net."""
    model, x = _zoo("layout")
    res = synbal.balance(model, "l2", example_inputs=(x,), verify=False)
    assert "a[0]" in res.scales and abs(np.log(res.scales["a[0]"])) > 1e-3  # a's units move
    torch.testing.assert_close(_out(res.net, x), _out(model, x), rtol=1e-10, atol=1e-12)


class _Ops(nn.Module):
    def __init__(self, op: str) -> None:
        super().__init__()
        self.op = op
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        if self.op == "long":
            h = (h * 4).long().float()  # rounds: not homogeneous
        elif self.op == "view_dtype":
            h = h.view(torch.int64).view(torch.float64)  # reinterprets the bits
        elif self.op == "cumprod":
            h = torch.cumprod(h, 1)  # no rule at all
        elif self.op == "zeros_like":
            h = h + torch.zeros_like(h).add(1.0).mul(torch.ones_like(h))  # a constant built from h's shape
        return self.b(h)


@pytest.mark.parametrize(("op", "expected"), [
    ("long", "to torch.int64"), ("view_dtype", "reinterprets the bits"), ("cumprod", "torch.cumprod"),
])
def test_an_op_without_an_exact_rule_stops_scales(op: str, expected: str) -> None:
    torch.manual_seed(0)
    model = _Ops(op).double()
    x = torch.randn(3, 3, dtype=torch.float64)
    if op == "long":  # a cast to integers is a known non-homogeneous op: a fixed unit, not an error
        assert expected in discover(model, (x,)).excluded["a[0]..a[3] (4 units)"]
        return
    with pytest.raises(UnsupportedOperationError, match=re.escape(expected)):
        discover(model, (x,))
    d = discover(model, (x,), barriers=True)
    assert "barrier" in d.excluded["a[0]..a[3] (4 units)"]


def test_a_constant_built_from_shapes_does_not_stop_its_source() -> None:
    torch.manual_seed(0)
    model = _Ops("zeros_like").double()
    x = torch.randn(3, 3, dtype=torch.float64)
    reason = discover(model, (x,)).excluded["a[0]..a[3] (4 units)"]
    assert "a tensor of scale 1 (model input or constant) is added" in reason


# ------------------------------------------------------------------ 3. computed weights and buffers as weights
class _Buffered(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.register_buffer("w", torch.randn(4, 4))
        self.b = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(F.linear(torch.relu(self.a(x)), self.w)))


def test_spectral_norm_and_other_parametrizations_are_refused_with_the_reason() -> None:
    from torch.nn.utils import parametrizations, spectral_norm

    torch.manual_seed(0)
    x = torch.randn(3, 3, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        variants = {
            "spectral_norm": parametrizations.spectral_norm(nn.Linear(4, 4)),
            "old spectral_norm": spectral_norm(nn.Linear(4, 4)),
            "orthogonal": parametrizations.orthogonal(nn.Linear(4, 4)),
        }
    for what, layer in variants.items():
        model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), layer, nn.ReLU(), nn.Linear(4, 2)).double().eval()
        reason = "largest singular value" if "spectral" in what else "_Orthogonal"
        with pytest.raises(UnsupportedOperationError, match=f"2.weight is computed by .*{reason}"):
            synbal.balance(model, "l2", example_inputs=(x,))
        res = synbal.balance(model, "l2", example_inputs=(x,), barriers=True)
        assert "barrier" in res.excluded["0[0]..0[3] (4 units)"] and "barrier" in res.excluded["2[0]..2[3] (4 units)"]
        torch.testing.assert_close(_out(res.net, x), _out(model, x), rtol=1e-10, atol=1e-12)


def test_a_buffer_used_as_a_weight_is_a_constant() -> None:
    torch.manual_seed(0)
    model = _Buffered().double()
    x = torch.randn(3, 3, dtype=torch.float64)
    d = discover(model, (x,))
    assert "w is a buffer" in d.excluded["a[0]..a[3] (4 units)"] and d.n == 0


def test_weight_norm_scales_through_g_only() -> None:
    model, x = _zoo("weight_norm")
    res = synbal.balance(model, "l2", example_inputs=(x,))
    old = dict(model.named_parameters())
    changed = {name for name, p in res.net.named_parameters() if not torch.equal(p, old[name])}
    assert {"2.parametrizations.weight.original0", "5.weight_g"} <= changed  # g of both kinds
    assert not changed & {"2.parametrizations.weight.original1", "5.weight_v"}  # v never


# ------------------------------------------------------------------ 4, 5. QAT refused, torch.compile unwrapped
def test_quantization_aware_training_modules_are_refused_up_front() -> None:
    from torch.ao.nn.intrinsic import qat as iqat
    from torch.ao.nn.qat import Linear as QatLinear
    from torch.ao.quantization import get_default_qat_qconfig

    qconfig = get_default_qat_qconfig()
    linear = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), QatLinear(4, 2, qconfig=qconfig)).eval()
    conv = nn.Sequential(iqat.ConvBnReLU2d(3, 4, 3, qconfig=qconfig), nn.Conv2d(4, 2, 1)).eval()
    for model, x, where in ((linear, torch.randn(2, 3), "'2'"), (conv, torch.randn(1, 3, 6, 6), "'0'")):
        with pytest.raises(ModelError, match=f"module {where} .*quantization-aware-training module"):
            synbal.balance(model, "l2", example_inputs=(x,))


def test_a_compiled_model_is_balanced_through_the_module_it_wraps() -> None:
    model, x = _zoo("mlp")
    compiled = torch.compile(model)
    res = synbal.balance(compiled, "l2", example_inputs=(x,))
    reference = synbal.balance(model, "l2", example_inputs=(x,))
    assert isinstance(res.net, nn.Sequential) and _same_state(res.net, reference.net)
    inplace = synbal.balance(compiled, "l2", example_inputs=(x,), inplace=True)
    assert inplace.net is compiled and _same_state(model, reference.net)


# ------------------------------------------------------------------ 6. in place, a failed verification rolls back
@pytest.mark.parametrize("fold", [False, True])
def test_a_failed_in_place_verification_leaves_the_model_unchanged(fold: bool) -> None:
    model, x = _zoo("resnet_block" if fold else "mlp")
    original = copy.deepcopy(model)
    adapter = TorchAdapter(model, example_inputs=(x,), fold_batchnorm=fold)
    adapter.discovery.uses.pop("fc.weight" if fold else "4.weight")  # the outgoing weights go uncompensated
    u = np.random.default_rng(0).uniform(-1, 1, adapter.discovery.n)
    with pytest.raises(VerificationError, match="rolled back"):
        adapter.apply(u, inplace=True)
    assert _same_state(model, original)
    assert [type(m) for m in model.modules()] == [type(m) for m in original.modules()]  # BatchNorms are back
    torch.testing.assert_close(_out(model, x), _out(original, x), rtol=0, atol=0)


# ------------------------------------------------------------------ 7. error messages
class _DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        return h * 2 if h.sum() > 0 else h


class _ShapeDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x if x.dim() == 2 else x.flatten(1)))
        return self.b(h)


def test_messages_name_the_cause_without_fx_noise() -> None:
    x = torch.randn(3, 3, dtype=torch.float64)
    with pytest.raises(ModelError, match=r"control flow that depends on tensor values at .*test_torch_soundness"):
        synbal.balance(_DataDependent().double(), "l2", example_inputs=(x,))
    # fx cannot follow a shape test, torch.export can: the model is balanced
    res = synbal.balance(_ShapeDependent().double(), "l2", example_inputs=(x,))
    assert set(res.scales) == {f"a[{i}]" for i in range(4)}
    for bad, pattern in ((torch.randn(3, 4, dtype=torch.float64), r"failed at node '_0' \(nn.Linear in module '0'\)"),):
        with pytest.raises(ModelError, match=pattern) as info:
            synbal.balance(_zoo("mlp")[0], "l2", example_inputs=(bad,))
        assert "While executing" not in str(info.value) and "tlparse" not in str(info.value)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    with pytest.raises(UnsupportedOperationError) as unsupported:
        synbal.balance(nn.Sequential(model, nn.Softmin(dim=1), nn.Linear(2, 2).double()), "l2", example_inputs=(x,))
    assert "While executing" not in str(unsupported.value) and "Original traceback" not in str(unsupported.value)


def test_batchnorm_reason_and_folding_note() -> None:
    model, x = _zoo("resnet_block")
    reason = discover(model, (x,)).excluded["conv1[0]..conv1[3] (4 units)"]
    assert "running mean" in reason and "fold_batchnorm=True" in reason and "scale-invariant" not in reason
    res = synbal.balance(model, "l2", example_inputs=(x,), fold_batchnorm=True)
    assert any("BatchNorm layers folded" in n and "bn1" in n for n in res.notes)
    assert synbal.balance(model, "l2", example_inputs=(x,)).notes == []


# ------------------------------------------------------------------ 8. power-of-two scales, bit-for-bit
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", ["mlp", "resnet_block", "locally_connected", "weight_norm", "layer_scale", "rnn"])
def test_pow2_scales_keep_low_precision_outputs_bit_for_bit(name: str, dtype: torch.dtype) -> None:
    model, x = _zoo(name)
    model, x = model.to(dtype), x.to(dtype)
    exact = synbal.balance(model, "l2", example_inputs=(x,))
    res = synbal.balance(model, "l2", example_inputs=(x,), round_scales="pow2")
    assert torch.equal(_out(res.net, x), _out(model, x))
    k = np.log2(np.array(list(res.scales.values())))
    assert np.array_equal(k, np.round(k)) and np.any(k != 0)
    assert res.regularizer_after <= res.regularizer_before
    loss = (res.regularizer_after - exact.regularizer_after) / exact.regularizer_after
    assert res.rounding_cost == pytest.approx(loss, rel=1e-6, abs=1e-12)
    assert 0 <= res.rounding_cost < 0.2 and res.report()["rounding_cost"] == res.rounding_cost


def test_pow2_verification_demands_equal_outputs() -> None:
    model, x = _zoo("mlp")
    adapter = TorchAdapter(model, example_inputs=(x,))
    w = adapter.discovery.uses["4.weight"]
    adapter.discovery.uses["4.weight"] = type(w)(w.name, w.row, np.zeros_like(w.col), w.bias)  # 2^-k lost
    u = np.array([np.log(2.0) if name.startswith("2[") else 0.0 for name in adapter.discovery.names])
    with pytest.raises(VerificationError, match="bit-for-bit"):
        adapter.apply(u, inplace=False)
    with pytest.raises(synbal.SynbalError, match="unknown round_scales 'pow3'"):
        synbal.balance(model, "l2", example_inputs=(x,), round_scales="pow3")


# ------------------------------------------------------------------ 9. missing rules
def test_aten_embedding_in_an_exported_program() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    idx = torch.tensor([[1, 2, 3], [4, 5, 9]])
    program = torch.export.export(model, (idx,)).module()
    assert discover(program, (idx,)).names == [f"0[{i}]" for i in range(4)] + [f"2[{i}]" for i in range(3)]
    res = synbal.balance(program, "l2", example_inputs=(idx,))
    assert res.converged and torch.allclose(_out(res.net, idx), _out(model, idx), rtol=1e-10)


def test_embedding_with_max_norm_is_not_scaled() -> None:
    class MaxNorm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Parameter(torch.randn(10, 4))
            self.fc = nn.Linear(4, 2)

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.relu(F.embedding(idx, self.emb, max_norm=1.0)))

    d = discover(MaxNorm(), (torch.tensor([[1, 2]]),))
    assert d.n == 0 and "emb" not in d.uses


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_in_place_rollback_restores_every_bit_without_a_copy_of_the_weights(dtype: torch.dtype) -> None:
    model, x = _zoo("mlp")
    model, x = model.to(dtype), x.to(dtype)
    original = copy.deepcopy(model)
    adapter = TorchAdapter(model, example_inputs=(x,))
    u = np.random.default_rng(1).uniform(-3, 3, adapter.discovery.n)
    undo = scale_parameters_undoably(model, adapter.discovery, u)
    assert not _same_state(model, original)
    compact = dtype != torch.bfloat16  # float32/float64 keep 4-bit offsets; other dtypes a copy
    assert bool(undo.matrices) == compact and bool(undo.values) != compact
    undo.restore()
    for (name, a), (_, b) in zip(model.state_dict().items(), original.state_dict().items(), strict=True):
        assert torch.equal(a.view(torch.uint8) if a.dim() else a, b.view(torch.uint8) if b.dim() else b), name


def test_scaled_matrix_undo_falls_back_when_offsets_do_not_fit() -> None:
    rng = np.random.default_rng(0)
    W = (rng.standard_normal((40, 30)) * np.exp(rng.uniform(-20, 20, (40, 30)))).astype(np.float32)
    before = W.copy()
    undo = ScaledMatrixUndo.scale(W, np.exp(rng.uniform(-4, 4, 40)), np.exp(rng.uniform(-4, 4, 30)))
    assert undo is not None and not np.array_equal(W, before)
    undo.restore(W)
    assert np.array_equal(W.view(np.uint32), before.view(np.uint32))
    tiny = np.array([[np.finfo(np.float32).tiny / 3, 1.0]], dtype=np.float32)  # subnormal: bits lost by scaling
    kept = tiny.copy()
    assert ScaledMatrixUndo.scale(tiny, np.array([1e-6]), np.ones(2)) is None
    assert np.array_equal(tiny, kept)  # untouched, so the caller can copy it instead
