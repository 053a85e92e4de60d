"""LoRA stacking on the tiny DiT: both key formats, weights, alpha/r, the store, and refusals.

Outputs are compared by running the transformer forward on fixed inputs; one test runs the
whole tiny pipeline. Every test uses its own pipeline instance (module-scoped), never the
session's shared ``tiny_backend``.
"""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from backend import ModelUnavailableError
from lora.check import MAX_RANK, inspect_lora
from lora.header import LoraError, read_safetensors_header
from lora.presets import fetch_preset, load_presets
from lora.stack import LoraStack, prompt_with_triggers

RANK = 4
# A mix of attention (renamed between formats) and MLP layers (same name in both).
MODULES = ("layers.0.self_attn.to_q", "layers.1.cross_attn.to_out.0", "layers.0.mlp.up_proj")
ORIGINAL = {".to_q": ".q_proj", ".to_k": ".k_proj", ".to_v": ".v_proj", ".to_out.0": ".o_proj"}


@pytest.fixture(scope="module")
def pipe(cache_dir):
    from diffusers import AceStepPipeline

    from tools.tiny_model import ensure_tiny_model

    pipeline = AceStepPipeline.from_pretrained(ensure_tiny_model(cache_dir))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture()
def stack(pipe, tmp_path):
    lora_stack = LoraStack(pipe, store_dir=tmp_path / "store")
    yield lora_stack
    lora_stack.clear()
    assert not getattr(pipe.transformer, "peft_config", None), "a test left adapters in the DiT"


@pytest.fixture(scope="module")
def inputs():
    generator = torch.Generator().manual_seed(0)
    return {
        "hidden_states": torch.randn(1, 10, 8, generator=generator),
        "context_latents": torch.randn(1, 10, 16, generator=generator),
        "encoder_hidden_states": torch.randn(1, 6, 32, generator=generator),
        "timestep": torch.tensor([0.5]),
        "timestep_r": torch.tensor([0.5]),
    }


def forward(pipe, inputs) -> torch.Tensor:
    with torch.no_grad():
        return pipe.transformer(**inputs, return_dict=False)[0]


def original_name(module: str) -> str:
    for new, old in ORIGINAL.items():
        if module.endswith(new):
            return module.removesuffix(new) + old
    return module


