from __future__ import annotations

import pytest

from checkpoints import REGISTRY, SAMPLER_DEFAULTS, default_model_name, resolve_model


def test_registry_names_resolve_to_their_repos():
    for name, entry in REGISTRY.items():
        spec = resolve_model(name)
        assert spec.source == entry.repo_id
        assert spec.variant == entry.variant
        assert spec.checkpoint is entry
        assert not spec.is_local


def test_default_is_a_confirmed_checkpoint(monkeypatch):
    monkeypatch.delenv("ACE_STUDIO_MODEL", raising=False)
    name = default_model_name()
    assert REGISTRY[name].confirmed
    assert resolve_model(None).label == name


def test_env_var_chooses_the_model(monkeypatch):
    monkeypatch.setenv("ACE_STUDIO_MODEL", "base")
    assert resolve_model(None).label == "base"


def test_hub_repo_id_and_local_dir(tmp_path):
    spec = resolve_model("someone/my-acestep-turbo-finetune")
    assert spec.source == "someone/my-acestep-turbo-finetune" and spec.variant == "turbo" and not spec.is_local
    folder = tmp_path / "acestep-v15-base-local"
    folder.mkdir()
    local = resolve_model(str(folder))
    assert local.is_local and local.source == str(folder.resolve()) and local.variant == "base"


def test_tiny_is_local_and_marked(tmp_path):
    spec = resolve_model("tiny", cache_dir=tmp_path)
    assert spec.is_tiny and spec.is_local and spec.source.startswith(str(tmp_path))


@pytest.mark.parametrize("bad", ["not-a-model", "a/b/c", "./missing-folder"])
def test_unknown_model_is_refused_with_the_choices(bad):
    with pytest.raises(ValueError, match="not a registry name"):
        resolve_model(bad)


def test_sampler_defaults_follow_the_official_guide():
    turbo, sft, base = (SAMPLER_DEFAULTS[v] for v in ("turbo", "sft", "base"))
    assert (turbo.num_inference_steps, turbo.guidance_scale, turbo.shift) == (
        8,
        1.0,
        3.0,
    )
    assert sft.num_inference_steps == 50 and sft.guidance_scale > 1.0
    assert base.guidance_scale > 1.0
