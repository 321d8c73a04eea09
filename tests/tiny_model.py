"""A tiny random Llama checkpoint with a word-level tokenizer: real transformers/TRL code paths in
seconds, without the embedded model. Saved in the dtype asked for (bf16 as Qwen's checkpoints are)."""

from __future__ import annotations

import json
from pathlib import Path

WORDS = "tom has pens and gets more how many does he have ? . the answer is + - = 0 1 2 3 4 5 6 7 8 9".split()


def make_tiny_model(out: Path, dtype: str = "bfloat16", layers: int = 2) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {token: i for i, token in enumerate(specials + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>", unk_token="<unk>")
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    # a plain fast tokenizer: the model type's own tokenizer class (Qwen2's BPE) would misread this vocab
    settings = json.loads((Path(out) / "tokenizer_config.json").read_text())
    settings["tokenizer_class"] = "PreTrainedTokenizerFast"
    (Path(out) / "tokenizer_config.json").write_text(json.dumps(settings))
    return Path(out)
