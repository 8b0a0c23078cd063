"""StepAudioTTS end to end on tiny official-layout folders: speakers, clone, RAP, streaming, errors."""

import threading
import time

import pytest
import torch

from stepaudio.errors import CheckpointFileNotFoundError, InvalidArgumentError, PromptError
from stepaudio.llm.text_tokenizer import EOT_ID
from stepaudio.tokenizer import StepAudioTokenizer
from stepaudio.tts.tts import AudioTokensOnlyLogitsProcessor, StepAudioTTS, max_audio_tokens_for

SAMPLES_PER_TOKEN = 22050 / (125 / 3)  # 529.2 samples of 22.05 kHz audio per audio token


@pytest.fixture(scope="module")
def tts(tiny_tts_dir, tiny_tokenizer_dir, shared_audio_dir, tmp_path_factory):
    tokenizer = StepAudioTokenizer(tiny_tokenizer_dir, device="cpu")
    return StepAudioTTS(
        tiny_tts_dir,
        tokenizer,
        speakers_dir=shared_audio_dir / "speakers",
        device="cpu",
        cache_dir=tmp_path_factory.mktemp("voice-cache"),
        max_speech_seconds=2.0,  # random LM weights rarely end a turn: keep each segment short
    )


def test_registered_speaker_gives_finite_non_silent_speech_of_matching_length(tts):
    torch.manual_seed(0)
    codes_seen = []
    original = tts.generate_audio_codes

    def recording(*args, **kwargs):
        codes = original(*args, **kwargs)
        codes_seen.append(codes)
        return codes

    tts.generate_audio_codes = recording
    try:
        wav, rate = tts("今天天气真好。", "Tingting")
    finally:
        del tts.generate_audio_codes
    assert rate == 22050 and wav.dtype == torch.float32 and wav.dim() == 2 and wav.shape[0] == 1
    assert torch.isfinite(wav).all() and wav.abs().max() > 1e-3
    (codes,) = codes_seen
    assert all(0 <= c < 5120 for c in codes) and 0 < len(codes) <= min(max_audio_tokens_for("今天天气真好。"), 83)
    # tokens -> mel frames (int(n / 41.67 * 22050 / 256)) -> 256 samples per frame
    assert wav.shape[1] == int(len(codes) / (125 / 3) * 22050 / 256) * 256


def test_voice_prompt_comes_from_the_real_prompt_clip(tts, shared_audio_dir):
    voice = tts.speakers.get("Tingting", "CosyVoice-300M-25Hz")
    # ~4.4 s clip: mel at 22050/256 frames per second; tokens from the trimmed clip at 41.67 per second.
    assert voice.speech_feat.shape[0] == 1 and voice.speech_feat.shape[2] == 80
    assert abs(voice.speech_feat.shape[1] - 4.4 * 22050 / 256) < 5
    assert voice.embedding.shape == (1, 192) and torch.isfinite(voice.embedding).all()
    assert 100 < len(voice.prompt_audio_ids) < 200 and len(voice.prompt_audio_ids) % 5 == 0


def test_rap_and_humming_use_the_music_decoder_and_style_speakers(tts):
    torch.manual_seed(1)
    wav, _ = tts("（RAP）远远甩开的笑", "Tingting")
    assert "CosyVoice-300M-25Hz-Music" in tts._decoders and wav.shape[1] > 0
    hum = tts.speakers.get("Tingting哼唱", "CosyVoice-300M-25Hz-Music")  # the 24-bit 48 kHz prompt
    assert hum.prompt_text.startswith("（哼唱）") and hum.speech_feat.shape[1] > 1000


def test_zero_shot_clone(tts, shared_audio_dir):
    torch.manual_seed(2)
    clone = {
        "speaker": "yuqian",
        "prompt_text": "叫做秋风起蟹脚痒，啊，什么意思呢？就是说这秋风一起啊，螃蟹就该上市了。",
        "wav_path": str(shared_audio_dir / "prompt_wav_yuqian.wav"),
    }
    wav, rate = tts("克隆一个声音。", None, clone)
    assert rate == 22050 and torch.isfinite(wav).all() and wav.shape[1] > 0
    with pytest.raises(InvalidArgumentError, match="clone_dict needs 'prompt_text'"):
        tts("你好。", None, {"speaker": "x", "wav_path": clone["wav_path"]})