def lora_weights(pipe, seed: int, rank: int = RANK, modules=MODULES) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Random lora_A/lora_B per module; B is nonzero so the output changes."""
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for module in modules:
        layer = pipe.transformer.get_submodule(module)
        layer = getattr(layer, "base_layer", layer)
        a = torch.randn(rank, layer.in_features, generator=generator) * 0.5
        b = torch.randn(layer.out_features, rank, generator=generator) * 0.5
        weights[module] = (a, b)
    return weights


def write_lora(path, weights, fmt: str = "diffusers", alpha: float | None = None, metadata=None):
    """Save ``weights`` in one of the accepted key formats; ``alpha`` where that format keeps it."""
    tensors, metadata = {}, dict(metadata or {})
    for module, (a, b) in weights.items():
        if fmt == "diffusers":
            tensors[f"transformer.{module}.lora_A.weight"] = a
            tensors[f"transformer.{module}.lora_B.weight"] = b
        elif fmt == "peft":
            tensors[f"base_model.model.{original_name(module)}.lora_A.weight"] = a
            tensors[f"base_model.model.{original_name(module)}.lora_B.weight"] = b
        elif fmt == "kohya":
            flat = "lora_unet_" + original_name(module).replace(".", "_")
            tensors[f"{flat}.lora_down.weight"] = a
            tensors[f"{flat}.lora_up.weight"] = b
            if alpha is not None:
                tensors[f"{flat}.alpha"] = torch.tensor(float(alpha))
    if alpha is not None and fmt == "diffusers":
        metadata["lora_alpha"] = str(alpha)
    if alpha is not None and fmt == "peft":
        config = {"peft_type": "LORA", "r": RANK, "lora_alpha": alpha, "target_modules": ["q_proj", "o_proj"]}
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "adapter_config.json").write_text(json.dumps(config))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata or None)
    return path


def test_both_key_formats_load_onto_the_same_layers(pipe, stack, inputs, tmp_path):
    base = forward(pipe, inputs)
    weights = lora_weights(pipe, seed=1)
    outputs = {}
    for fmt in ("diffusers", "peft", "kohya"):
        entry = stack.add(write_lora(tmp_path / fmt / "style.safetensors", weights, fmt))
        assert (entry.info.key_format, entry.info.rank, entry.info.modules) == (fmt, RANK, len(MODULES))
        assert entry.info.alpha is None
        stack.apply([(entry.sha256, 1.0)])
        outputs[fmt] = forward(pipe, inputs)
    assert not torch.equal(outputs["diffusers"], base)
    # q_proj/o_proj map onto to_q/to_out.0: the same weights give the same output, bit for bit.
    assert torch.equal(outputs["peft"], outputs["diffusers"])
    assert torch.equal(outputs["kohya"], outputs["diffusers"])


def test_stacked_weights_change_the_output_and_zero_or_empty_is_exact(pipe, stack, inputs, tmp_path):
    base = forward(pipe, inputs)
    first = stack.add(write_lora(tmp_path / "a.safetensors", lora_weights(pipe, seed=1)), trigger_words=["erhu"])
    second = stack.add(write_lora(tmp_path / "b.safetensors", lora_weights(pipe, seed=2), "peft"))
    assert torch.equal(forward(pipe, inputs), base), "adding a LoRA must not activate it"

    stack.apply([("a", 1.0)])
    only_first = forward(pipe, inputs)
    stack.apply([("a", 1.0), (second.sha256[:12], 0.7)])
    both = forward(pipe, inputs)
    assert not torch.equal(both, base) and not torch.equal(both, only_first)
    assert stack.describe() == [
        {"name": "a", "sha256": first.sha256, "weight": 1.0, "trigger_words": ["erhu"]},
        {"name": "b", "sha256": second.sha256, "weight": 0.7, "trigger_words": []},
    ]
    stack.apply([("a", 0.5)])
    half = forward(pipe, inputs)
    assert not torch.equal(half, only_first) and not torch.equal(half, base)

    stack.apply([("a", 0), ("b", 0.0)])
    assert torch.equal(forward(pipe, inputs), base)
    stack.apply([("a", 1.0), ("b", 0.7)])
    assert torch.equal(forward(pipe, inputs), both), "adapters stay loaded; re-applying gives the same output"
    stack.apply([])
    assert torch.equal(forward(pipe, inputs), base)
    stack.apply([("b", 1.0)])
    stack.clear()
    assert torch.equal(forward(pipe, inputs), base)


@pytest.mark.parametrize(
    ("weight", "message"),
    [(2.5, "from 0 to 2"), (-0.1, "from 0 to 2"), (float("nan"), "from 0 to 2"), ("loud", "must be a number")],
)
def test_weights_outside_0_to_2_are_refused(pipe, stack, tmp_path, weight, message):
    stack.add(write_lora(tmp_path / "a.safetensors", lora_weights(pipe, seed=1)))
    with pytest.raises(LoraError, match=message):
        stack.apply([("a", weight)])


def test_unknown_or_repeated_stack_entries_are_refused(pipe, stack, tmp_path):
    stack.add(write_lora(tmp_path / "a.safetensors", lora_weights(pipe, seed=1)))
    with pytest.raises(LoraError, match="'nope' is not loaded"):
        stack.apply([("nope", 1.0)])
    with pytest.raises(LoraError, match="listed twice"):
        stack.apply([("a", 1.0), ("a", 0.5)])


@pytest.mark.parametrize("fmt", ["diffusers", "peft", "kohya"])
def test_alpha_over_rank_is_applied(pipe, stack, inputs, tmp_path, fmt):
    """alpha = r/2 gives exactly the output of the same adapter with lora_B halved and no alpha."""
    base = forward(pipe, inputs)
    weights = lora_weights(pipe, seed=3)
    halved = {module: (a, b * 0.5) for module, (a, b) in weights.items()}
    with_alpha = stack.add(write_lora(tmp_path / "alpha" / "adapter_model.safetensors", weights, fmt, alpha=RANK / 2))
    plain = stack.add(write_lora(tmp_path / "plain" / "halved.safetensors", halved, fmt))
    assert with_alpha.info.alpha == RANK / 2 and plain.info.alpha is None
    assert set(with_alpha.info.scales.values()) == {0.5} and set(plain.info.scales.values()) == {1.0}

    stack.apply([(with_alpha.sha256, 1.0)])
    scaled = forward(pipe, inputs)
    stack.apply([(plain.sha256, 1.0)])
    assert torch.equal(scaled, forward(pipe, inputs))
    assert not torch.equal(scaled, base)


def test_alpha_equal_to_rank_is_scale_one(pipe, tmp_path):
    path = write_lora(tmp_path / "full.safetensors", lora_weights(pipe, seed=3), "kohya", alpha=RANK)
    info = inspect_lora(path, pipe.transformer)
    assert info.alpha == RANK and set(info.scales.values()) == {1.0}


def test_the_same_file_with_another_alpha_is_refused(pipe, stack, tmp_path):
    weights = lora_weights(pipe, seed=3)
    stack.add(write_lora(tmp_path / "a" / "adapter_model.safetensors", weights, "peft", alpha=RANK / 2))
    with pytest.raises(LoraError, match="already loaded with another alpha"):
        stack.add(write_lora(tmp_path / "b" / "adapter_model.safetensors", weights, "peft", alpha=RANK))


def test_alpha_from_the_peft_config_survives_restore(pipe, stack, inputs, tmp_path):
    """The store keeps the adapter_config.json alpha, so a restored stack sounds the same."""
    entry = stack.add(write_lora(tmp_path / "peft" / "adapter_model.safetensors", lora_weights(pipe, 4), "peft", 2.0))
    stack.apply([(entry.name, 1.2)])
    before, saved = forward(pipe, inputs), stack.describe()
    stack.clear()
    (tmp_path / "peft" / "adapter_model.safetensors").unlink()  # only the store copy is left

    restored = LoraStack(pipe, store_dir=stack.store_dir)
    try:
        restored.restore(saved)
        assert restored.describe() == saved
        assert torch.equal(forward(pipe, inputs), before)
    finally:
        restored.clear()


def test_restore_refuses_what_the_store_lacks(stack):
    with pytest.raises(LoraError, match="is not in the LoRA store"):
        stack.restore([{"name": "gone", "sha256": "ab" * 32, "weight": 1.0, "trigger_words": []}])
    with pytest.raises(LoraError, match="no valid sha256"):
        stack.restore([{"name": "broken", "sha256": "xyz", "weight": 1.0}])


def test_same_content_loads_once(pipe, stack, tmp_path):
    weights = lora_weights(pipe, seed=5)
    first = stack.add(write_lora(tmp_path / "one" / "style.safetensors", weights))
    again = stack.add(tmp_path / "one" / "style.safetensors")
    copy = tmp_path / "two" / "other-name.safetensors"
    copy.parent.mkdir()
    copy.write_bytes((tmp_path / "one" / "style.safetensors").read_bytes())
    third = stack.add(copy)
    assert first is again is third
    assert len(stack.entries) == 1
    assert list(pipe.transformer.peft_config) == [first.adapter_name]
    assert len(list(stack.store_dir.glob("*.safetensors"))) == 1


def test_same_name_different_content_keeps_both(pipe, stack, inputs, tmp_path):
    one = stack.add(write_lora(tmp_path / "one" / "style.safetensors", lora_weights(pipe, seed=6)))
    two = stack.add(write_lora(tmp_path / "two" / "style.safetensors", lora_weights(pipe, seed=7)))
    assert one.sha256 != two.sha256 and one.name != two.name
    assert sorted(p.name for p in stack.store_dir.glob("*.safetensors")) == sorted(
        f"{e.sha256[:16]}-style.safetensors" for e in (one, two)
    )
    stack.apply([(one.sha256, 1.0)])
    out_one = forward(pipe, inputs)
    stack.apply([(two.name, 1.0)])
    assert not torch.equal(forward(pipe, inputs), out_one)


def write_header(path, header: dict, data: bytes = b"") -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def bad_files(pipe, tmp_path):
    """Each bad file, and the words its refusal must contain."""
    good = write_lora(tmp_path / "good.safetensors", lora_weights(pipe, seed=8))
    torch.save({"transformer.x.lora_A.weight": torch.zeros(2, 2)}, tmp_path / "model.bin")
    torch.save({"w": torch.zeros(2)}, tmp_path / "zip.safetensors")
    torch.save({"w": torch.zeros(2)}, tmp_path / "pickle.safetensors", _use_new_zipfile_serialization=False)
    layer = "layers.0.self_attn.to_q"
    wrong = {layer: (torch.randn(RANK, 48), torch.randn(32, RANK))}
    write_lora(tmp_path / "shapes.safetensors", wrong)
    write_lora(tmp_path / "rank512.safetensors", lora_weights(pipe, seed=9, rank=512, modules=[layer]))
    raw = good.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    (tmp_path / "truncated.safetensors").write_bytes(raw[: 8 + header_len // 2])
    huge = {"dtype": "F32", "shape": [32768, 16384], "data_offsets": [0, 2 * 1024**3]}
    write_header(tmp_path / "huge.safetensors", {"transformer.layers.0.self_attn.to_q.lora_A.weight": huge})
    write_header(
        tmp_path / "int.safetensors", {"x.lora_A.weight": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}}
    )
    sdxl = "lora_unet_down_blocks_0_attentions_0_proj_in"
    sdxl_weights = {f"{sdxl}.lora_down.weight": torch.zeros(4, 320), f"{sdxl}.lora_up.weight": torch.zeros(320, 4)}
    save_file(sdxl_weights, str(tmp_path / "sdxl.safetensors"))
    save_file({"layers.0.self_attn.to_q.weight": torch.zeros(32, 32)}, str(tmp_path / "full.safetensors"))
    (tmp_path / "empty.safetensors").write_bytes(b"")
    return {
        "model.bin": "pickled files can run code; only .safetensors is accepted",
        "zip.safetensors": "pickle/zip file renamed to .safetensors",
        "pickle.safetensors": "pickle/zip file renamed to .safetensors",
        "shapes.safetensors": f"wrong shapes for layer '{layer}'",
        "rank512.safetensors": f"rank 512 at layer '{layer}' is above the limit of {MAX_RANK}",
        "truncated.safetensors": "header is truncated",
        "huge.safetensors": "claims 2.0 GB of weights; the limit is 1.0 GB",
        "int.safetensors": "dtype I64",
        "sdxl.safetensors": "files for another model",
        "full.safetensors": "not a LoRA weight",
        "empty.safetensors": "empty",
    }


def test_bad_files_are_refused_each_with_its_reason(pipe, stack, tmp_path):
    for name, message in bad_files(pipe, tmp_path).items():
        with pytest.raises(LoraError, match=message.replace("(", r"\(").replace(".", r"\.")):
            stack.add(tmp_path / name)
    assert stack.entries == [] and not list(stack.store_dir.glob("*.safetensors"))
    assert not getattr(pipe.transformer, "peft_config", None)


def test_a_header_whose_length_looks_like_a_pickle_is_still_read(tmp_path):
    """640 = 0x280: the file starts with b"\\x80\\x02", like a pickle, yet is a real safetensors file."""
    tensor = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    raw = json.dumps({"x.lora_A.weight": tensor}).encode().ljust(640)
    path = tmp_path / "padded.safetensors"
    path.write_bytes(struct.pack("<Q", 640) + raw + b"\0" * 4)
    assert path.read_bytes()[:2] == b"\x80\x02"
    tensors, metadata = read_safetensors_header(path)
    assert list(tensors) == ["x.lora_A.weight"] and metadata == {}


def test_inspect_reads_alpha_and_triggers_from_metadata(pipe, tmp_path):
    path = write_lora(
        tmp_path / "meta.safetensors", lora_weights(pipe, 10), alpha=8, metadata={"trigger_words": "erhu, dizi"}
    )
    info = inspect_lora(path, pipe.transformer)
    assert (info.alpha, info.rank, info.modules, info.trigger_words) == (8.0, RANK, 3, ("erhu", "dizi"))
    assert info.size_bytes == path.stat().st_size and len(info.sha256) == 64


def test_prompt_with_triggers_appends_missing_words():
    stack = [
        {"name": "a", "weight": 1.0, "trigger_words": ["erhu", "Festive"]},
        {"name": "b", "weight": 0.0, "trigger_words": ["off"]},
    ]
    assert prompt_with_triggers("festive folk pop", stack) == "festive folk pop, erhu"
    assert prompt_with_triggers("", stack) == "erhu, Festive"
    assert prompt_with_triggers("erhu and festive", stack) == "erhu and festive"


def test_the_whole_pipeline_runs_with_a_stack_and_without(pipe, stack, tmp_path):
    def run() -> torch.Tensor:
        generator = torch.Generator("cpu").manual_seed(11)
        kwargs = {"prompt": "test song", "lyrics": "[verse]\nla la", "audio_duration": 2.0, "shift": 3.0}
        return pipe(**kwargs, num_inference_steps=2, generator=generator, output_type="pt").audios

    base = run()
    entry = stack.add(write_lora(tmp_path / "a.safetensors", lora_weights(pipe, seed=12)))
    stack.apply([(entry.name, 1.5)])
    assert not torch.equal(run(), base)
    stack.apply([])
    assert torch.equal(run(), base)


def test_the_presets_manifest_parses():
    presets = load_presets()
    for preset in presets:
        assert preset.file.endswith(".safetensors") and "/" in preset.repo_id
        assert 0 <= preset.weight <= 2 and preset.base_models


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"weight": 3}, "from 0 to 2"),
        ({"repo_id": "not a repo"}, "owner/name"),
        ({"file": "model.ckpt"}, "ending in .safetensors"),
        ({"base_models": ["sdxl"]}, "base_models"),
        ({"colour": "red"}, "unknown"),
    ],
)
def test_bad_presets_are_refused(tmp_path, change, message):
    preset = {"name": "x", "repo_id": "o/n", "file": "a.safetensors", "trigger_words": [], "weight": 1.0}
    manifest = tmp_path / "loras.json"
    manifest.write_text(json.dumps([{**preset, "base_models": ["turbo"], **change}]))
    with pytest.raises(ValueError, match=message):
        load_presets(manifest)


def test_fetching_a_preset_offline_says_so(tmp_path):
    preset = load_presets()[0]
    progress: list[str] = []
    with pytest.raises(ModelUnavailableError, match="could not be downloaded"):
        fetch_preset(preset.name, lambda f, m: progress.append(m), cache_dir=tmp_path)
    assert progress and progress[0].startswith("Downloading LoRA")
    with pytest.raises(LoraError, match="no preset named"):
        fetch_preset("nonexistent", cache_dir=tmp_path)
