"""Tokenizers: a byte-level BPE trained on the train split (cached), characters, or any HF one.

Every tokenizer has `name` (a stable identity string, used in cache keys), `vocab_size`
(the embedding rows it needs), `encode(text) -> np.ndarray` and `decode(ids) -> str`.

A Hugging Face tokenizer is never downloaded: a name such as `"gpt2"` is looked up as the
folder `$LAYER_TYING_TOKENIZERS/<name>` first, then in the local Hugging Face cache
(`local_files_only=True`); a folder path is loaded as it is (see `HFTokenizer.load`).

A trained BPE is cached as `tokenizers/NAME.json` with its manifest `tokenizers/NAME.manifest`
(see `tying_env.files.write_manifest`); a damaged one is retrained with a warning.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from tying_env.errors import SettingError
from tying_env.files import check_manifest, warn_rebuilt, write_bytes, write_manifest

BPE_FORMAT_VERSION = 1
EOT = "<|endoftext|>"
TOKENIZER_CHOICES = '"bpe", "char", a local tokenizer folder, or a cached hub name'
TOKENIZERS_ENV = "LAYER_TYING_TOKENIZERS"  # a folder of tokenizer folders, by name
_BATCH_LINES = 8192  # lines per batch-encode call


class Tokenizer(Protocol):
    name: str
    vocab_size: int

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids: Sequence[int] | np.ndarray) -> str: ...


def text_lines(text: str) -> list[str]:
    """Split on "\\n" only, keeping the newline on each line (joins back to `text`)."""
    lines = text.split("\n")
    out = [line + "\n" for line in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1])
    return out


def _batches(lines: list[str], size: int = _BATCH_LINES) -> Iterator[list[str]]:
    for i in range(0, len(lines), size):
        yield lines[i : i + size]


def _concat(chunks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class BPETokenizer:
    """Byte-level BPE (GPT-2 style pre-tokenisation) from the `tokenizers` library."""

    def __init__(self, tok, name: str) -> None:  # tok: tokenizers.Tokenizer
        self.tok = tok
        self.name = name
        self.vocab_size = tok.get_vocab_size()

    @classmethod
    def train(
        cls, train_text: str, vocab_size: int, cache_dir: str | Path | None = None
    ) -> BPETokenizer:
        """Train on `train_text`, or load the tokenizer cached for this text and settings."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if vocab_size < 257:
            raise SettingError("vocab_size", f"vocab_size={vocab_size} is too small for "
                                             "byte-level BPE (need >= 257)")
        settings = f"bpe|v{BPE_FORMAT_VERSION}|vocab={vocab_size}|special={EOT}"
        key = hashlib.sha256((settings + "|" + sha256_text(train_text)).encode()).hexdigest()
        name = f"bpe-v{BPE_FORMAT_VERSION}-{vocab_size}-{key[:16]}"
        path = Path(cache_dir) / "tokenizers" / f"{name}.json" if cache_dir is not None else None
        if path is not None:
            cached = cls._from_cache(path, name)
            if cached is not None:
                return cached

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(_batches(text_lines(train_text)), trainer=trainer)
        if path is not None:
            write_bytes(path, tok.to_str().encode("utf-8"))
            write_manifest(_manifest_path(path), [path.name])  # last: the entry is complete
        return cls(tok, name)

    @classmethod
    def _from_cache(cls, path: Path, name: str) -> BPETokenizer | None:
        """The tokenizer cached in `path`, or None (with a warning if it is damaged)."""
        from tokenizers import Tokenizer

        manifest = _manifest_path(path)
        if not path.exists() and not manifest.exists():
            return None
        problems = check_manifest(manifest, [path.name])
        if not problems:
            try:
                return cls(Tokenizer.from_file(str(path)), name)
            except Exception as e:  # `tokenizers` raises a bare Exception on bad JSON
                problems = [f"{path} does not load ({type(e).__name__}: {e})"]
        warn_rebuilt(path, problems)
        return None

    def encode(self, text: str) -> np.ndarray:
        # encode_batch_fast (tokenizers >= 0.21) skips computing offsets
        encode_batch = getattr(self.tok, "encode_batch_fast", self.tok.encode_batch)
        chunks = []
        for batch in _batches(text_lines(text)):
            enc = encode_batch(batch, add_special_tokens=False)
            chunks.extend(np.asarray(e.ids, dtype=np.int64) for e in enc)
        return _concat(chunks)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)


