"""The TTS-3B sampling rules as a vLLM (0.33) custom logits processor.

Enable it when starting the engine::

    vllm serve Step-Audio-TTS-3B --attention-backend TRITON_ATTN \\
        --logits-processors stepaudio.vllm.logits_processors:StepAudioTTSLogitsProcessor

and turn the rules on per request with the ``stepaudio_tts`` key of :mod:`stepaudio.vllm.tts_rules`
(``SamplingParams.extra_args`` in-process, ``vllm_xargs`` over HTTP).  Requests without them are left alone.

vLLM 0.33 has two model runners with two logits-processor interfaces: Model Runner V2 (the default on
CUDA; ``vllm.v1.worker.gpu.sample.logits_processor.LogitsProcessor``) and the V1 runner
(``VLLM_USE_V2_MODEL_RUNNER=0`` or features V2 lacks; ``vllm.v1.sample.logits_processor.LogitsProcessor``).
The class below implements both, so the one ``--logits-processors`` name works with either runner; all
per-request logic is in :class:`~stepaudio.vllm.tts_rules.SlotRules` / :class:`~stepaudio.vllm.tts_rules.BatchRules`.

It is deliberately not declared under the ``vllm.logits_processors`` entry-point group: such plugins are
loaded for every model, and the V1 runner only tracks generated ids for processors named on the
command line (``logitsprocs_need_output_token_ids``), which the repetition rule needs.

This module imports vLLM; import it only where vLLM is installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality
from vllm.v1.sample.logits_processor import LogitsProcessor as V1LogitsProcessor
from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext
from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor as V2LogitsProcessor

from .tts_rules import BatchRules, SlotRules, TTSRules

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.sampling_params import SamplingParams

__all__ = ["StepAudioTTSLogitsProcessor"]

#: The value of ``--logits-processors`` (and of ``EngineArgs.logits_processors``).
FQCN = "stepaudio.vllm.logits_processors:StepAudioTTSLogitsProcessor"


class StepAudioTTSLogitsProcessor(V1LogitsProcessor, V2LogitsProcessor):
    """Audio-ids-only and anti-loop rules of the Step-Audio-TTS-3B, per request.

    Constructed by vLLM as ``cls(vllm_config, req_states)`` under Model Runner V2 and as
    ``cls(vllm_config, device, is_pin_memory)`` under the V1 runner.
    """

    def __init__(self, vllm_config: VllmConfig, *runner_args: object) -> None:
        if vllm_config.speculative_config is not None:
            raise ValueError(
                f"{FQCN} does not support speculative decoding (its rows hold draft tokens); "
                "drop --speculative-config or the logits processor"
            )
        self._slots: SlotRules | None = None
        self._batch: BatchRules | None = None
        if len(runner_args) == 1:  # Model Runner V2: (vllm_config, req_states)
            self._req_states = runner_args[0]
            self._slots = SlotRules(self._req_states.max_num_reqs)
        elif len(runner_args) == 2:  # V1 runner: (vllm_config, device, is_pin_memory)
            self._batch = BatchRules()
        else:
            raise TypeError(
                f"StepAudioTTSLogitsProcessor expects (vllm_config, req_states) or (vllm_config, device, "
                f"is_pin_memory), got {1 + len(runner_args)} arguments"
            )

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        """Refuse a request with malformed ``stepaudio_*`` arguments at admission (HTTP 400)."""
        TTSRules.from_extra_args(sampling_params.extra_args)

    # -- Model Runner V2 ------------------------------------------------------------------------------

    def add_request(self, req_idx: int, sampling_params: SamplingParams) -> bool:
        assert self._slots is not None
        return self._slots.add(req_idx, TTSRules.from_extra_args(sampling_params.extra_args))

    # -- V1 runner ------------------------------------------------------------------------------------

    def is_argmax_invariant(self) -> bool:
        """The rules forbid ids, so they change greedy picks too."""
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        assert self._batch is not None
        self._batch.update(
            batch_update.removed,
            (
                (index, TTSRules.from_extra_args(params.extra_args), prompt_ids, output_ids)
                for index, params, prompt_ids, output_ids in batch_update.added
            ),
            ((a, b, direction == MoveDirectionality.SWAP) for a, b, direction in batch_update.moved),
        )

    # -- both -----------------------------------------------------------------------------------------

    def apply(self, logits: torch.Tensor, ctx: LogitsContext | None = None) -> torch.Tensor:
        if ctx is None:
            assert self._batch is not None
            return self._batch.apply(logits)
        assert self._slots is not None
        return self._slots.apply(
            logits,
            ctx.idx_mapping_np,
            ctx.idx_mapping,
            self._req_states.all_token_ids.gpu,
            self._req_states.total_len.gpu,
        )
