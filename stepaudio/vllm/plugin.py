"""The ``vllm.general_plugins`` entry point of stepaudio: the native Step-1 config for vLLM.

vLLM (0.33) ships ``Step1ForCausalLM`` but no config class for ``model_type: step1``.  Its config
parser (``vllm/transformers_utils/config.py``, ``HFConfigParser.parse``) hands every model type it
does not know itself to ``transformers.AutoConfig.from_pretrained``.  The official ``config.json``
carries an ``auto_map`` to remote code, so without a registered class that call fails unless
``--trust-remote-code`` is given, and the remote class leaves ``tie_word_embeddings`` unset, which
vLLM's ``step1.py`` reads as "tied" (``getattr(config, "tie_word_embeddings", True)``): the separate
``lm_head.weight`` of the checkpoints is then loaded into the shared embedding matrix.

:func:`register` puts :class:`~stepaudio.llm.configuration.Step1Config` (``tie_word_embeddings=False``)
into ``AutoConfig``.  A registered class that lives outside ``transformers`` is "explicit local code":
transformers uses it instead of the ``auto_map`` remote code whether or not ``trust_remote_code`` is
set, so both ``vllm serve <folder>`` and ``vllm serve <folder> --trust-remote-code`` get the untied head.

vLLM calls general plugins in every process it starts (the API server and ``EngineArgs``, the engine
core, each GPU worker; ``vllm/plugins/__init__.py``), so the registration is in place wherever a
config is parsed or unpickled.
"""

from __future__ import annotations

import threading

__all__ = ["register"]

_lock = threading.Lock()
_registered = False


def register() -> None:
    """Register ``model_type: step1`` with transformers' ``AutoConfig`` (idempotent, thread-safe, cheap).

    Imports only the configuration (and what ``stepaudio.llm`` needs); never vLLM, never a model.
    """
    global _registered
    if _registered:
        return
    with _lock:
        if _registered:
            return
        from transformers import AutoConfig

        from ..llm.configuration import Step1Config

        AutoConfig.register(Step1Config.model_type, Step1Config, exist_ok=True)
        _registered = True
