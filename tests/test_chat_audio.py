"""Audio turns in StepAudioChat: audio is tokenized and inserted as <audio_N> text, history mixes both."""

import soundfile
import torch

from stepaudio import StepAudioChat
from stepaudio.tokenizer import StepAudioTokenizer


def test_audio_turn_end_to_end(tiny_chat_dir, tiny_tokenizer_dir, shared_audio_dir):
    clip = shared_audio_dir / "BAC009S0764W0121.wav"
    chat = StepAudioChat(tiny_chat_dir, device="cpu", tokenizer_path=tiny_tokenizer_dir)
    audio_string = chat.audio_tokenizer(str(clip))
    assert audio_string.startswith("<audio_")
    messages = [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": {"type": "audio", "audio": str(clip)}},
    ]
    ids = chat.encode_messages(messages)
    audio_ids = [i for i in ids if i >= 65536]
    # Exactly the tokenizer's interleaved ids, in order, as one block inside the last human turn.
    assert audio_ids == chat.tokenizer.encode(audio_string, add_special_tokens=False)
    start = ids.index(audio_ids[0])
    assert ids[start : start + len(audio_ids)] == audio_ids and ids[start + len(audio_ids)] == 3
    reply = chat(messages, max_new_tokens=4, do_sample=False)
    assert isinstance(reply, str)


def test_audio_array_with_sample_rate_equals_the_file(tiny_chat_dir, tiny_tokenizer_dir, shared_audio_dir):
    clip = shared_audio_dir / "piper_en_22k.wav"
    audio, rate = soundfile.read(clip, dtype="float32")
    tokenizer = StepAudioTokenizer(tiny_tokenizer_dir, device="cpu")
    chat = StepAudioChat(tiny_chat_dir, device="cpu", audio_tokenizer=tokenizer)
    from_file = chat.encode_messages([{"role": "user", "content": {"type": "audio", "audio": str(clip)}}])
    from_array = chat.encode_messages(
        [{"role": "user", "content": {"type": "audio", "audio": torch.from_numpy(audio), "sample_rate": rate}}]
    )
    assert from_file == from_array
