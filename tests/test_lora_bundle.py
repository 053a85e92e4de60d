"""An official LoRA handed over as PEFT saved it: the pair, a zip of the folder, or alpha typed by hand."""

from __future__ import annotations

import copy
import shutil
import zipfile

import pytest
import torch

from lora.bundle import MAX_ZIP_MEMBERS, read_upload
from lora.header import LoraError
from tests.test_lora_stack import forward, inputs, pipe, stack  # noqa: F401  (fixtures)
from ui.lora_panel import added_note

R, ALPHA = 4, 8


@pytest.fixture(scope="module")
def peft_folder(pipe, tmp_path_factory):  # noqa: F811
    """A tiny PEFT LoRA (r=4, alpha=8) on a copy of the tiny DiT, saved with save_pretrained; and
    the DiT's output change PEFT itself makes with it. Made once, before any stack touches the DiT."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=R, lora_alpha=ALPHA, target_modules=["to_q", "to_v", "up_proj"], init_lora_weights=False)
    model = get_peft_model(copy.deepcopy(pipe.transformer), config)
    folder = tmp_path_factory.mktemp("peft") / "official-lora"
    model.save_pretrained(folder)
    assert {p.name for p in folder.iterdir()} >= {"adapter_model.safetensors", "adapter_config.json"}
    return folder, model


def peft_delta(pipe, model, inputs) -> torch.Tensor:  # noqa: F811
    with torch.no_grad():
        with_lora = model.base_model.model(**inputs, return_dict=False)[0]
    return with_lora - forward(pipe, inputs)


def stacked_delta(pipe, stack, entry, inputs) -> torch.Tensor:  # noqa: F811
    stack.apply([(entry.sha256, 1.0)])
    out = forward(pipe, inputs)
    stack.apply([])
    return out - forward(pipe, inputs)


def test_the_pair_plays_at_alpha_over_r_like_peft_itself(peft_folder, pipe, stack, inputs):  # noqa: F811
    folder, model = peft_folder
    upload = read_upload([folder / "adapter_model.safetensors", folder / "adapter_config.json"])
    entry = stack.add(upload.weights, adapter_config=upload.adapter_config)
    assert entry.info.alpha == ALPHA and entry.info.rank == R
    assert torch.allclose(stacked_delta(pipe, stack, entry, inputs), peft_delta(pipe, model, inputs), atol=1e-5)
    assert "plays at 2x, as trained" in added_note(entry)


def test_a_zip_of_the_folder_plays_the_same(peft_folder, pipe, stack, inputs, tmp_path):  # noqa: F811
    folder, model = peft_folder
    archive = shutil.make_archive(str(tmp_path / "lora"), "zip", root_dir=folder.parent, base_dir=folder.name)
    upload = read_upload([archive], workdir=tmp_path / "unzipped")
    entry = stack.add(upload.weights, adapter_config=upload.adapter_config)
    assert torch.allclose(stacked_delta(pipe, stack, entry, inputs), peft_delta(pipe, model, inputs), atol=1e-5)


def test_alone_its_alpha_is_unknown_and_typing_it_restores_the_strength(
    peft_folder,
    pipe,  # noqa: F811
    stack,  # noqa: F811
    inputs,  # noqa: F811
    tmp_path,
):
    folder, model = peft_folder
    lone = tmp_path / "lone" / "official.safetensors"
    lone.parent.mkdir()
    shutil.copy(folder / "adapter_model.safetensors", lone)
    entry = stack.add(read_upload([lone]).weights)
    assert entry.info.alpha is None
    assert "alpha is unknown, so 1 is assumed" in added_note(entry)
    half = stacked_delta(pipe, stack, entry, inputs)
    stack.remove(entry.sha256)
    typed = read_upload([lone], alpha=ALPHA)
    entry = stack.add(typed.weights, adapter_config=typed.adapter_config)
    assert torch.allclose(stacked_delta(pipe, stack, entry, inputs), peft_delta(pipe, model, inputs), atol=1e-5)
    assert not torch.allclose(half, peft_delta(pipe, model, inputs), atol=1e-3)  # alone it played at 1x, not 2x


def _zip(path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"README.md": b"x"}, "holds no adapter_model.safetensors"),
        ({"adapter_model.safetensors": b"\0" * 10_000_000}, "compressed 100x or more"),
        ({f"f{i}.txt": b"" for i in range(MAX_ZIP_MEMBERS + 1)}, "files; a saved LoRA folder holds a few"),
        ({"a/adapter_model.safetensors": b"1", "b/adapter_model.safetensors": b"2"}, "2 times"),
    ],
)
def test_bad_zips_are_refused_in_words(tmp_path, members, message):
    with pytest.raises(LoraError, match=message):
        read_upload([_zip(tmp_path / "lora.zip", members)], workdir=tmp_path / "out")
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()


@pytest.mark.parametrize(
    ("files", "alpha", "message"),
    [
        (["a.safetensors", "b.safetensors"], None, "one .safetensors file"),
        (["a.bin"], None, "upload a .safetensors file"),
        (["a.safetensors"], -1.0, "lora_alpha: must be a number above 0"),
        (["a.safetensors"], float("nan"), "lora_alpha"),
    ],
)
def test_uploads_that_are_no_lora_are_refused(tmp_path, files, alpha, message):
    with pytest.raises(LoraError, match=message):
        read_upload([tmp_path / name for name in files], alpha=alpha)


def test_a_config_that_is_not_json_is_refused(tmp_path):
    config = tmp_path / "adapter_config.json"
    config.write_bytes(b"[" * 100)
    with pytest.raises(LoraError, match=r"adapter_config\.json"):
        read_upload([tmp_path / "a.safetensors", config])
