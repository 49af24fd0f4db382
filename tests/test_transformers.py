"""Hugging Face transformers balance as they are (issue 12): tiny configs, random weights, no hub.

Every model is traced by ``torch.export`` (non-strict) with its key/value cache turned off, and
balanced with the exact solver. The function is checked on inputs other than the example inputs;
embeddings, gate rows and the softmax inputs (attention probabilities) never move, while each query
dimension scales against its key dimension (queries and keys, or QK-norm gains, in inverse pairs).
"""

from __future__ import annotations

import functools
import itertools

import pytest
import torch

import synbal
from synbal.torch import discover
from transformers_compat import MODELS, example, logits, needs_transformers, tiny

pytestmark = needs_transformers

# Linear layers whose rows (outputs) never scale: the gate of a gated MLP (and, with QK-norm, queries and keys,
# whose rows the norm removes); their columns scale with the norm gain they read
_ROWS_FIXED = ("gate_proj.weight",)
_QK_NORM_ROWS_FIXED = ("q_proj.weight", "k_proj.weight")

# groups per block (MLP units, V/O dims, Q/K pairs, QK-norm pairs, norm dims) at hidden size 16, two heads of 8
# (four of 4 for Llama/Qwen3 with two KV heads), MLP width 32; see test_group_kinds_per_block for why
_KINDS = {
    "gpt2": (0, 16, 16, 0, 32),  # tanh-GELU MLP: no units; ln_1 and ln_2 gains; a Q/K pair per q dimension
    "bert": (0, 16, 16, 0, 0),  # post-LN: every gain feeds the residual stream, which the next LayerNorm fixes
    "opt": (32, 16, 16, 0, 32),
    "llama": (32, 8, 4, 0, 32),  # 2 KV heads × 4 dims; RoPE pairs d with d + 2: 2 × 2 Q/K pairs; SwiGLU
    "t5": (32, 8, 8, 0, 32),  # encoder block (d_kv 4 × 2 heads); decoder blocks add cross-attention, a third norm
    "qwen3": (32, 8, 0, 2, 32),  # QK-norm: one gain pair per RoPE pair of head_dim 4, shared by every head
}


@functools.cache
def _info(name: str) -> synbal.torch.ModelInspection:
    """One inspection per model (float32) shared by the tests that read it."""
    return synbal.inspect(tiny(name), example(name, 0))


def _balanced(name: str, dtype: torch.dtype) -> tuple[torch.nn.Module, synbal.BalanceResult]:
    model = tiny(name).to(dtype)
    return model, synbal.balance(model, "l2", example_inputs=example(name, 0))


@pytest.mark.parametrize("name", MODELS)
def test_balance_keeps_logits_in_float64_and_balances_every_group(name: str) -> None:
    model, res = _balanced(name, torch.float64)
    assert res.converged and res.problem.n > 0
    assert res.max_relative_deficit <= 1e-8
    values = [h.regularizer for h in res.history]
    assert all(b <= a * (1 + 1e-12) for a, b in itertools.pairwise(values))
    assert res.regularizer_after < res.regularizer_before
    other = example(name, 1, length=9)  # other tokens, another length
    before, after = logits(model, other), logits(res.net, other)
    assert float((after - before).abs().max()) <= 1e-10 * float(before.abs().max())
    _check_fixed(name, model, res.net)
    _check_attention_unchanged(name, model, res.net, other)


def _check_fixed(name: str, model: torch.nn.Module, balanced: torch.nn.Module) -> None:
    """Embeddings keep their values; gate rows (and q/k rows under QK-norm) scale by nothing; queries and keys
    (or the QK-norm gains) did move."""
    embeddings = {f"{path}.weight" for path, m in model.named_modules() if isinstance(m, torch.nn.Embedding)}
    moved = {n for n, p in balanced.named_parameters() if not torch.equal(p, model.get_parameter(n))}
    assert moved, "nothing was scaled"
    assert not moved & embeddings
    queries = ("q_norm.weight",) if name == "qwen3" else ("q_proj.weight", ".query.weight", ".q.weight",
                                                          "c_attn.weight")
    assert [n for n in moved if n.endswith(queries)], "no query moved"
    fixed_rows = _ROWS_FIXED + (_QK_NORM_ROWS_FIXED if name == "qwen3" else ())
    for n in (n for n in moved if n.endswith(fixed_rows)):
        ratio = balanced.get_parameter(n) / model.get_parameter(n)  # column factors only
        assert torch.allclose(ratio, ratio[:1].expand_as(ratio), rtol=1e-12), n


