"""The Step-1 language model (Step-Audio-Chat, Step-Audio-TTS-3B backbone), its text tokenizer and prompts.

Importing this package registers ``model_type: step1`` with transformers' ``AutoConfig`` and
``AutoModelForCausalLM``, so ``AutoModelForCausalLM.from_pretrained(<official folder>)`` works
without ``trust_remote_code``.
"""

from transformers import AutoConfig, AutoModelForCausalLM

from .alibi import SqrtAlibiBias, sqrt_alibi_slopes
from .configuration import STEP_AUDIO_CHAT_CONFIG, STEP_AUDIO_TTS_3B_CONFIG, Step1Config
from .modeling import Step1ForCausalLM, Step1Model, Step1PreTrainedModel

AutoConfig.register(Step1Config.model_type, Step1Config, exist_ok=True)
AutoModelForCausalLM.register(Step1Config, Step1ForCausalLM, exist_ok=True)

__all__ = [
    "STEP_AUDIO_CHAT_CONFIG",
    "STEP_AUDIO_TTS_3B_CONFIG",
    "SqrtAlibiBias",
    "Step1Config",
    "Step1ForCausalLM",
    "Step1Model",
    "Step1PreTrainedModel",
    "sqrt_alibi_slopes",
]
