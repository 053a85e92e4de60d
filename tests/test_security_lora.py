"""Untrusted LoRA files and ``loras`` keys: every check bounded before the header is parsed.

Issue #18: a 2 MB header whose shape lists a million dimensions took 35 s to check, holding
the run lock and the event loop. Each bound gets a file that is over it, refused in plain
words; one test uploads such a file to a real server while another client is being answered.
"""

from __future__ import annotations

import json
import re
import struct
import threading
import time
import uuid

import httpx
import pytest
from test_app import free_port
from test_lora_stack import lora_weights, write_lora

import app
import bounded_json
from backend import RunControl
from lora.header import (
    HEADER_LIMITS,
    MAX_DIMS,
    MAX_HEADER_BYTES,
    MAX_KEY_CHARS,
    MAX_TENSORS,
    LoraError,
    read_safetensors_header,
)
from lora.stack import LoraStack
from modes import GenerateRequest
from outputs import OutputStore
from studio import Studio

LAYER = "transformer.layers.0.self_attn.to_q.lora_A.weight"


def tensor(shape: list | str = "[4, 32]") -> str:
    shape = shape if isinstance(shape, str) else json.dumps(shape)
    return f'{{"dtype": "F32", "shape": {shape}, "data_offsets": [0, 0]}}'


def write_raw(path, header: str | bytes, data: bytes = b""):
    raw = header.encode() if isinstance(header, str) else header
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def shape_bomb(path, dims: int, key: str = LAYER):
    """The attack of issue #18: one tensor whose shape lists ``dims`` twos (2 bytes each)."""
    return write_raw(path, f'{{"{key}": {tensor("[" + ",".join(["2"] * dims) + "]")}}}')


def refusal(path) -> str:
    with pytest.raises(LoraError) as caught:
        read_safetensors_header(path)
    return str(caught.value)


@pytest.mark.parametrize("dims", [MAX_DIMS + 1, 1_000_000, 2_000_000])
def test_a_shape_with_too_many_dimensions_is_refused_naming_the_tensor(tmp_path, dims):
    path = shape_bomb(tmp_path / "bomb.safetensors", dims)
    started = time.perf_counter()
    message = refusal(path)
    print(f"{path.stat().st_size / 1024**2:.1f} MB shape bomb refused in {time.perf_counter() - started:.3f} s")
    assert f"tensor '{LAYER}' has {dims:,} dimensions; a LoRA weight has at most {MAX_DIMS}" in message


