"""Hugging Face transformers balance as they are (issue 12): tiny configs, random weights, no hub.

Every model is traced by ``torch.export`` (non-strict) with its key/value cache turned off, and
balanced with the exact solver. The function is checked on inputs other than the example inputs;
embeddings, gate rows, queries and keys (softmax inputs) never move.
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

# Linear layers whose rows (outputs) never scale: the gate of a gated MLP, queries and keys (softmax inputs);
# their columns scale with the norm gain they read
_ROWS_FIXED = ("gate_proj.weight", "q_proj.weight", "k_proj.weight", ".query.weight", ".key.weight", ".q.weight",
               ".k.weight")

# groups per block (MLP units, V/O dims, norm dims) at hidden size 16, two heads of 8 (four of 4 for Llama/Qwen3
# with two KV heads), MLP width 32; see test_group_kinds_per_block for why each is what it is
_KINDS = {
    "gpt2": (0, 16, 32),  # tanh-GELU MLP: no units; ln_1 and ln_2 gains
    "bert": (0, 16, 0),  # post-LN: every gain feeds the residual stream, which the next LayerNorm fixes
    "opt": (32, 16, 32),
    "llama": (32, 8, 32),  # 2 KV heads × 4 dims; SwiGLU: up rows vs down columns
    "t5": (32, 8, 32),  # encoder block; decoder blocks add cross-attention and a third norm
    "qwen3": (32, 8, 32),
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
    _check_fixed(model, res.net)


def _check_fixed(model: torch.nn.Module, balanced: torch.nn.Module) -> None:
    """Embeddings, QK-norm gains and q/k/gate biases keep their values; q/k/gate rows scale by nothing."""
    embeddings = {f"{path}.weight" for path, m in model.named_modules() if isinstance(m, torch.nn.Embedding)}
    moved = {n for n, p in balanced.named_parameters() if not torch.equal(p, model.get_parameter(n))}
    assert moved, "nothing was scaled"
    assert not moved & embeddings
    assert not [n for n in moved if any(k in n for k in ("q_norm", "k_norm", "q_proj.bias", "k_proj.bias",
                                                          ".query.bias", ".key.bias"))]
    for n in (n for n in moved if n.endswith(_ROWS_FIXED)):
        ratio = balanced.get_parameter(n) / model.get_parameter(n)  # column factors only
        assert torch.allclose(ratio, ratio[:1].expand_as(ratio), rtol=1e-12), n


@pytest.mark.parametrize("name", ["llama", "gpt2"])
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
    assert (first["MLP units"], first["V/O dims"], first["norm dims"]) == _KINDS[name]
    assert first["Q/K pairs"] == 0 and first["layer scale"] == 0
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


def test_rope_and_qk_norm_leave_an_inverse_gain_pair_that_discovery_keeps_fixed() -> None:
    """QK-norm (Qwen3) normalises each head's q and k, so the projections' rows cannot scale; what is left is
    ``q_norm.weight[d]·c_d`` against ``k_norm.weight[d]/c_d`` with ``c_d = c_{d+D/2}`` (RoPE rotates dimension
    d with d + D/2). It is a symmetry (checked here); synbal keeps both gains fixed (inverse pairs are not
    representable in its balance problem), which the discovery says."""
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
    assert "model.layers.0.self_attn.q_norm.weight" in d.unused
    assert "model.layers.0.self_attn.k_norm.weight" in d.unused


def test_attention_scores_inputs_are_fixed_with_the_reason() -> None:
    info = _info("opt")
    q = next(k for k in info.excluded if k.startswith("model.decoder.layers.0.self_attn.q_proj"))
    assert "attention scores" in info.excluded[q]


def test_gpt2_conv1d_addmm_is_a_transposed_linear() -> None:
    info = _info("gpt2")
    vo = next(g for g in info.groups if g.name == "transformer.h.0.attn.c_attn[32]")  # the first V feature
    assert vo.incoming == ["transformer.h.0.attn.c_attn.weight[:, 32]", "transformer.h.0.attn.c_attn.bias[32]"]
    assert vo.outgoing == ["transformer.h.0.attn.c_proj.weight[0, :]"]
