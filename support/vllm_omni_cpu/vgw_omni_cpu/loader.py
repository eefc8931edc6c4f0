"""`--load-format vgw_dummy_eos`: vLLM's dummy (random) weights, made to stop.

With purely random weights the Qwen3-TTS talker never samples its codec EOS, so vLLM-Omni 0.30.0 answers every
`task_type: Base` request with 500 "Qwen3-TTS Base did not emit codec EOS before its token budget". Random
audio is fine for the gateway's tests (they check protocol, bytes, timing and status, not words), an endless
talker is not. So, for the TTS talker only, the weights are biased so the EOS logit wins: every codec
embedding gets +1 on channel 0 (the residual stream then carries it through the near-zero random layers), the
final RMSNorm weights are 1, and the `lm_head` row of `codec_eos_token_id` gets +1 on channel 0. The stage's
`min_tokens` decides how much audio comes out before EOS may be sampled.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from vllm.config import ModelConfig
from vllm.model_executor.model_loader import register_model_loader
from vllm.model_executor.model_loader.dummy_loader import DummyModelLoader

log = logging.getLogger(__name__)

LOAD_FORMAT = "vgw_dummy_eos"
_TALKER = "Qwen3TTSTalkerForConditionalGeneration"


def register() -> None:
    """vLLM general plug-in: runs in every vLLM process (API server, engine cores, workers)."""
    if LOAD_FORMAT not in _registered:
        register_model_loader(LOAD_FORMAT)(EosBiasedDummyLoader)
        _registered.add(LOAD_FORMAT)


_registered: set[str] = set()


class EosBiasedDummyLoader(DummyModelLoader):
    def load_weights(self, model: nn.Module, model_config: ModelConfig) -> None:
        super().load_weights(model, model_config)
        for module in model.modules():
            if type(module).__name__ == _TALKER:
                _bias_towards_eos(module)


@torch.no_grad()
def _bias_towards_eos(talker: nn.Module) -> None:
    eos = int(talker.talker_config.codec_eos_token_id)  # type: ignore[union-attr]
    embed = talker.model.embed_tokens.weight  # type: ignore[union-attr]
    embed[:, 0] += 1.0
    talker.model.norm.weight.fill_(1.0)  # type: ignore[union-attr]
    talker.lm_head.weight[eos, 0] += 1.0  # type: ignore[union-attr,index]
    log.info("vgw_dummy_eos: biased the Qwen3-TTS talker towards codec EOS %d", eos)
