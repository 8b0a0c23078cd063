"""Speaker registry and the voice-prompt disk cache."""

import json
import shutil

import numpy as np
import pytest
import soundfile
import torch

from stepaudio.errors import CheckpointConfigError, PromptError
from stepaudio.tts.speakers import SpeakerRegistry, VoicePrompt, VoicePromptCache, file_fingerprint, read_speakers_info


class CountingExtractor:
    """Computes a small but real voice prompt from the clip (RMS per 0.1 s), counting its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, wav_path, prompt_text, decoder):
        self.calls.append((wav_path.name, decoder))
        audio, rate = soundfile.read(wav_path, dtype="float32", always_2d=True)
        frames = audio.mean(axis=1)[: len(audio) // (rate // 10) * (rate // 10)].reshape(-1, rate // 10)
        rms = torch.from_numpy(np.sqrt((frames**2).mean(axis=1)))
        return VoicePrompt(
            prompt_text=prompt_text,
            prompt_audio_ids=[65536 + int(v * 1000) % 5120 for v in rms.tolist()],
            speech_feat=rms.repeat(80, 1).T[None].contiguous(),
            speech_feat_len=torch.tensor([rms.numel()], dtype=torch.int32),
            embedding=torch.full((1, 192), float(rms.mean())),
        )


@pytest.fixture()
def speakers_dir(shared_audio_dir, tmp_path):
    folder = tmp_path / "speakers"
    shutil.copytree(shared_audio_dir / "speakers", folder)
    return folder


def test_reads_the_upstream_registry_including_the_24_bit_prompt(speakers_dir, tmp_path):
    registry = SpeakerRegistry(
        speakers_dir, VoicePromptCache(CountingExtractor(), "models-v1", cache_dir=tmp_path / "cache")
    )
    assert registry.speaker_ids == ["Tingting", "TingtingRAP", "Tingting哼唱"]
    assert registry.transcripts["TingtingRAP"].startswith("（RAP）")
    humming = registry.get("Tingting哼唱", "CosyVoice-300M-25Hz-Music")
    assert soundfile.info(registry.prompt_wav("Tingting哼唱")).subtype == "PCM_24"
    assert humming.speech_feat_len.item() == 124  # 12.47 s in 0.1 s frames
    assert humming.prompt_text.startswith("（哼唱）")


def test_disk_cache_is_used_across_instances_and_keyed_by_content(speakers_dir, tmp_path):
    cache = tmp_path / "cache"
    first = CountingExtractor()
    prompt = SpeakerRegistry(speakers_dir, VoicePromptCache(first, "models-v1", cache_dir=cache)).get(
        "Tingting", "CosyVoice-300M-25Hz"
    )
    assert first.calls == [("Tingting_prompt.wav", "CosyVoice-300M-25Hz")]
    second = CountingExtractor()
    again = SpeakerRegistry(speakers_dir, VoicePromptCache(second, "models-v1", cache_dir=cache)).get(
        "Tingting", "CosyVoice-300M-25Hz"
    )
    assert second.calls == []  # read back from disk
    assert again.prompt_audio_ids == prompt.prompt_audio_ids and torch.equal(again.embedding, prompt.embedding)
    assert again.prompt_text == prompt.prompt_text
    # Another model fingerprint, another transcript or another clip content: recomputed.
    third = CountingExtractor()
    SpeakerRegistry(speakers_dir, VoicePromptCache(third, "models-v2", cache_dir=cache)).get(
        "Tingting", "CosyVoice-300M-25Hz"
    )
    info = read_speakers_info(speakers_dir)
    info["Tingting"] = "另一个文本"
    (speakers_dir / "speakers_info.json").write_text(json.dumps(info, ensure_ascii=False), encoding="utf-8")
    SpeakerRegistry(speakers_dir, VoicePromptCache(third, "models-v2", cache_dir=cache)).get(
        "Tingting", "CosyVoice-300M-25Hz"
    )
    assert len(third.calls) == 2


def test_corrupt_cache_file_is_recomputed_with_a_warning(speakers_dir, tmp_path, caplog):
    cache = tmp_path / "cache"
    registry = SpeakerRegistry(speakers_dir, VoicePromptCache(CountingExtractor(), "m", cache_dir=cache))
    registry.get("Tingting", "CosyVoice-300M-25Hz")
    (cache_file,) = cache.glob("*.safetensors")
    cache_file.write_bytes(b"not a safetensors file")
    extractor = CountingExtractor()
    SpeakerRegistry(speakers_dir, VoicePromptCache(extractor, "m", cache_dir=cache)).get(
        "Tingting", "CosyVoice-300M-25Hz"
    )
    assert len(extractor.calls) == 1 and "unreadable voice-prompt cache" in caplog.text


def test_unknown_speaker_and_missing_clip_are_clear_errors(speakers_dir, tmp_path):
    registry = SpeakerRegistry(speakers_dir, VoicePromptCache(CountingExtractor(), "m", cache_dir=tmp_path))
    with pytest.raises(PromptError, match="unknown speaker 'Nobody'.*Tingting"):
        registry.get("Nobody", "CosyVoice-300M-25Hz")
    (speakers_dir / "TingtingRAP_prompt.wav").unlink()
    with pytest.raises(FileNotFoundError, match="TingtingRAP_prompt.wav"):
        registry.get("TingtingRAP", "CosyVoice-300M-25Hz-Music")


def test_bad_registry_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="speakers_info.json"):
        read_speakers_info(tmp_path)
    (tmp_path / "speakers_info.json").write_text("{not json")
    with pytest.raises(CheckpointConfigError, match="not valid JSON"):
        read_speakers_info(tmp_path)
    (tmp_path / "speakers_info.json").write_text('["Tingting"]')
    with pytest.raises(CheckpointConfigError, match="JSON object"):
        read_speakers_info(tmp_path)


def test_file_fingerprint_tracks_content(tmp_path):
    a = tmp_path / "a.bin"
    a.write_bytes(b"x" * 3_000_000)
    before = file_fingerprint(a)
    a.write_bytes(b"x" * 2_999_999 + b"y")
    assert file_fingerprint(a) != before