def _attention(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    """Every attention probability map of ``model`` on ``inputs`` (eager attention, which returns them)."""
    model.set_attn_implementation("eager")
    with torch.no_grad():
        out = model(*inputs, output_attentions=True)
    keys = ("attentions", "encoder_attentions", "decoder_attentions", "cross_attentions")
    return [a for k in keys for a in (getattr(out, k, None) or ()) if a is not None]


def _check_attention_unchanged(name: str, model: torch.nn.Module, balanced: torch.nn.Module,
                               inputs: tuple[torch.Tensor, ...]) -> None:
    """The softmax inputs move by nothing the softmax sees: every attention probability is unchanged."""
    before, after = _attention(model, inputs), _attention(balanced, inputs)
    assert before and len(before) == len(after), name
    for a, b in zip(before, after, strict=True):
        assert float((a - b).abs().max()) <= 1e-10, name


@pytest.mark.parametrize("name", ["llama", "gpt2", "qwen3"])
def test_balance_keeps_logits_in_float32(name: str) -> None:
    model, res = _balanced(name, torch.float32)
    assert res.converged
    other = example(name, 2, length=5)
    before, after = logits(model, other).double(), logits(res.net, other).double()
    assert float((after - before).abs().max()) <= 1e-5 * float(before.abs().max())


@pytest.mark.parametrize("name", MODELS)
def test_group_kinds_per_block(name: str) -> None:
    info = _info(name)
    first = next(iter(info.blocks.values()))
    kinds = ("MLP units", "V/O dims", "Q/K pairs", "QK-norm pairs", "norm dims")
    assert tuple(first[k] for k in kinds) == _KINDS[name]
    assert first["layer scale"] == 0
    assert sum(sum(c.values()) for c in info.blocks.values()) == len(info.groups)


def test_grouped_query_attention_ties_a_kv_dimension_across_its_query_heads() -> None:
    model = tiny("llama")  # 4 query heads share 2 KV heads of 4 dimensions
    info = synbal.inspect(model, example("llama", 0))
    vo = [g for g in info.groups if "v_proj" in g.name and "layers.0." in g.name]
    assert len(vo) == 8
    first = vo[0]
    assert first.incoming == ["model.layers.0.self_attn.v_proj.weight[0, :]"]
    # KV head 0, dimension 0 is read by query heads 0 and 1: o_proj columns 0 and 4
    assert first.outgoing == ["model.layers.0.self_attn.o_proj.weight[:, [0, 4]]"]


def test_gated_mlp_scales_up_rows_against_down_columns_and_never_the_gate() -> None:
    info = _info("llama")
    up = next(g for g in info.groups if g.name == "model.layers.0.mlp.up_proj[3]")
    assert up.incoming == ["model.layers.0.mlp.up_proj.weight[3, :]"]
    assert up.outgoing == ["model.layers.0.mlp.down_proj.weight[:, 3]"]
    gate = [k for k, why in info.excluded.items() if k.startswith("model.layers.0.mlp.gate_proj")]
    assert gate and "silu" in info.excluded[gate[0]]


def test_norm_gain_scales_against_every_reading_linear() -> None:
    info = _info("llama")
    norm = next(g for g in info.groups if g.name == "model.layers.0.input_layernorm.weight[2]")
    assert norm.incoming == ["model.layers.0.input_layernorm.weight[2]"]
    assert norm.outgoing == [f"model.layers.0.self_attn.{p}_proj.weight[:, 2]" for p in "qkv"]


def test_rope_and_qk_norm_leave_an_inverse_gain_pair_that_is_balanced() -> None:
    """QK-norm (Qwen3) normalises each head's q and k, so the projections' rows cannot scale; what is left is
    ``q_norm.weight[d]·c_d`` against ``k_norm.weight[d]/c_d`` with ``c_d = c_{d+D/2}`` (RoPE rotates dimension
    d with d + D/2). It is a symmetry (checked here), and synbal finds and balances exactly it."""
    model = tiny("qwen3").double()
    x = example("qwen3", 3)
    half = torch.tensor([0.5, 3.0])  # c for dimensions (0, 2) and (1, 3) of head_dim 4
    scaled = tiny("qwen3").double()
    scaled.load_state_dict(model.state_dict())
    with torch.no_grad():
        for layer in scaled.model.layers:
            layer.self_attn.q_norm.weight.mul_(half.repeat(2))
            layer.self_attn.k_norm.weight.div_(half.repeat(2))
    assert torch.allclose(logits(scaled, x), logits(model, x), rtol=1e-10, atol=1e-12)
    with torch.no_grad():  # without the RoPE tie it is not a symmetry
        scaled.model.layers[0].self_attn.q_norm.weight.mul_(torch.tensor([2.0, 1.0, 1.0, 1.0]))
        scaled.model.layers[0].self_attn.k_norm.weight.div_(torch.tensor([2.0, 1.0, 1.0, 1.0]))
    assert not torch.allclose(logits(scaled, x), logits(model, x), rtol=1e-6)
    d = discover(model, x)
    assert not [n for n in d.unused if "_norm" in n]
    pairs = [g for g in synbal.inspect(model, x).groups if "layers.0.self_attn.q_norm" in g.name]
    assert [(g.incoming, g.outgoing) for g in pairs] == [
        ([f"model.layers.0.self_attn.q_norm.weight[[{d}, {d + 2}]]"],
         [f"model.layers.0.self_attn.k_norm.weight[[{d}, {d + 2}]]"]) for d in (0, 1)]
    res = synbal.balance(model, "l2", example_inputs=x)
    assert res.converged and res.max_relative_deficit <= 1e-8
    for layer, orig in zip(res.net.model.layers, model.model.layers, strict=True):
        fq = (layer.self_attn.q_norm.weight / orig.self_attn.q_norm.weight).detach()
        fk = (layer.self_attn.k_norm.weight / orig.self_attn.k_norm.weight).detach()
        assert torch.allclose(fq * fk, torch.ones_like(fq), rtol=1e-12)  # inverse
        assert torch.allclose(fq[:2], fq[2:], rtol=1e-12)  # one scale per RoPE pair
        assert float((fq - 1).abs().max()) > 1e-3


def test_llama_query_rows_scale_inversely_to_the_key_rows_they_meet() -> None:
    """Llama (4 query heads over 2 KV heads of 4 dims, RoPE): query row ``h·4 + d`` times key row
    ``(h // 2)·4 + d`` is unchanged (the columns' norm gain factors taken out), with one scale for d and d + 2."""
    model = tiny("llama").double()
    res = synbal.balance(model, "l2", example_inputs=example("llama", 0))
    for layer, orig in zip(res.net.model.layers, model.model.layers, strict=True):
        gain = layer.input_layernorm.weight / orig.input_layernorm.weight  # the columns scale by 1/gain
        fq = layer.self_attn.q_proj.weight / orig.self_attn.q_proj.weight * gain
        fk = layer.self_attn.k_proj.weight / orig.self_attn.k_proj.weight * gain
        assert torch.allclose(fq, fq[:, :1].expand_as(fq), rtol=1e-12)  # a row factor
        rows_q, rows_k = fq[:, 0].detach(), fk[:, 0].detach()
        meets = torch.tensor([(h // 2) * 4 + d for h in range(4) for d in range(4)])
        assert torch.allclose(rows_q * rows_k[meets], torch.ones(16, dtype=torch.float64), rtol=1e-12)
        assert torch.allclose(rows_q.view(4, 2, 2)[:, 0], rows_q.view(4, 2, 2)[:, 1], rtol=1e-12)  # RoPE pairs
        assert float((rows_q - 1).abs().max()) > 1e-3


def test_rope_needs_one_scale_per_rotated_pair() -> None:
    """RoPE rotates (d, d + D/2) by R(θ); R(θ) diag(a, b) = diag(a, b) R(θ) for every θ only when a = b. So scaling
    query row d by c and key row d by 1/c keeps Llama's logits only if rows d + D/2 get the same c."""
    theta = torch.tensor(0.7, dtype=torch.float64)
    rot = torch.stack([torch.stack([theta.cos(), -theta.sin()]), torch.stack([theta.sin(), theta.cos()])])
    for a, b in ((2.0, 2.0), (2.0, 0.5)):
        diag = torch.diag(torch.tensor([a, b], dtype=torch.float64))
        assert torch.allclose(rot @ diag, diag @ rot) == (a == b)
    model, x = tiny("llama").double(), example("llama", 3)
    for rows, same in (([0, 2], True), ([0], False)):  # head_dim 4: dimension 0 rotates with 2
        scaled = tiny("llama").double()
        with torch.no_grad():
            attn = scaled.model.layers[0].self_attn
            for r in rows:  # query heads 0 and 1 read KV head 0: both scale with it
                for h in (0, 1):
                    attn.q_proj.weight[h * 4 + r].mul_(3.0)
                attn.k_proj.weight[r].div_(3.0)
        assert torch.allclose(logits(scaled, x), logits(model, x), rtol=1e-10, atol=1e-12) == same


@pytest.mark.parametrize("name", ["llama", "qwen3"])
def test_exact_and_layer_reach_the_same_state(name: str) -> None:
    model, x = tiny(name).double(), example(name, 0)
    exact = synbal.balance(model, "l2", example_inputs=x, tol=1e-12)
    layer = synbal.balance(model, "l2", "layer", example_inputs=x, tol=1e-11, max_sweeps=5000)
    assert exact.converged and layer.converged
    for (n, a), b in zip(exact.net.named_parameters(), layer.net.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-14), n


def test_query_rows_pair_with_key_rows_and_biases() -> None:
    info = _info("opt")
    q = next(g for g in info.groups if g.name == "model.decoder.layers.0.self_attn.q_proj[3]")
    attn = "model.decoder.layers.0.self_attn"
    assert q.incoming == [f"{attn}.q_proj.weight[3, :]", f"{attn}.q_proj.bias[3]"]
    assert q.outgoing == [f"{attn}.k_proj.weight[3, :]", f"{attn}.k_proj.bias[3]"]


def test_gpt2_conv1d_addmm_is_a_transposed_linear() -> None:
    info = _info("gpt2")
    vo = next(g for g in info.groups if g.name == "transformer.h.0.attn.c_attn[32]")  # the first V feature
    assert vo.incoming == ["transformer.h.0.attn.c_attn.weight[:, 32]", "transformer.h.0.attn.c_attn.bias[32]"]
    assert vo.outgoing == ["transformer.h.0.attn.c_proj.weight[0, :]"]
