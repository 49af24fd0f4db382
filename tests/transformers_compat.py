"""Tiny Hugging Face ``transformers`` models with random weights, built offline (tests and benchmarks only).

``transformers`` imports torchvision when it is installed, whose compiled extension may not load
next to the CPU torch pinned here (see :mod:`torchvision_compat`): torchvision is imported
leniently first. No model or tokenizer is ever downloaded (``HF_HUB_OFFLINE=1``).

``tiny(name)`` builds one of :data:`MODELS` from a small config (hidden size 16, two layers);
``example(name, model, seed)`` gives its positional inputs.
"""

from __future__ import annotations

import functools
import os
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn

from torchvision_compat import torchvision_models

__all__ = ["MODELS", "example", "logits", "needs_transformers", "tiny", "transformers_module"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
VOCAB = 50
MODELS = ("gpt2", "bert", "opt", "llama", "t5", "qwen3")


@functools.cache
def transformers_module() -> ModuleType | None:
    """``transformers`` (imported once, after a lenient torchvision import), or ``None``."""
    torchvision_models()
    try:
        import transformers
        from transformers.utils import logging
    except ImportError:
        return None
    logging.set_verbosity_error()  # the tiny configs' special token ids lie outside the tiny vocabulary
    return transformers


def _config(T: Any, name: str, hidden: int, layers: int, vocab: int) -> Any:
    common = {"vocab_size": vocab}
    if name == "gpt2":
        return T.GPT2Config(n_embd=hidden, n_layer=layers, n_head=2, n_positions=32, **common)
    if name == "bert":
        return T.BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                            intermediate_size=2 * hidden, max_position_embeddings=32, **common)
    if name == "opt":
        return T.OPTConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2, ffn_dim=2 * hidden,
                           max_position_embeddings=32, word_embed_proj_dim=hidden, **common)
    if name == "t5":
        return T.T5Config(d_model=hidden, d_kv=hidden // 4, d_ff=2 * hidden, num_layers=layers, num_heads=2,
                          **common)
    cls = {"llama": T.LlamaConfig, "qwen3": T.Qwen3Config}[name]
    return cls(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
               head_dim=hidden // 4, intermediate_size=2 * hidden, max_position_embeddings=32, **common)


def tiny(name: str, hidden: int = 16, layers: int = 2, seed: int = 0, vocab: int = VOCAB) -> nn.Module:
    """A randomly initialised ``name`` model (one of :data:`MODELS`) in eval mode."""
    T = transformers_module()
    assert T is not None
    cls = {"gpt2": T.GPT2LMHeadModel, "bert": T.BertModel, "opt": T.OPTForCausalLM, "llama": T.LlamaForCausalLM,
           "t5": T.T5ForConditionalGeneration, "qwen3": T.Qwen3ForCausalLM}[name]
    torch.manual_seed(seed)
    model = cls(_config(T, name, hidden, layers, vocab))
    with torch.no_grad():  # random (not zero) biases and norm gains, so no symmetry is balanced by accident
        for pname, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(1 + 0.5 * torch.randn_like(p) if pname.endswith("weight") else 0.3 * torch.randn_like(p))
    return model.eval()


def example(name: str, seed: int, length: int = 7, vocab: int = VOCAB) -> tuple[torch.Tensor, ...]:
    """Token ids (and, for T5, ``attention_mask=None`` and decoder ids) as positional inputs."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (2, length), generator=g)
    return (ids, None, torch.randint(0, vocab, (2, length - 2), generator=g)) if name == "t5" else (ids,)


def logits(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The model's main output (logits or last hidden state)."""
    with torch.no_grad():
        out = model(*inputs)
    return out[0] if isinstance(out, tuple) else (out.logits if hasattr(out, "logits") else out.last_hidden_state)


needs_transformers = pytest.mark.skipif(transformers_module() is None, reason="transformers is not installed")