def _manifest_path(path: Path) -> Path:
    """The manifest of the cached tokenizer `path`: `NAME.manifest` beside `NAME.json`."""
    return path.with_suffix(".manifest")


class CharTokenizer:
    """One id per distinct character of the training text (sorted), plus a last `<unk>` id."""

    def __init__(self, chars: str) -> None:
        self.chars = "".join(sorted(set(chars)))
        self._codes = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        self.unk_id = len(self.chars)
        self.vocab_size = len(self.chars) + 1
        self.name = f"char-{sha256_text(self.chars)[:16]}"

    @classmethod
    def train(cls, train_text: str) -> CharTokenizer:
        return cls("".join(set(train_text)))

    def encode(self, text: str) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        if len(self._codes) == 0:
            return np.full(len(codes), self.unk_id, dtype=np.int64)
        idx = np.searchsorted(self._codes, codes)
        idx_c = np.minimum(idx, len(self._codes) - 1)
        known = self._codes[idx_c] == codes
        return np.where(known, idx_c, self.unk_id).astype(np.int64)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return "".join(self.chars[i] if i < self.unk_id else "\ufffd" for i in map(int, ids))


class HFTokenizer:
    """A `transformers` tokenizer loaded offline from a local folder or the HF cache."""

    def __init__(self, tok, name: str) -> None:  # tok: transformers.PreTrainedTokenizerBase
        self.tok = tok
        self.name = name
        self.vocab_size = len(tok)

    @classmethod
    def load(cls, name_or_path: str) -> HFTokenizer:
        """A folder path as it is; a name from `$LAYER_TYING_TOKENIZERS/<name>`, else from
        the local Hugging Face cache. Nothing is downloaded."""
        from transformers import AutoTokenizer

        path = local_tokenizer_folder(name_or_path)
        try:
            tok = AutoTokenizer.from_pretrained(str(path) if path is not None else name_or_path,
                                                local_files_only=True)
        except Exception as e:
            raise SettingError(
                "tokenizer",
                f"tokenizer={name_or_path!r} is not a known kind, a local tokenizer folder or a "
                f"tokenizer in the local Hugging Face cache ({type(e).__name__}: {e}). "
                f"Allowed: {TOKENIZER_CHOICES}. This package never downloads a tokenizer: "
                "save it once where the network is reachable, e.g. `python -c \"from "
                f"transformers import AutoTokenizer; AutoTokenizer.from_pretrained("
                f"'{name_or_path}').save_pretrained('tokenizers/{name_or_path}')\"`, then pass "
                f"tokenizer='tokenizers/{name_or_path}' or set {TOKENIZERS_ENV}=tokenizers"
            ) from e
        if path is not None:  # identity of a folder = its path and the bytes of its files
            h = hashlib.sha256()
            for f in sorted(p for p in path.iterdir() if p.is_file()):
                h.update(f.name.encode() + b"\0" + f.read_bytes())
            ident = f"hf-dir:{path.resolve()}#{h.hexdigest()[:16]}"
        else:
            ident = f"hf:{name_or_path}"
        return cls(tok, ident)

    def encode(self, text: str) -> np.ndarray:
        chunks = []
        for batch in _batches(text_lines(text)):
            ids = self.tok(batch, add_special_tokens=False)["input_ids"]
            chunks.extend(np.asarray(i, dtype=np.int64) for i in ids)
        return _concat(chunks)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self.tok.decode([int(i) for i in ids])


def local_tokenizer_folder(name_or_path: str) -> Path | None:
    """The folder `name_or_path` names: itself if it is one, else
    `$LAYER_TYING_TOKENIZERS/<name>` if that is one, else None (a hub name)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    root = os.environ.get(TOKENIZERS_ENV)
    if root and not path.is_absolute() and ".." not in path.parts:
        candidate = Path(root).expanduser() / name_or_path
        if candidate.is_dir():
            return candidate
    return None


def build_tokenizer(
    kind: str, train_text: str, *, vocab_size: int = 8192, cache_dir: str | Path | None = None
) -> Tokenizer:
    """"bpe" (trained on `train_text`, cached under `cache_dir`), "char", or an HF tokenizer."""
    if not isinstance(kind, str) or not kind:
        raise SettingError("tokenizer", f"tokenizer={kind!r} is not allowed; use "
                                        f"{TOKENIZER_CHOICES}")
    if kind == "bpe":
        return BPETokenizer.train(train_text, vocab_size, cache_dir)
    if kind == "char":
        return CharTokenizer.train(train_text)
    return HFTokenizer.load(kind)
