"""StepAudioChat: text turns in, reply text out, streaming, stop on end of turn."""

import subprocess
import sys

import pytest
import torch
from transformers.generation.streamers import BaseStreamer

from stepaudio import StepAudioChat
from stepaudio.errors import CheckpointFileNotFoundError, PromptError
from stepaudio.llm.text_tokenizer import EOT_ID

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Hello, how are you?"}]


@pytest.fixture(scope="module")
def chat(tiny_chat_dir) -> StepAudioChat:
    return StepAudioChat(tiny_chat_dir, device="cpu")


def _greedy_ids(chat: StepAudioChat, messages, n: int) -> list[int]:
    ids = torch.tensor([chat.encode_messages(messages)])
    with torch.no_grad():
        for _ in range(n):
            next_id = chat.model(ids).logits[0, -1].argmax()
            ids = torch.cat([ids, next_id.view(1, 1)], dim=1)
    return ids[0, -n:].tolist()


def test_device_dtype_and_prompt_layout(chat):
    assert chat.device.type == "cpu" and chat.dtype == torch.float32
    assert next(chat.model.parameters()).dtype == torch.float32
    ids = chat.encode_messages(MESSAGES)
    assert ids[:2] == [1, 4] and ids.count(4) == 3 and ids.count(EOT_ID) == 2


def test_parent_folder_is_accepted(tiny_chat_dir):
    assert StepAudioChat(tiny_chat_dir.parent, device="cpu").model_path == tiny_chat_dir


def test_greedy_reply_equals_manual_decoding(chat):
    expected = _greedy_ids(chat, MESSAGES, 8)
    assert EOT_ID not in expected
    reply = chat(MESSAGES, max_new_tokens=8, do_sample=False)
    assert reply == chat.decode_reply(expected)
    assert reply


def test_stream_yields_the_same_text_as_a_call(chat):
    reply = chat(MESSAGES, max_new_tokens=8, do_sample=False)
    pieces = list(chat.stream(MESSAGES, max_new_tokens=8, do_sample=False))
    assert len(pieces) >= 1 and "".join(pieces) == reply


def test_generation_stops_at_end_of_turn_and_hides_it(tiny_chat_dir):
    chat = StepAudioChat(tiny_chat_dir, device="cpu")
    first, second, third = _greedy_ids(chat, MESSAGES, 3)
    assert len({first, second, third, EOT_ID}) == 4
    # Swap the lm_head rows of the third greedy token and <|EOT|>: steps one and two are unchanged, and
    # at step three <|EOT|> now gets the winning logit, so the reply must end after two tokens.
    with torch.no_grad():
        weight = chat.model.lm_head.weight
        weight[[third, EOT_ID]] = weight[[EOT_ID, third]]
    output = chat.model.generate(
        torch.tensor([chat.encode_messages(MESSAGES)]), max_new_tokens=20, do_sample=False, eos_token_id=EOT_ID
    )
    assert output[0, -3:].tolist() == [first, second, EOT_ID]
    assert chat(MESSAGES, max_new_tokens=20, do_sample=False) == chat.tokenizer.decode([first, second])
    assert "".join(chat.stream(MESSAGES, max_new_tokens=20, do_sample=False)) == chat.tokenizer.decode([first, second])


class _CountingStreamer(BaseStreamer):
    def __init__(self):
        self.calls = []

    def put(self, value):
        self.calls.append(value.reshape(-1).tolist())

    def end(self):
        self.calls.append("end")


def test_sampling_is_seeded_and_respects_the_limit(chat):
    torch.manual_seed(0)
    streamer = _CountingStreamer()
    a = chat(MESSAGES, max_new_tokens=6, streamer=streamer)
    torch.manual_seed(0)
    b = chat(MESSAGES, max_new_tokens=6)
    assert a == b
    # The first put() is the prompt; then one call per generated token, then end().
    assert streamer.calls[0] == chat.encode_messages(MESSAGES) and streamer.calls[-1] == "end"
    assert len(streamer.calls) - 2 == 6


def test_multi_turn_history_is_part_of_the_prompt(chat):
    history = MESSAGES + [{"role": "assistant", "content": "fine"}, {"role": "user", "content": "and you?"}]
    assert len(chat.encode_messages(history)) > len(chat.encode_messages(MESSAGES))
    assert isinstance(chat(history, max_new_tokens=3, do_sample=False), str)


def test_overlong_prompt_and_audio_without_tokenizer_are_clear_errors(chat):
    too_long = [{"role": "user", "content": "hello " * (chat.max_seq_len + 10)}]
    with pytest.raises(PromptError, match="at most 2048"):
        chat(too_long)
    with pytest.raises(PromptError, match="no audio tokenizer"):
        chat([{"role": "user", "content": {"type": "audio", "audio": "x.wav"}}])


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointFileNotFoundError, match="is not a Step-Audio-Chat folder"):
        StepAudioChat(tmp_path, device="cpu")
    with pytest.raises(CheckpointFileNotFoundError, match="does not exist"):
        StepAudioChat(tmp_path / "nowhere", device="cpu")


def test_cli_makes_fixtures_and_chats(tmp_path):
    made = subprocess.run(
        [sys.executable, "-m", "stepaudio.testing", str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert "Step-Audio-Chat" in made.stdout and (tmp_path / "Step-Audio-Chat" / "config.json").is_file()
    from stepaudio.cli import main

    assert main(["chat", "--model-path", str(tmp_path), "--text", "hi", "--max-new-tokens", "4", "--greedy"]) == 0


def test_stream_cancel_stops_generation_promptly(chat):
    import threading

    cancel = threading.Event()
    pieces = []
    for piece in chat.stream(MESSAGES, max_new_tokens=500, do_sample=False, cancel=cancel):
        pieces.append(piece)
        if len(pieces) == 2:
            cancel.set()
    assert 2 <= len(pieces) <= 4  # at most a token or two after the cancel
    assert not any(t.name == "stepaudio-chat-generate" for t in threading.enumerate())


def test_closing_the_stream_early_stops_the_worker(chat):
    import threading

    stream = chat.stream(MESSAGES, max_new_tokens=500, do_sample=False)
    next(stream)
    stream.close()
    assert not any(t.name == "stepaudio-chat-generate" for t in threading.enumerate())


def test_pre_tokenized_audio_content(chat):
    ids = chat.encode_messages([{"role": "user", "content": {"type": "audio", "audio_ids": [65536 + 3, 66560 + 7]}}])
    assert [i for i in ids if i >= 65536] == [65539, 66567]
