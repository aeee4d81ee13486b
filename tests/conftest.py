"""Session fixtures: a tiny random Llama + byte-level BPE tokenizer (HF folder and GGUF file), and SmolLM2."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

LETTERS = "ABCDEFGH"
WORDS = [
    "Paris", "Berlin", "Madrid", "Rome", "London", "Lisbon", "Vienna", "Oslo", "true", "false", "yes", "no",
    "red", "green", "blue", "water", "fire", "stone", "cat", "dog", "bird", "fish", "capital", "France",
]


def _corpus() -> list[str]:
    """Text the tokenizer is trained on: letters and words, with and without a leading space."""
    lines = []
    for i in range(60):
        lines.append(" ".join(LETTERS) + " " + " ".join(WORDS))
        lines.append(f"Question: What is the capital of France?\nAnswer: {LETTERS[i % 8]}. {WORDS[i % len(WORDS)]}")
        lines.append("".join(LETTERS) + "\n" + "\n".join(WORDS))
    return lines


def build_tokenizer():
    """Byte-level BPE (GPT-2 style) where " A".." H", "A".."H" and " Paris" etc. are single tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


def tiny_llama_config(vocab_size: int = 1000):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=0.3,  # large enough that option probabilities are far from uniform
        tie_word_embeddings=False,
    )


def tiny_llama(vocab_size: int = 1000):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config(vocab_size)).eval()


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A saved tiny random Llama (vocab 1000, seed 0) with the BPE tokenizer."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny(tiny_model_dir):
    """``(model, tokenizer)`` of the tiny Llama, loaded through ``load_model``."""
    from calibtune.models import load_model

    return load_model(str(tiny_model_dir))


def _permute_qk(weights: np.ndarray, n_head: int) -> np.ndarray:
    """The q/k row permutation llama.cpp's converter applies (transformers undoes it on load)."""
    rows = weights.shape[0]
    return weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def write_tiny_gguf(path: Path, tokenizer) -> None:
    """Write the tiny Llama (vocab = tokenizer size, seed 0) and the BPE tokenizer into an F32 GGUF."""
    import gguf

    model = tiny_llama(len(tokenizer))
    cfg = model.config
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    vocab = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    tokens = [t for t, _ in sorted(vocab["vocab"].items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in vocab["merges"]]
    eos = tokenizer.eos_token_id

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(10000.0)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if i == eos else gguf.TokenType.NORMAL for i in range(len(tokens))])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(eos)
    writer.add_eos_token_id(eos)
    writer.add_add_bos_token(False)
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    writer.add_tensor("output.weight", state["lm_head.weight"])
    names = {
        "input_layernorm": "attn_norm", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
        "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for i in range(cfg.num_hidden_layers):
        pre = f"model.layers.{i}."
        q, k = state[pre + "self_attn.q_proj.weight"], state[pre + "self_attn.k_proj.weight"]
        writer.add_tensor(f"blk.{i}.attn_q.weight", _permute_qk(q, cfg.num_attention_heads))
        writer.add_tensor(f"blk.{i}.attn_k.weight", _permute_qk(k, cfg.num_key_value_heads))
        for hf, gg in names.items():
            writer.add_tensor(f"blk.{i}.{gg}.weight", state[pre + hf + ".weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory, tokenizer) -> Path:
    """Path of a tiny F32 Llama GGUF with a GPT-2 style BPE tokenizer."""
    path = tmp_path_factory.mktemp("tiny-gguf") / "tiny.gguf"
    write_tiny_gguf(path, tokenizer)
    return path


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct, converted once into the default calibtune cache (~20 s the first time)."""
    from calibtune.models import load_model

    return load_model("smollm2")


@pytest.fixture(scope="session")
def two_d_attention() -> str:
    """Name of an attention implementation that takes only 2D masks, as flash-attention: sdpa registered anew.

    calibtune packs cloze rows only for sdpa/eager (a 4D mask), so with this name it must fall back to
    unpacked rows; the numbers equal sdpa's.
    """
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register("test_2d_only", sdpa_attention_forward)
    AttentionMaskInterface.register("test_2d_only", sdpa_mask)
    return "test_2d_only"
