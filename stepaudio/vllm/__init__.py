"""Serving the Step-1 language models with vLLM (``pip install 'stepaudio[vllm]'``, CUDA GPUs only).

* :mod:`.plugin`: the ``vllm.general_plugins`` entry point; it registers the native ``Step1Config`` (untied
  ``lm_head``) so ``vllm serve <Step-Audio-Chat>`` needs no ``--trust-remote-code``.
* :mod:`.tts_rules`: the TTS-3B sampling rules as the per-request ``SamplingParams.extra_args`` key
  ``stepaudio_tts``, and the engine-independent state of the vLLM logits processor (tested without vLLM).
* :mod:`.logits_processors`: the vLLM logits processor (``--logits-processors
  stepaudio.vllm.logits_processors:StepAudioTTSLogitsProcessor``); it imports vLLM.

Only :mod:`.logits_processors` imports vLLM.
"""