def test_streaming_matches_offline_length_and_is_close(tts):
    torch.manual_seed(3)
    offline, _ = tts("流式合成。", "Tingting")
    torch.manual_seed(3)
    chunks = list(tts.stream("流式合成。", "Tingting"))
    assert len(chunks) > 1
    streamed = torch.cat(chunks, dim=1)
    assert streamed.shape == offline.shape  # same sampled tokens, same total length
    relative_error = (streamed - offline).norm() / offline.norm()
    assert relative_error < 0.5


def test_stopping_the_stream_early_stops_generation(tts):
    torch.manual_seed(4)
    stream = tts.stream("一段很长的文字。" * 3, "Tingting")
    first = next(stream)
    assert first.numel() > 0
    stream.close()  # the consumer goes away: the LM worker must end promptly
    deadline = time.time() + 10
    while any(t.name == "stepaudio-tts-generate" for t in threading.enumerate()) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "stepaudio-tts-generate" for t in threading.enumerate())


def test_long_text_is_split_and_joined(tts):
    torch.manual_seed(5)
    tts.max_segment_chars = 6
    try:
        segments = tts._segments("第一句话。第二句话。第三句话。", "Tingting", None)
    finally:
        tts.max_segment_chars = 150
    assert [segment.text for segment in segments] == ["第一句话。", "第二句话。", "第三句话。"]


def test_speed_and_volume(tts):
    torch.manual_seed(6)
    normal, _ = tts("你好。", "Tingting")
    torch.manual_seed(6)
    fast, _ = tts("你好。", "Tingting", speed_ratio=2.0, volume_ratio=0.5)
    assert fast.shape[1] == pytest.approx(normal.shape[1] / 2, rel=0.05)
    assert fast.abs().max() < normal.abs().max()


def test_request_errors(tts, tiny_tts_dir, tiny_tokenizer_dir):
    with pytest.raises(PromptError, match="unknown speaker 'Nobody'"):
        tts("你好。", "Nobody")
    with pytest.raises(PromptError, match="only the tag"):
        tts("(高兴1)", "Tingting")
    with pytest.raises(PromptError, match="empty"):
        tts("  ", "Tingting")
    with pytest.raises(InvalidArgumentError, match="speaker is needed: pass a registered speaker id"):
        tts("你好。", None)
    no_speakers = StepAudioTTS(tiny_tts_dir, tts.audio_tokenizer, device="cpu", max_speech_seconds=1.0)
    with pytest.raises(PromptError, match="no speakers folder"):
        no_speakers("你好。", "Tingting")


def test_missing_decoder_folder_is_named(tiny_tts_dir, tmp_path, tts):
    import shutil

    copy = tmp_path / "Step-Audio-TTS-3B"
    shutil.copytree(tiny_tts_dir, copy, ignore=shutil.ignore_patterns("CosyVoice-300M-25Hz"))
    with pytest.raises(CheckpointFileNotFoundError, match="CosyVoice-300M-25Hz"):
        StepAudioTTS(copy, tts.audio_tokenizer, device="cpu")


def test_audio_only_processor_allows_audio_ids_and_end_of_turn():
    processor = AudioTokensOnlyLogitsProcessor(74752)
    scores = processor(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 74752))
    allowed = torch.isfinite(scores[0]).nonzero().flatten().tolist()
    assert allowed == [EOT_ID] + list(range(65536, 70656))


def test_cloned_voices_stay_out_of_the_disk_cache_when_told(tts, tmp_path, shared_audio_dir):
    from stepaudio.tts.speakers import VoicePromptCache

    clone = {"wav_path": shared_audio_dir / "prompt_wav_yuqian.wav", "prompt_text": "叫做秋风起蟹脚痒"}
    cache = VoicePromptCache(tts._extract_voice_prompt, tts._model_fingerprint(), tmp_path / "cache")
    saved = tts.voice_prompts, tts.cache_cloned_voices
    try:
        tts.voice_prompts = cache
        tts.cache_cloned_voices = False
        tts("你好", clone_dict=clone)
        assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
        tts.cache_cloned_voices = True
        tts("你好", clone_dict=clone)
        assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1
    finally:
        tts.voice_prompts, tts.cache_cloned_voices = saved
