"""The attention rules pass scales only where the function is unchanged (no transformers needed)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

import synbal
from synbal.errors import UnsupportedProblemError
from synbal.torch import discover


class _Attn(nn.Module):
    """q/k/v/o projections around scaled_dot_product_attention, 4 query heads over 2 KV heads of 3 dims."""

    def __init__(self, gqa: bool) -> None:
        super().__init__()
        self.gqa = gqa
        self.inp = nn.Linear(6, 12)
        self.q = nn.Linear(12, 12)
        self.k = nn.Linear(12, 6 if gqa else 12)
        self.v = nn.Linear(12, 6 if gqa else 12)
        self.o = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        b, s, _ = x.shape
        q = self.q(h).view(b, s, 4, 3).transpose(1, 2)
        k = self.k(h).view(b, s, -1, 3).transpose(1, 2)
        v = self.v(h).view(b, s, -1, 3).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.gqa)
        return self.o(a.transpose(1, 2).reshape(b, s, 12))


def _key_row(q_row: int, gqa: bool) -> int:
    """The key row that query row ``h·3 + d`` meets: KV head ``h // 2`` under GQA (4 query heads, 2 KV heads)."""
    head, dim = divmod(q_row, 3)
    return (head // 2 if gqa else head) * 3 + dim


@pytest.mark.parametrize("gqa", [False, True])
def test_sdpa_values_balance_and_keep_the_function(gqa: bool) -> None:
    torch.manual_seed(0)
    model = _Attn(gqa).double().eval()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    d = discover(model, (x,))
    assert [n for n in d.names if n.startswith("v[")] == [f"v[{i}]" for i in range(6 if gqa else 12)]
    # one Q/K pair per KV dimension, tied across the query heads that read it; keys never name a group
    assert [n for n in d.names if n.startswith("q[")] == ([f"q[{i}]" for i in (0, 1, 2, 6, 7, 8)] if gqa
                                                         else [f"q[{i}]" for i in range(12)])
    assert not [n for n in d.names if n.startswith("k[")]
    res = synbal.balance(model, "l2", example_inputs=(x,))
    assert res.converged and res.max_relative_deficit <= 1e-8
    other = torch.randn(3, 7, 6, dtype=torch.float64)
    with torch.no_grad():
        before, after = model(other), res.net(other)
    assert float((after - before).abs().max()) <= 1e-10 * float(before.abs().max())
    # query bias d times the key bias it meets is unchanged, and the biases did move
    fq, fk = (res.net.q.bias / model.q.bias).detach(), (res.net.k.bias / model.k.bias).detach()
    pairs = torch.tensor([float(fq[r] * fk[_key_row(r, gqa)]) for r in range(12)], dtype=torch.float64)
    assert torch.allclose(pairs, torch.ones(12, dtype=torch.float64), rtol=1e-12)
    assert float((fq - 1).abs().max()) > 1e-3


@pytest.mark.parametrize("method", ["layer", "stochastic"])
def test_query_key_pairs_reach_the_exact_state_by_another_method(method: str) -> None:
    torch.manual_seed(1)
    model = _Attn(True).double().eval()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    exact = synbal.balance(model, "l2", example_inputs=(x,), tol=1e-12)
    other = synbal.balance(model, "l2", method, example_inputs=(x,), tol=1e-12, max_sweeps=20000)
    assert exact.converged and other.converged
    for (name, a), b in zip(exact.net.named_parameters(), other.net.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-12), name


def test_methods_without_a_signed_form_refuse_query_key_pairs() -> None:
    torch.manual_seed(1)
    model = _Attn(False).double().eval()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    with pytest.raises(UnsupportedProblemError, match="signed unit coefficients"):
        synbal.balance(model, "l2", "tied", example_inputs=(x,), sets=[["q[0]", "q[1]"]])
    with pytest.raises(UnsupportedProblemError, match="sum of powers such as"):
        synbal.balance(model, "l2,1", "multiplicative", example_inputs=(x,))
    # a custom cost has no signed form either: its query/key pairs stay fixed (dead units)
    res = synbal.balance(model, synbal.CustomRegularizer(g=lambda m: m**2 + m**4, dg=lambda m: 2 * m + 4 * m**3),
                         example_inputs=(x,))
    assert torch.equal(res.net.q.bias, model.q.bias) and torch.equal(res.net.k.bias, model.k.bias)  # rows unscaled
    assert not torch.equal(res.net.q.weight, model.q.weight)  # (their columns scale with inp's units)


class _Products(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.w = nn.Parameter(torch.randn(4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, g = torch.relu(self.a(x)), self.b(x)
        if self.kind == "both":  # a product of two scaled tensors
            return torch.matmul(h, g.transpose(-1, -2))
        if self.kind == "computed":  # addmm with a computed matrix
            return torch.addmm(torch.zeros(4), h, g[:4] * 2)
        return torch.where(x > 0.5, h, -1.0)  # a constant other than 0 is selected


@pytest.mark.parametrize("kind", ["both", "computed", "where"])
def test_products_and_selections_that_are_not_rescalings_fix_their_inputs(kind: str) -> None:
    torch.manual_seed(0)
    model = _Products(kind).eval()
    d = discover(model, (torch.randn(4, 4),))
    if kind == "both":  # h gᵀ: a's units pair inversely with b's rows (the product keeps scale 1)
        assert [n for n in d.names if n.startswith(("a[", "b["))] == ["a[0]", "a[1]", "a[2]", "a[3]"]
        return
    assert not [n for n in d.names if n.startswith("a[")]
    if kind == "computed":
        assert "feeds addmm" in d.excluded["a[0]..a[3] (4 units)"]


def test_addmm_with_a_stored_weight_is_a_transposed_linear() -> None:
    class Conv1D(nn.Module):  # GPT-2's layer: y = b + x W with W stored (in, out)
        def __init__(self) -> None:
            super().__init__()
            self.w1, self.b1 = nn.Parameter(torch.randn(4, 6)), nn.Parameter(torch.randn(6))
            self.out = nn.Linear(6, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(torch.relu(torch.addmm(self.b1, x, self.w1)))

    torch.manual_seed(0)
    model = Conv1D().double()
    x = torch.randn(3, 4, dtype=torch.float64)
    info = synbal.inspect(model, x)
    assert [g.incoming for g in info.groups[:1]] == [["w1[:, 0]", "b1[0]"]]
    res = synbal.balance(model, "l2", example_inputs=(x,))
    other = torch.randn(5, 4, dtype=torch.float64)
    assert res.converged and torch.allclose(res.net(other), model(other), rtol=1e-10, atol=1e-12)


def test_softmax_times_values_passes_the_value_columns() -> None:
    class PV(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.v, self.o, self.s = nn.Linear(4, 3), nn.Linear(3, 2), nn.Linear(4, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            p = torch.softmax(self.s(x) @ self.s(x).transpose(-1, -2), dim=-1)
            return self.o(p @ self.v(x))

    torch.manual_seed(0)
    model = PV().double()
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    d = discover(model, (x,))
    assert [n for n in d.names if n.startswith("v[")] == ["v[0]", "v[1]", "v[2]"]
    # s(x) s(x)ᵀ: each dimension would pair with itself (λ² = 1), so s stays fixed
    assert not [n for n in d.names if n.startswith("s")]
    assert "inversely are tied" in d.excluded["s[0]..s[4] (5 units)"]
    res = synbal.balance(model, "l2", example_inputs=(x,))
    other = torch.randn(2, 5, 4, dtype=torch.float64)
    assert torch.allclose(res.net(other), model(other), rtol=1e-10, atol=1e-12)
