"""Every NEARDUP_* environment variable, parsed and validated in one place."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from common.config.redis_urls import REDIS_PY_SCHEMES
from common.config.values import distance as _distance
from common.config.values import non_negative_int as _non_negative_int
from common.config.values import positive_float as _positive_float
from common.config.values import positive_int as _positive_int
from common.config.values import preset as _preset
from common.config.values import similarity as _similarity
from common.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"expected one of {sorted(_TRUE | _FALSE - {''})}")


def _data_dir(text: str) -> Path:
    if not text.strip():  # Path("") is the current directory: never what an empty variable meant
        raise ValueError("must not be empty (unset it for the default ./.neardup)")
    return Path(text).expanduser().resolve()


def _paths(text: str) -> tuple[Path, ...]:
    """A JSON list of paths (what to_env writes: a folder name may hold ':'), else ':'-separated."""
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON list of paths: {exc}") from None
        if not isinstance(items, list) or not all(isinstance(p, str) for p in items):
            raise ValueError("must be a JSON list of strings")
    else:
        items = text.split(os.pathsep)
    return tuple(Path(p).expanduser().resolve() for p in items if p.strip())


def _plugin_names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if names:
        from importlib.metadata import entry_points

        from common.signals.plugins import (  # local import: only when plugins are named
            BUILTIN,
            ENTRY_POINT_GROUP,
        )

        known = set(BUILTIN) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"unknown plugin {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return names


def _optional_str(text: str) -> str | None:
    return text.strip() or None


def _redis_url(text: str) -> str | None:
    url = text.strip() or None
    if url is not None and not url.startswith(REDIS_PY_SCHEMES):
        raise ValueError("must start with redis://, rediss:// or unix://")
    return url


def _decode_mode(text: str) -> str:
    mode = text.strip().lower()
    if mode not in ("exact", "draft"):
        raise ValueError("expected exact or draft")
    return mode


def _model_file(text: str) -> Path | None:
    # emb: the learned-embedding model (common/embedding.py); the CLI also loads it once at start.
    if not text.strip():
        return None
    path = Path(text.strip()).expanduser().resolve()
    if not path.is_file():
        raise ValueError("no such file (an ONNX image encoder, e.g. from tools/export_encoder.py)")
    return path


def _canonical(text: str) -> str:
    from common.index.canonical import RULES

    rule = text.strip().lower()
    if rule not in RULES:
        raise ValueError(f"expected one of {', '.join(RULES)}")
    return rule


def _env(name: str, parse: Callable[[str], Any], default: Any, doc: str) -> Any:
    return field(default=default, metadata={"env": name, "parse": parse, "doc": doc})


@dataclass(frozen=True)
class Settings:
    redis_url: str | None = _env(
        "NEARDUP_REDIS_URL",
        _redis_url,
        None,
        "Redis for the index (and broker unless NEARDUP_BROKER_URL is set). Unset: the CLI starts "
        "its own private redis-server and workers (embedded mode).",
    )
    broker_url: str | None = _env(
        "NEARDUP_BROKER_URL",
        _optional_str,
        None,
        "Celery broker URL; default: the index Redis, next database number (results on the one after).",
    )
    data_dir: Path = _env(
        "NEARDUP_DATA_DIR",
        _data_dir,
        Path(".neardup").resolve(),
        "Embedded mode: where the private Redis keeps its AOF index, sockets and logs.",
    )
    workers: int = _env(
        "NEARDUP_WORKERS",
        _positive_int,
        max(1, os.cpu_count() or 1),
        "Worker processes (prefork children): embedded mode and `neardup worker`.",
    )
    preset: str = _env(
        "NEARDUP_PRESET", _preset, "balanced", "Match preset: strict, balanced, loose or original."
    )
    min_similarity: float | None = _env(
        "NEARDUP_MIN_SIMILARITY",
        _similarity,
        None,
        "Override the preset's dHash rule: similarity percent (90 means distance <= 6 of 64).",
    )
    max_distance: int | None = _env(
        "NEARDUP_MAX_DISTANCE", _distance, None, "Override the preset's dHash rule: Hamming distance."
    )
    plugins: tuple[str, ...] = _env(
        "NEARDUP_PLUGINS",
        _plugin_names,
        (),
        "Extra per-product signals (comma-separated plugin names, e.g. garment_hsv): stored at ingest "
        "beside the signatures (they do not decide matches). Changing it needs a re-ingest (--force).",
    )
    allow_private_urls: bool = _env(
        "NEARDUP_ALLOW_PRIVATE_URLS",
        _bool,
        False,
        "Let workers fetch loopback/private/link-local addresses (tests, trusted networks only).",
    )
    file_roots: tuple[Path, ...] = _env(
        "NEARDUP_FILE_ROOTS",
        _paths,
        (),
        f"Folders ('{os.pathsep}'-separated, or a JSON list when a name holds '{os.pathsep}') that workers "
        "may read local images and file:// URLs from.",
    )
    max_download_bytes: int = _env(
        "NEARDUP_MAX_DOWNLOAD_BYTES", _positive_int, 25 * 1024 * 1024, "Largest image download accepted."
    )
    max_image_pixels: int = _env(
        "NEARDUP_MAX_IMAGE_PIXELS", _positive_int, 60_000_000, "Largest decoded image (decompression bombs)."
    )
    max_query_bytes: int = _env(
        "NEARDUP_MAX_QUERY_BYTES", _positive_int, 8 * 1024 * 1024, "Largest image_b64 query, decoded."
    )
    connect_timeout: float = _env(
        "NEARDUP_CONNECT_TIMEOUT", _positive_float, 5.0, "Seconds to connect to an image host."
    )
    read_timeout: float = _env(
        "NEARDUP_READ_TIMEOUT", _positive_float, 15.0, "Seconds without a byte before a download fails."
    )
    download_deadline: float = _env(
        "NEARDUP_DOWNLOAD_DEADLINE", _positive_float, 60.0, "Total seconds one download may take."
    )
    fetch_retries: int = _env(
        "NEARDUP_FETCH_RETRIES", _non_negative_int, 3, "Retries (with backoff) of 429/5xx/connection errors."
    )
    max_redirects: int = _env(
        "NEARDUP_MAX_REDIRECTS", _non_negative_int, 5, "Redirects followed, each re-checked."
    )
    ingest_chunk: int = _env(
        "NEARDUP_INGEST_CHUNK", _positive_int, 16, "Products per ingest task (amortises broker cost)."
    )
    max_deliveries: int = _env(
        "NEARDUP_MAX_DELIVERIES",
        _positive_int,
        3,
        "Deliveries of one task before it is recorded as poison and acknowledged.",
    )
    task_time_limit: int = _env(
        "NEARDUP_TASK_TIME_LIMIT", _positive_int, 600, "Hard time limit per task, seconds."
    )
    fetch_concurrency: int = _env(
        "NEARDUP_FETCH_CONCURRENCY", _positive_int, 16, "Parallel downloads inside one ingest task."
    )
    decode: str = _env(
        "NEARDUP_DECODE",
        _decode_mode,
        "draft",
        "draft: big JPEGs decoded at reduced size (~540 px) and every signal taken from that "
        "(dhash64.work@1), ~40 % cheaper per 800x1000 image, same accuracy on the devset. exact: dHash "
        "from the full-resolution image, bit-identical to imagehash (dhash64@1). Each mode makes its "
        "own index: changing it needs a new index.",
    )
    canonical: str = _env(
        "NEARDUP_CANONICAL",
        _canonical,
        "earliest",
        "Which member of a dedup group is named canonical (the one to keep): earliest (first indexed), "
        "largest (most pixels, then bytes) or smallest-id; ties go to the smallest id.",
    )

    embedding_model: Path | None = _env(  # emb
        "NEARDUP_EMBEDDING_MODEL",
        _model_file,
        None,
        "An ONNX image encoder (needs `pip install .[embeddings]`): a learned embedding of the garment "
        "region at ingest, a candidate source for queries, and a match stage once `neardup calibrate "
        "--write` has set its threshold. Named by the file's sha256: another model needs a new index.",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Parse every NEARDUP_* variable; report all bad values at once."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        problems: list[str] = []
        for f in fields(cls):
            name = f.metadata["env"]
            if name not in environ:
                continue
            try:
                values[f.name] = f.metadata["parse"](environ[name])
            except (ValueError, TypeError) as exc:
                problems.append(f"{name}={environ[name]!r}: {exc}")
        if values.get("min_similarity") is not None and values.get("max_distance") is not None:
            problems.append("NEARDUP_MIN_SIMILARITY and NEARDUP_MAX_DISTANCE: set one, not both")
        if problems:
            raise ConfigError("bad_config", "invalid configuration:\n  " + "\n  ".join(problems))
        return cls(**values)

    @property
    def embedded(self) -> bool:
        return self.redis_url is None

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process."""
        env: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, tuple) and f.name == "plugins":
                value = ",".join(value)
            elif isinstance(value, tuple):  # paths: a list, never joined on a character a path may hold
                value = json.dumps([os.fsdecode(p) for p in value])
            elif isinstance(value, bool):
                value = "1" if value else "0"
            env[f.metadata["env"]] = str(value)
        return env


def documented_variables() -> list[tuple[str, str, str]]:
    """(variable, default, description) rows for the README table."""
    rows = []
    for f in fields(Settings):
        default = f.default
        if isinstance(default, Path):
            default = "./.neardup"
        if f.name == "workers":
            default = "CPU count"
        rows.append((f.metadata["env"], "" if default in (None, ()) else str(default), f.metadata["doc"]))
    return rows
