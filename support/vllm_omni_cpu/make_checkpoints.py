"""Shrunken dummy-weight checkpoints of Qwen3-TTS-12Hz-0.6B-Base and Qwen3-Omni-30B-A3B, with a tokenizer.

The REAL vLLM-Omni 0.30.0 server runs in the gateway's tests on a CPU with a dummy load format (random
weights), so a checkpoint here is every file the loaders, processors and tokenizers read EXCEPT the weights:
configs with the real structure and every real token / codec id, every size shrunk (head_dim 64 in every
attention: vLLM's CPU attention rejects 16), and a Qwen2-style byte-level BPE tokenizer that keeps Qwen's
special and role tokens at their real ids, because the models find prompt structure by id (`<|im_start|>`
151644 then `assistant` 77091 and `\\n` 198; `<|audio_pad|>` 151675; `<tts_pad>` 151671 ...). No model hub is
reachable, so everything is generated here; the output is deterministic and a rerun rewrites nothing.

Run with the vLLM-Omni virtualenv's python (`tokenizers`; `--validate` also needs transformers, vllm-omni):
    python make_checkpoints.py [--out DIR] [--validate]
writes DIR/qwen3-tts-tiny and DIR/qwen3-omni-tiny (DIR defaults to tests/vllm_omni_env.py's CHECKPOINTS).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TRAINING_TEXT = HERE / "checkpoint_data" / "training_text.txt"
TTS_DIR_NAME = "qwen3-tts-tiny"
OMNI_DIR_NAME = "qwen3-omni-tiny"

# ------------------------------------------------------------------------------------------- tokenizer facts
# Qwen2's pre-tokenizer split (transformers' Qwen2Tokenizer, PRETOKENIZE_REGEX).
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
REGULAR_VOCAB_SIZE = 151_643  # Qwen2/Qwen3: ids 0..151642 are BPE pieces, the added tokens start at 151643
TRAINED_VOCAB_SIZE = 2_000  # pieces learned from the embedded text; the rest of the regular ids is filler
# The added tokens of the Qwen3-Omni / Qwen3-TTS tokenizers, in order from id 151643: (content, special).
ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),  # 151643
    ("<|im_start|>", True),  # 151644
    ("<|im_end|>", True),  # 151645
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),  # 151652
    ("<|vision_end|>", True),  # 151653
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),  # 151655
    ("<|video_pad|>", True),  # 151656
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),  # 151667
    ("</think>", False),  # 151668
    ("<|audio_start|>", True),  # 151669
    ("<|audio_end|>", True),  # 151670
    ("<tts_pad>", True),  # 151671
    ("<tts_text_bos>", True),  # 151672
    ("<tts_text_eod>", True),  # 151673
    ("<tts_text_bos_single>", True),  # 151674
    ("<|audio_pad|>", True),  # 151675
)
# Regular pieces whose ids the models compare against (Qwen3OmniMoeConfig system/user/assistant_token_id; the
# Qwen3-TTS prompt builder slices `<|im_start|>assistant\n` as exactly three tokens).
FIXED_PIECE_IDS = {"system": 8948, "user": 872, "assistant": 77091, "\n": 198}
# The named multimodal tokens the Qwen3-Omni processor reads off its tokenizer (as Qwen3-Omni's config names).
NAMED_SPECIAL_TOKENS = {
    "image_token": "<|image_pad|>",
    "audio_token": "<|audio_pad|>",
    "video_token": "<|video_pad|>",
    "vision_bos_token": "<|vision_start|>",
    "vision_eos_token": "<|vision_end|>",
    "audio_bos_token": "<|audio_start|>",
    "audio_eos_token": "<|audio_end|>",
}

# ChatML as Qwen3-Omni renders it; media parts become start/pad/end triples, which the processor expands.
CHAT_TEMPLATE = """\
{%- macro render(content) -%}
{%- if content is string -%}{{ content }}
{%- else -%}{%- for part in content -%}
{%- if part is string -%}{{ part }}
{%- elif part['type'] in ('audio', 'audio_url', 'input_audio') or 'audio' in part or 'audio_url' in part -%}\
<|audio_start|><|audio_pad|><|audio_end|>
{%- elif part['type'] in ('image', 'image_url', 'image_pil') or 'image' in part or 'image_url' in part -%}\
<|vision_start|><|image_pad|><|vision_end|>
{%- elif part['type'] in ('video', 'video_url') or 'video' in part or 'video_url' in part -%}\
<|vision_start|><|video_pad|><|vision_end|>
{%- elif 'text' in part -%}{{ part['text'] }}
{%- endif -%}
{%- endfor -%}{%- endif -%}
{%- endmacro -%}
{%- for message in messages -%}
{{ '<|im_start|>' + message['role'] + '\\n' }}{{ render(message['content']) }}{{ '<|im_end|>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}
"""


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def _byte_level_map() -> dict[int, str]:
    """GPT-2's byte -> printable character map, in the id order Qwen2 keeps for ids 0..255 (`\\n` is 198)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    shifted = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(shifted)}}


def _train(text: str) -> tuple[Tokenizer, list[tuple[str, str]]]:
    trainer = trainers.BpeTrainer(  # type: ignore[call-arg]
        vocab_size=TRAINED_VOCAB_SIZE,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = _pre_tokenizer()
    tok.train_from_iterator(text.splitlines(), trainer=trainer)
    raw = json.loads(tok.to_str())["model"]["merges"]
    merges = [(m[0], m[1]) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in raw]
    return tok, [(str(a), str(b)) for a, b in merges]


def build_tokenizer(text: str) -> Tokenizer:
    """Byte-level BPE trained on `text`, laid out on Qwen's id space (see the module docstring)."""
    trained, merges = _train(text)
    # A fixed role word must be ONE piece; chain its trained pieces together with merges ranked last, so every
    # word the trained merges tokenized before still tokenizes the same way.
    for word in FIXED_PIECE_IDS:
        pieces = trained.encode(word).tokens
        joined = pieces[0]
        for piece in pieces[1:]:
            merges.append((joined, piece))
            joined += piece
    byte_map = _byte_level_map()
    bytes_ = list(byte_map.values())
    learned: list[str] = []
    seen = set(bytes_)
    for a, b in merges:
        if a + b not in seen:
            seen.add(a + b)
            learned.append(a + b)
    vocab: dict[str, int] = {piece: i for i, piece in enumerate(bytes_)}
    for word, ident in FIXED_PIECE_IDS.items():
        piece = "".join(byte_map[b] for b in word.encode())
        if ident < 256:
            assert vocab[piece] == ident, f"byte piece {piece!r} is not at Qwen's id {ident}"
        vocab[piece] = ident
    taken = set(vocab.values())
    free = (i for i in range(256, REGULAR_VOCAB_SIZE) if i not in taken)
    for piece in learned:
        if piece not in vocab:
            vocab[piece] = next(free)
    # Filler pieces are never produced by a merge; they decode to " fillerN" (what a random model "says").
    for ident in free:
        vocab[f"Ġfiller{ident}"] = ident
    assert len(vocab) == REGULAR_VOCAB_SIZE and max(vocab.values()) == REGULAR_VOCAB_SIZE - 1

    tok = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = _pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    # Added in id order: the library numbers them from the vocabulary size, i.e. from 151643.
    tok.add_tokens(
        [AddedToken(content, special=special, normalized=False) for content, special in ADDED_TOKENS]
    )
    return tok


def tokenizer_files(tok: Tokenizer) -> dict[str, str]:
    """tokenizer.json, the vocab.json/merges.txt pair and the tokenizer_config.json Qwen2Tokenizer reads."""
    data = json.loads(tok.to_str())
    # The pipeline exactly as Qwen2's tokenizer.json spells it (the Python constructors drop some flags).
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    data["pre_tokenizer"]["pretokenizers"][1] = byte_level
    data["post_processor"] = byte_level
    data["decoder"] = byte_level
    model = data["model"]
    merges = ["#version: 0.2"] + [" ".join(m) if isinstance(m, list) else str(m) for m in model["merges"]]
    decoder = {
        str(REGULAR_VOCAB_SIZE + i): {
            "content": content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": special,
        }
        for i, (content, special) in enumerate(ADDED_TOKENS)
    }
    config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "extra_special_tokens": NAMED_SPECIAL_TOKENS,
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    return {
        "tokenizer.json": _dump(data),
        "vocab.json": _dump(dict(sorted(model["vocab"].items(), key=lambda kv: kv[1]))),
        "merges.txt": "\n".join(merges) + "\n",
        "tokenizer_config.json": _dump(config),
        "chat_template.jinja": CHAT_TEMPLATE,
    }


# ------------------------------------------------------------------------------------------------ TTS facts
CODEC_LANGUAGE_IDS = {
    "chinese": 2055,
    "english": 2050,
    "german": 2053,
    "spanish": 2054,
    "japanese": 2058,
    "korean": 2064,
    "french": 2061,
    "russian": 2069,
    "italian": 2070,
    "portuguese": 2071,
}
# Qwen3-TTS talker / Qwen3-Omni talker codec control ids (same codec vocabulary: 2048 codes + controls, 3072).
CODEC_IDS = {
    "codec_pad_id": 2148,
    "codec_bos_id": 2149,
    "codec_eos_token_id": 2150,
    "codec_think_id": 2154,
    "codec_nothink_id": 2155,
    "codec_think_bos_id": 2156,
    "codec_think_eos_id": 2157,
}
HIDDEN = 128  # every model width; with 2 heads of 64 (vLLM's CPU attention takes 64, not 16)
HEAD_DIM = 64
# Interleaved M-RoPE as in the real configs ([24, 20, 20] for head_dim 128), scaled to head_dim / 2 = 32.
MROPE_SECTION = [12, 10, 10]
QWEN3_TOKEN_IDS = {
    "im_start_token_id": 151644,
    "im_end_token_id": 151645,
    "tts_pad_token_id": 151671,
    "tts_bos_token_id": 151672,
    "tts_eos_token_id": 151673,
}


def _attention(layers: int, intermediate: int = 2 * HIDDEN) -> dict[str, Any]:
    return {
        "hidden_size": HIDDEN,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": HIDDEN // HEAD_DIM,
        "num_key_value_heads": 1,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-06,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
    }


def tts_config() -> dict[str, Any]:
    """config.json of Qwen3-TTS-12Hz-0.6B-Base, shrunk (vllm_omni qwen3_tts/configuration_qwen3_tts.py)."""
    code_predictor = {
        **_attention(layers=1),
        "model_type": "qwen3_tts_talker_code_predictor",
        "vocab_size": 2048,
        "num_code_groups": 16,
        "max_position_embeddings": 65536,
        "rope_theta": 1000000,
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": 1,
        "layer_types": ["full_attention"],
    }
    talker = {
        **_attention(layers=2),
        "model_type": "qwen3_tts_talker",
        "code_predictor_config": code_predictor,
        "vocab_size": 3072,
        "num_code_groups": 16,
        "max_position_embeddings": 32768,
        "position_id_per_seconds": 13,
        "rope_theta": 1000000,
        "rope_scaling": {"interleaved": True, "mrope_section": MROPE_SECTION, "rope_type": "default"},
        "use_sliding_window": False,
        "sliding_window": None,
        "text_hidden_size": HIDDEN,
        "text_vocab_size": 151936,
        **CODEC_IDS,
        "codec_language_id": CODEC_LANGUAGE_IDS,
        # The Base model has no built-in speakers: every request clones a reference voice.
        "spk_id": {},
        "spk_is_dialect": {},
    }
    speaker_encoder = {
        "mel_dim": 128,
        "enc_dim": HIDDEN,  # the x-vector is added to the talker's input stream, so it has the talker's width
        "enc_channels": [64, 64, 64, 64, 192],
        "enc_kernel_sizes": [5, 3, 3, 3, 1],
        "enc_dilations": [1, 2, 3, 4, 1],
        "enc_attention_channels": 32,
        "enc_res2net_scale": 8,
        "enc_se_channels": 32,
        "sample_rate": 24000,
    }
    return {
        "architectures": ["Qwen3TTSForConditionalGeneration"],
        "model_type": "qwen3_tts",
        "tokenizer_type": "qwen3_tts_tokenizer_12hz",
        "tts_model_size": "0b6",
        "tts_model_type": "base",
        "assistant_token_id": FIXED_PIECE_IDS["assistant"],
        **QWEN3_TOKEN_IDS,
        "speaker_encoder_config": speaker_encoder,
        "talker_config": talker,
        "dtype": "bfloat16",
        # A local config.json without a transformers_version makes transformers 5 suspect a Mistral tokenizer.
        "transformers_version": "4.57.3",
    }


def speech_tokenizer_config() -> dict[str, Any]:
    """speech_tokenizer/config.json: the 12.5 Hz codec (Mimi encoder, sliding-window decoder), shrunk.

    Frame rate and hop stay real: Mimi's convolutions downsample 8*6*5*4 = 960x and its frame-rate conv 2x,
    the decoder upsamples 8*5*4*3 * 2*2 = 1920x, so 1920 samples at 24 kHz are one codec frame either way.
    """
    encoder = {
        "model_type": "mimi",
        "sampling_rate": 24000,
        "frame_rate": 12.5,
        "audio_channels": 1,
        "hidden_size": HIDDEN,
        "num_filters": 8,  # doubles per downsampling stage: 8 -> 128 channels before the transformer
        "num_residual_layers": 1,
        "upsampling_ratios": [8, 6, 5, 4],
        "kernel_size": 7,
        "last_kernel_size": 3,
        "residual_kernel_size": 3,
        "dilation_growth_rate": 2,
        "use_causal_conv": True,
        "pad_mode": "constant",
        "compress": 2,
        "trim_right_ratio": 1.0,
        "codebook_size": 2048,
        "codebook_dim": 32,
        "num_quantizers": 32,
        "num_semantic_quantizers": 1,
        "vector_quantization_hidden_dimension": 32,
        "use_conv_shortcut": False,
        "upsample_groups": HIDDEN,
        "num_hidden_layers": 1,
        "intermediate_size": 2 * HIDDEN,
        "num_attention_heads": HIDDEN // HEAD_DIM,
        "num_key_value_heads": HIDDEN // HEAD_DIM,
        "head_dim": HEAD_DIM,
        "hidden_act": "gelu",
        "max_position_embeddings": 8000,
        "initializer_range": 0.02,
        "norm_eps": 1e-05,
        "use_cache": False,
        "use_streaming": False,
        "rope_theta": 10000.0,
        "sliding_window": 250,
        "attention_dropout": 0.0,
        "layer_scale_initial_scale": 0.01,
        "attention_bias": False,
    }
    decoder = {
        "codebook_size": 2048,
        "codebook_dim": 64,
        "hidden_size": HIDDEN,
        "latent_dim": HIDDEN,
        "head_dim": HEAD_DIM,
        "num_attention_heads": HIDDEN // HEAD_DIM,
        "num_key_value_heads": HIDDEN // HEAD_DIM,
        "intermediate_size": 2 * HIDDEN,
        "num_hidden_layers": 1,
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "layer_scale_initial_scale": 0.01,
        "rms_norm_eps": 1e-05,
        "rope_theta": 10000,
        "max_position_embeddings": 8000,
        # 72 frames: the deploy config's codec_left_context_frames must match the decoder's window.
        "sliding_window": 72,
        "num_quantizers": 16,
        "upsample_rates": [8, 5, 4, 3],
        "upsampling_ratios": [2, 2],
        "decoder_dim": 128,
    }
    return {
        "architectures": ["Qwen3TTSTokenizerV2Model"],
        "model_type": "qwen3_tts_tokenizer_12hz",
        "encoder_config": encoder,
        "decoder_config": decoder,
        "encoder_valid_num_quantizers": 16,
        "input_sample_rate": 24000,
        "output_sample_rate": 24000,
        "decode_upsample_rate": 1920,
        "encode_downsample_rate": 1920,
        "dtype": "float32",
    }


SPEECH_TOKENIZER_PREPROCESSOR = {
    "feature_extractor_type": "EncodecFeatureExtractor",
    "feature_size": 1,
    "sampling_rate": 24000,
    "padding_side": "right",
    "padding_value": 0.0,
    "return_attention_mask": True,
    "chunk_length_s": None,
    "overlap": None,
}
TTS_GENERATION_CONFIG = {
    # Qwen3-TTS's sampling defaults; the token budget comes from the deploy config's stage sampling params.
    "do_sample": True,
    "temperature": 0.9,
    "top_k": 50,
    "top_p": 1.0,
    "repetition_penalty": 1.05,
    "subtalker_dosample": True,
    "subtalker_temperature": 0.9,
    "subtalker_top_k": 50,
    "subtalker_top_p": 1.0,
}


# ------------------------------------------------------------------------------------------------ Omni facts
def omni_config() -> dict[str, Any]:
    """config.json of Qwen3-Omni-30B-A3B-Instruct, unquantized bf16, shrunk (transformers' qwen3_omni_moe)."""
    moe = {
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": HIDDEN,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "norm_topk_prob": True,
        "output_router_logits": False,
        "router_aux_loss_coef": 0.001,
    }
    rope = {
        "interleaved": True,
        "mrope_interleaved": True,
        "mrope_section": MROPE_SECTION,
        "rope_type": "default",
    }
    thinker_text = {
        **_attention(layers=2),
        **moe,
        "model_type": "qwen3_omni_moe_text",
        "vocab_size": 152064,
        "max_position_embeddings": 65536,
        "rope_theta": 1000000,
        "rope_scaling": rope,
        "sliding_window": None,
        "use_sliding_window": False,
        "shared_expert_intermediate_size": 0,
        "tie_word_embeddings": False,
        "dtype": "bfloat16",
    }
    audio = {
        "model_type": "qwen3_omni_moe_audio_encoder",
        "num_mel_bins": 128,  # the Whisper feature extractor's feature_size
        "encoder_layers": 1,
        "encoder_attention_heads": HIDDEN // HEAD_DIM,
        "encoder_ffn_dim": 2 * HIDDEN,
        "d_model": HIDDEN,
        "output_dim": HIDDEN,  # projects into the thinker's width
        "downsample_hidden_size": 32,
        "activation_function": "gelu",
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "scale_embedding": False,
        "initializer_range": 0.02,
        "max_source_positions": 1500,
        # The processor sizes audio placeholders for 100-frame windows (n_window 50): keep them in step.
        "n_window": 50,
        "n_window_infer": 800,
        "conv_chunksize": 500,
        "dtype": "bfloat16",
    }
    vision = {
        "model_type": "qwen3_omni_moe_vision_encoder",
        "depth": 1,
        "hidden_size": HIDDEN,
        "hidden_act": "gelu_pytorch_tanh",
        "intermediate_size": 2 * HIDDEN,
        "num_heads": HIDDEN // HEAD_DIM,
        "in_channels": 3,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": HIDDEN,
        "num_position_embeddings": 2304,
        "deepstack_visual_indexes": [0],
        "initializer_range": 0.02,
        "apply_vit_abs_pos_embed": True,
        "image_size": 768,
        "dtype": "bfloat16",
    }
    media_ids = {
        "audio_token_id": 151675,
        "image_token_id": 151655,
        "video_token_id": 151656,
        "audio_start_token_id": 151669,
        "audio_end_token_id": 151670,
        "vision_start_token_id": 151652,
        "position_id_per_seconds": 13,  # 13 in the real checkpoint (the transformers default 25 is Qwen2.5's)
        "seconds_per_chunk": 2,
    }
    thinker = {
        "model_type": "qwen3_omni_moe_thinker",
        "audio_config": audio,
        "vision_config": vision,
        "text_config": thinker_text,
        **media_ids,
        "vision_end_token_id": 151653,
        "user_token_id": FIXED_PIECE_IDS["user"],
        "initializer_range": 0.02,
        "tie_word_embeddings": False,
        "dtype": "bfloat16",
    }
    talker_text = {
        **_attention(layers=2),
        **moe,
        "model_type": "qwen3_omni_moe_talker_text",
        "vocab_size": 3072,
        "max_position_embeddings": 65536,
        "rope_theta": 1000000,
        "rope_scaling": rope,
        "sliding_window": None,
        "use_sliding_window": False,
        "shared_expert_intermediate_size": HIDDEN,
        "dtype": "bfloat16",
    }
    code_predictor = {
        **_attention(layers=1),
        "model_type": "qwen3_omni_moe_talker_code_predictor",
        "vocab_size": 2048,
        "num_code_groups": 16,
        "max_position_embeddings": 65536,
        "rope_theta": 1000000,
        "sliding_window": None,
        "use_sliding_window": False,
        "max_window_layers": 1,
        "layer_types": ["full_attention"],
        "dtype": "bfloat16",
    }
    talker = {
        "model_type": "qwen3_omni_moe_talker",
        "text_config": talker_text,
        "code_predictor_config": code_predictor,
        "num_code_groups": 16,
        "thinker_hidden_size": HIDDEN,
        # The thinker layer whose hidden states feed the talker (24 of 48 in the real model).
        "accept_hidden_layer": 1,
        **CODEC_IDS,
        **media_ids,
        "spatial_merge_size": 2,
        "speaker_id": {"chelsie": 2301, "ethan": 2302, "aiden": 2303},
        "output_router_logits": False,
        "initializer_range": 0.02,
        "dtype": "bfloat16",
    }
    del talker["codec_think_id"]  # not a field of the Omni talker
    code2wav = {
        "model_type": "",
        "codebook_size": 2048,
        "hidden_size": HIDDEN,
        "intermediate_size": 2 * HIDDEN,
        "num_hidden_layers": 1,
        "num_attention_heads": HIDDEN // HEAD_DIM,
        "num_key_value_heads": HIDDEN // HEAD_DIM,
        "head_dim": HEAD_DIM,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "hidden_act": "silu",
        "layer_scale_initial_scale": 0.01,
        "rms_norm_eps": 1e-05,
        "rope_theta": 10000,
        "max_position_embeddings": 8000,
        "sliding_window": 72,
        "num_quantizers": 16,
        "upsample_rates": [8, 5, 4, 3],
        "upsampling_ratios": [2, 2],
        "decoder_dim": 128,
        "dtype": "bfloat16",
    }
    return {
        "architectures": ["Qwen3OmniMoeForConditionalGeneration"],
        "model_type": "qwen3_omni_moe",
        "thinker_config": thinker,
        "talker_config": talker,
        "code2wav_config": code2wav,
        "enable_audio_output": True,
        **QWEN3_TOKEN_IDS,
        "system_token_id": FIXED_PIECE_IDS["system"],
        "user_token_id": FIXED_PIECE_IDS["user"],
        "assistant_token_id": FIXED_PIECE_IDS["assistant"],
        "dtype": "bfloat16",
        "transformers_version": "4.57.3",
    }


# The Qwen2-VL image and video processors' shared settings; patch and merge sizes match the vision config.
QWEN2VL_VISION = {
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "rescale_factor": 0.00392156862745098,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": 16,
    "temporal_patch_size": 2,
    "merge_size": 2,
}


# Whisper log-mel features (128 bins, 16 kHz) for the audio encoder and the Qwen2-VL image processor, in one
# file as Qwen3-Omni ships them.
OMNI_PREPROCESSOR = {
    "processor_class": "Qwen3OmniMoeProcessor",
    "feature_extractor_type": "WhisperFeatureExtractor",
    "feature_size": 128,
    "sampling_rate": 16000,
    "hop_length": 160,
    "n_fft": 400,
    "chunk_length": 300,
    "n_samples": 4800000,
    "nb_max_frames": 30000,
    "dither": 0.0,
    "padding_side": "right",
    "padding_value": 0.0,
    "return_attention_mask": True,
    "image_processor_type": "Qwen2VLImageProcessor",
    **QWEN2VL_VISION,
}
OMNI_VIDEO_PREPROCESSOR = {
    "processor_class": "Qwen3OmniMoeProcessor",
    "video_processor_type": "Qwen2VLVideoProcessor",
    **QWEN2VL_VISION,
}
OMNI_GENERATION_CONFIG = {
    "bos_token_id": 151643,
    "eos_token_id": [151645, 151643],
    "pad_token_id": 151643,
    "do_sample": True,
    "temperature": 0.7,
    "top_k": 20,
    "top_p": 0.8,
    "repetition_penalty": 1.05,
}


# --------------------------------------------------------------------------------------------------- writing
def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def checkpoint_files(tok_files: dict[str, str]) -> dict[str, dict[str, str]]:
    """Relative path -> text, per checkpoint directory name."""
    tts = {
        **tok_files,
        "config.json": _dump(tts_config()),
        "generation_config.json": _dump(TTS_GENERATION_CONFIG),
        "speech_tokenizer/config.json": _dump(speech_tokenizer_config()),
        "speech_tokenizer/preprocessor_config.json": _dump(SPEECH_TOKENIZER_PREPROCESSOR),
    }
    omni = {
        **tok_files,
        "config.json": _dump(omni_config()),
        "generation_config.json": _dump(OMNI_GENERATION_CONFIG),
        "preprocessor_config.json": _dump(OMNI_PREPROCESSOR),
        "video_preprocessor_config.json": _dump(OMNI_VIDEO_PREPROCESSOR),
    }
    return {TTS_DIR_NAME: tts, OMNI_DIR_NAME: omni}


def write_tree(root: Path, files: dict[str, str]) -> list[str]:
    """Writes the files that differ (atomically) and returns them; other files in `root` stay as they are."""
    written = []
    for rel, text in sorted(files.items()):
        path = root / rel
        data = text.encode()
        if path.is_file() and path.read_bytes() == data:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        written.append(rel)
    return written


def _default_out() -> Path:
    # tests/vllm_omni_env.py is where the tests look; one definition of the cache layout.
    spec = importlib.util.spec_from_file_location("vllm_omni_env", REPO / "tests" / "vllm_omni_env.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Path(module.CHECKPOINTS)


# -------------------------------------------------------------------------------------------------- checking
def validate(out: Path) -> None:
    """Loads what the server loads, the way it loads it, and checks the facts the models depend on."""
    from transformers import AutoConfig, AutoFeatureExtractor, AutoProcessor, AutoTokenizer

    tts, omni = out / TTS_DIR_NAME, out / OMNI_DIR_NAME
    for model_dir in (tts, omni):
        tok = AutoTokenizer.from_pretrained(model_dir)
        _expect(len(tok) == REGULAR_VOCAB_SIZE + len(ADDED_TOKENS), f"{model_dir.name}: {len(tok)} tokens")
        for i, (content, _) in enumerate(ADDED_TOKENS):
            _expect(tok.convert_tokens_to_ids(content) == REGULAR_VOCAB_SIZE + i, f"id of {content}")
        ids = tok("<|im_start|>assistant\nHello there.<|im_end|>\n<|im_start|>assistant\n")["input_ids"]
        _expect(
            ids[:3] == [151644, 77091, 198] and ids[-5:] == [151645, 198, 151644, 77091, 198], f"ids {ids}"
        )
        _expect(tok.decode(ids[3:-5]) == "Hello there.", f"round trip {tok.decode(ids[3:-5])!r}")
        for word, ident in FIXED_PIECE_IDS.items():
            _expect(tok(word)["input_ids"] == [ident], f"{word!r} -> {tok(word)['input_ids']}")
        _expect(tok.eos_token_id == 151645 and tok.pad_token_id == 151643, "eos/pad")
        messages = [
            {"role": "system", "content": "You are a voice assistant."},
            {
                "role": "user",
                "content": [{"type": "audio", "audio": "a.wav"}, {"type": "text", "text": "Hi"}],
            },
        ]
        rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        expected = (
            "<|im_start|>system\nYou are a voice assistant.<|im_end|>\n<|im_start|>user\n"
            "<|audio_start|><|audio_pad|><|audio_end|>Hi<|im_end|>\n<|im_start|>assistant\n"
        )
        _expect(rendered == expected, f"chat template rendered {rendered!r}")

    # Qwen3-TTS: vllm-omni's own config classes (it registers them with AutoConfig when it loads).
    from vllm_omni.model_executor.models.qwen3_tts.configuration_qwen3_tts import Qwen3TTSConfig
    from vllm_omni.model_executor.models.qwen3_tts.tokenizer_12hz import configuration_qwen3_tts_tokenizer_v2

    cfg = Qwen3TTSConfig.from_pretrained(tts)
    talker = cfg.talker_config
    _expect(talker.codec_eos_token_id == 2150, "codec EOS id")
    _expect(talker.code_predictor_config.vocab_size == 2048, "codebook size")
    _expect(talker.codec_language_id["english"] == 2050 and talker.num_code_groups == 16, "talker config")
    codec = configuration_qwen3_tts_tokenizer_v2.Qwen3TTSTokenizerV2Config.from_pretrained(
        tts, subfolder="speech_tokenizer"
    )
    _expect(codec.encoder_config.num_quantizers >= codec.encoder_valid_num_quantizers == 16, "quantizers")
    extractor = AutoFeatureExtractor.from_pretrained(tts, subfolder="speech_tokenizer")
    _expect(type(extractor).__name__ == "EncodecFeatureExtractor", f"codec features {type(extractor)}")
    _expect(extractor.sampling_rate == 24000, "codec sample rate")

    # Qwen3-Omni: transformers' classes, as vLLM loads them, and the processor the thinker stage builds.
    omni_cfg = AutoConfig.from_pretrained(omni)
    _expect(type(omni_cfg).__name__ == "Qwen3OmniMoeConfig", f"omni config {type(omni_cfg).__name__}")
    thinker = omni_cfg.thinker_config
    _expect(thinker.text_config.num_experts == 4 and thinker.audio_token_id == 151675, "thinker config")
    _expect(omni_cfg.talker_config.text_config.hidden_size == thinker.text_config.hidden_size, "widths")
    processor = AutoProcessor.from_pretrained(omni)
    _expect(type(processor).__name__ == "Qwen3OmniMoeProcessor", f"processor {type(processor).__name__}")
    _expect(processor.feature_extractor.feature_size == thinker.audio_config.num_mel_bins, "mel bins")
    print(f"validated {tts} and {omni}")


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"make_checkpoints: check failed: {what}")


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="checkpoints root (default: the tests' cache)")
    parser.add_argument("--validate", action="store_true", help="load the results as vLLM-Omni does")
    args = parser.parse_args(list(argv) if argv is not None else None)
    out: Path = args.out if args.out is not None else _default_out()
    started = time.monotonic()
    tok = build_tokenizer(TRAINING_TEXT.read_text(encoding="utf-8"))
    for name, files in checkpoint_files(tokenizer_files(tok)).items():
        written = write_tree(out / name, files)
        digest = hashlib.sha256("".join(files[k] for k in sorted(files)).encode()).hexdigest()[:12]
        state = f"wrote {', '.join(written)}" if written else "up to date"
        print(f"{out / name} [{digest}]: {state}")
    print(f"checkpoints ready in {time.monotonic() - started:.1f} s")
    if args.validate:
        validate(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