def test_a_header_nested_100000_deep_is_refused_in_plain_words(tmp_path):
    path = write_raw(tmp_path / "deep.safetensors", '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    message = refusal(path)
    assert "nested more than 3 levels deep" in message
    assert "recursion" not in message.lower()


def test_a_number_of_5000_digits_is_refused_in_plain_words(tmp_path):
    path = write_raw(tmp_path / "digits.safetensors", f'{{"{LAYER}": {tensor("[" + "9" * 5000 + ", 1]")}}}')
    message = refusal(path)
    assert "a number 5,000 digits long; the limit is 20 digits" in message
    assert "4300" not in message


def test_too_many_names_are_refused_before_parsing(tmp_path):
    metadata = ", ".join(f'"k{i}": 0' for i in range(HEADER_LIMITS.max_names))  # and "__metadata__" itself
    path = write_raw(tmp_path / "names.safetensors", f'{{"__metadata__": {{{metadata}}}}}')
    assert f"it holds {HEADER_LIMITS.max_names + 1:,} names; the limit is {HEADER_LIMITS.max_names:,}" in refusal(path)


def test_too_many_tensors_are_refused(tmp_path):
    count = MAX_TENSORS + 1
    header = ", ".join(f'"t{i}.lora_A.weight": {tensor()}' for i in range(count))
    path = write_raw(tmp_path / "tensors.safetensors", "{" + header + "}")
    assert f"it holds {count:,} tensors; a LoRA holds at most {MAX_TENSORS:,}" in refusal(path)


def test_too_many_values_are_refused_before_parsing(tmp_path):
    lists = "[" + ", ".join(["[]"] * (HEADER_LIMITS.max_values + 2)) + "]"  # a list of lists is not a shape
    path = write_raw(tmp_path / "values.safetensors", f'{{"a": {lists}}}')
    assert f"values; the limit is {HEADER_LIMITS.max_values:,}" in refusal(path)


def test_a_long_tensor_name_is_refused(tmp_path):
    name = "x" * (MAX_KEY_CHARS + 88)
    path = write_raw(tmp_path / "name.safetensors", f'{{"{name}": {tensor()}}}')
    assert f"is {MAX_KEY_CHARS + 88} characters long; the limit is {MAX_KEY_CHARS}" in refusal(path)


def test_a_header_over_its_byte_limit_is_refused_unread(tmp_path):
    header = f'{{"{LAYER}": {tensor()}}}'.ljust(MAX_HEADER_BYTES + 1)
    path = write_raw(tmp_path / "long.safetensors", header)
    assert f"its header is {MAX_HEADER_BYTES + 1:,} bytes; a LoRA's header is at most {MAX_HEADER_BYTES:,}" in refusal(
        path
    )


@pytest.mark.parametrize(
    ("header", "words"),
    [
        ('{"a": "' + '\\"' * 500_000 + "}", "brackets do not match"),  # a string of escaped quotes, unterminated
        (f'{{"{LAYER}": {tensor("[NaN, 4]")}}}', "holds NaN"),
        (f'{{"{LAYER}": {tensor()}, "{LAYER}": {tensor()}}}', "appears twice in one object"),
        ('{"a": {"b": [1, 2}]}', "brackets do not match"),
        (b'{"a\xff": 1}', "not valid UTF-8"),
    ],
)
def test_malformed_headers_are_refused_in_plain_words(tmp_path, header, words):
    assert words in refusal(write_raw(tmp_path / "bad.safetensors", header))


def test_json_kept_in_the_metadata_is_bounded_too(pipe_stack, tmp_path):
    stack, pipe = pipe_stack
    deep = "[" * 50_000 + "]" * 50_000
    path = write_lora(tmp_path / "m.safetensors", lora_weights(pipe, 1), metadata={"lora_adapter_metadata": deep})
    with pytest.raises(LoraError, match="lora_adapter_metadata is refused: it is nested more than 6 levels deep"):
        stack.check(path)
    (tmp_path / "adapter_config.json").write_text('{"lora_alpha": ' + "1" * 5000 + "}")
    plain = write_lora(tmp_path / "p.safetensors", lora_weights(pipe, 1))
    with pytest.raises(
        LoraError,
        match=re.escape("adapter_config.json beside it could not be read (it holds a number 5,000 digits long"),
    ):
        stack.check(plain)


def test_a_list_of_a_million_strings_is_refused_by_its_count():
    raw = b"[" + b",".join([b'""'] * 1_000_000) + b"]"
    limits = bounded_json.JsonLimits(len(raw), 3, 10, 10, 4, 20)
    with pytest.raises(bounded_json.JsonLimitError, match="1,000,000 strings"):
        bounded_json.scan(raw, limits)


@pytest.fixture(scope="module")
def pipe_stack(cache_dir, tmp_path_factory):
    from diffusers import AceStepPipeline

    from tools.tiny_model import ensure_tiny_model

    pipe = AceStepPipeline.from_pretrained(ensure_tiny_model(cache_dir))
    stack = LoraStack(pipe, store_dir=tmp_path_factory.mktemp("store"))
    yield stack, pipe
    stack.clear()


@pytest.mark.parametrize("key", ["**", "*", "/etc/passwd", "../x", "../../**/x", "[0-9a-f]*", "deadbeef*", "~/.ssh"])
def test_lora_keys_that_are_paths_or_patterns_are_refused_by_name(pipe_stack, key):
    stack, pipe = pipe_stack
    stack.add(write_lora(stack.store_dir.parent / "keep" / "k.safetensors", lora_weights(pipe, 3)))
    with pytest.raises(LoraError, match=re.escape(f"no LoRA named or with sha256 {key!r} is loaded or in the store")):
        stack.resolve(key)


@pytest.mark.parametrize("key", ["**", "/etc/passwd", "../../**/x"])
def test_a_request_naming_a_path_or_pattern_is_refused_before_any_model_time(studio, key):
    request = GenerateRequest(prompt="x", audio_duration=10, num_inference_steps=2, loras=f"{key}:1")
    with pytest.raises(ValueError, match=re.escape(f"loras: no LoRA named or with sha256 {key!r} is loaded")):
        studio.generate(request, RunControl())
    assert not list(studio.store.root.glob("*")), "nothing ran"


def test_a_stored_lora_is_still_found_by_its_sha256_prefix(pipe_stack, tmp_path):
    stack, pipe = pipe_stack
    entry = stack.add(write_lora(tmp_path / "s.safetensors", lora_weights(pipe, 4)))
    stack.remove(entry.sha256)  # unloaded from the DiT; its file stays in the store
    assert stack.resolve(entry.sha256[:12].upper()).sha256 == entry.sha256


# ---- a real server: a shape bomb uploaded through the LoRA panel while another client waits


def queue_call(base: str, fn_index: int, data: list) -> dict:
    """One event through the queue as the page calls it (join, then its event stream)."""
    session = uuid.uuid4().hex
    body = {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None}
    httpx.post(f"{base}/gradio_api/queue/join", json=body, timeout=30).raise_for_status()
    with httpx.stream("GET", f"{base}/gradio_api/queue/data", params={"session_hash": session}, timeout=120) as reply:
        for line in reply.iter_lines():
            message = json.loads(line[5:]) if line.startswith("data:") else {}
            if message.get("msg") == "process_completed":
                return message
    raise AssertionError("the event stream ended without a result")


def test_a_shape_bomb_upload_is_refused_while_other_clients_are_answered(tiny_backend, tmp_path):
    studio = Studio(backend=tiny_backend, store=OutputStore(tmp_path / "outputs"), lora_store=tmp_path / "loras")
    port = free_port()
    demo = app.launch(studio, "127.0.0.1", port, preload=False, prevent_thread_lock=True, quiet=True)
    base = f"http://127.0.0.1:{port}"
    try:
        fn_index = next(index for index, fn in demo.fns.items() if fn.name == "add_lora_file")
        bomb = shape_bomb(tmp_path / "bomb.safetensors", 2_000_000)  # 4 MB: over two minutes before the fix
        with bomb.open("rb") as handle:
            uploaded = httpx.post(f"{base}/gradio_api/upload", files={"files": handle}, timeout=60).json()[0]
        file_data = {"path": uploaded, "orig_name": bomb.name, "meta": {"_type": "gradio.FileData"}}
        result: dict = {}
        upload = threading.Thread(target=lambda: result.update(queue_call(base, fn_index, [[file_data], "", None])))
        waits = []
        upload.start()
        while upload.is_alive() or not waits:
            started = time.perf_counter()
            httpx.get(f"{base}/config", timeout=60).raise_for_status()
            waits.append(time.perf_counter() - started)
        upload.join()
    finally:
        demo.close()
    print(f"GET /config during the upload: {len(waits)} answered, the slowest in {max(waits):.3f} s")
    assert max(waits) < 5, "a LoRA check must not stall the server (issue #18 asks for under a second)"
    assert result["success"] is False
    assert f"has 2,000,000 dimensions; a LoRA weight has at most {MAX_DIMS}" in result["output"]["error"]
    assert not (tmp_path / "loras").exists() or not any((tmp_path / "loras").iterdir())
