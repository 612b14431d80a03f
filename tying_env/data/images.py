"""Image corpora for the ViT environments: three splits of rows, offline by default.

An `ImageSet` holds each split as one uint8 array of rows `[N, C*H*W + 1]`: the pixels of an
image in (C, H, W) order, flattened, then its class label as the *last* column. One row per
example means training code samples random rows, evenly spread rows or all rows of a split
just as it samples windows of tokens from a `Corpus`, with the target in the last column;
`unpack` turns rows into float images in [0, 1] and int64 labels. Labels are uint8, so a set
has at most 256 classes.

Datasets (`IMAGE_DATASETS`):

- "digits" (the default small corpus): scikit-learn's bundled handwritten digits, 1,797
  grayscale images of 8x8 pixels, shipped inside the package (no download). Pixel values
  0..16 become `round(v * 255 / 16)`. The split is fixed (seed `DIGITS_SPLIT_SEED`, unrelated
  to any env seed) and stratified by class, about 70% / 15% / 15% of each class:
  1,259 train, 269 valid and 269 test rows (`DIGITS_SPLIT_ROWS`).
- "image-folder": a local folder `data_dir` with `train/`, `valid/` and `test/`, each holding
  one sub-folder of images per class (`<split>/<class>/<image files>`), read with Pillow.
  Nothing is resized: every image must have the size of the first training image.
- "cifar10": CIFAR-10 through HF `datasets` (when the hub is reachable or the dataset is in
  the local HF cache): HF train's first 45,000 rows are the train split, its last 5,000 the
  valid split, HF test the test split. The three arrays are cached as .npy files under
  `<cache_dir>/images/cifar10-v1/` (written atomically, with a `manifest.json` written last,
  see `tying_env.files`) and read back memory-mapped; a damaged entry is rebuilt with a
  warning.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from tying_env.data.corpus import (
    MANIFEST_NAME,
    SPLITS,
    _env_offline,
    _forced_offline,
    _hub_reachable,
    default_cache_dir,
    unavailable_reason,
)
from tying_env.errors import DataUnavailableError, MissingDataError, SettingError
from tying_env.files import check_manifest, warn_rebuilt, write_bytes, write_manifest

IMAGE_DATASETS = ("digits", "image-folder", "cifar10")
MAX_CLASSES = 256  # labels are stored as uint8

DIGITS_SPLIT_SEED = 1797  # fixed: the digits split never depends on an env seed
DIGITS_VALID_FRACTION = 0.15  # of each class, rounded; the test split gets as many
DIGITS_SPLIT_ROWS = {"train": 1259, "valid": 269, "test": 269}  # what the split gives

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
CIFAR10_SHAPE = (3, 32, 32)
CIFAR10_VALID_ROWS = 5_000  # the last rows of HF train
CIFAR10_CACHE_NAME = "cifar10-v1"  # bump when the cached arrays change meaning


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Three splits of image rows (see the module docstring) and what is needed to read them.

    `vocab_size` equals `n_classes`, so code that sizes its output layer by `vocab_size`
    works for images as it does for token corpora.
    """

    name: str  # one of IMAGE_DATASETS
    train: np.ndarray  # uint8 rows [N, C*H*W + 1]: pixels in (C, H, W) order, then the label
    valid: np.ndarray
    test: np.ndarray
    channels: int
    height: int
    width: int
    class_names: tuple[str, ...]
    source: None = None  # no generating source (a `Corpus` may have one); always None

    def __post_init__(self) -> None:
        columns = self.channels * self.height * self.width + 1
        for split in SPLITS:
            rows = getattr(self, split)
            if rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != columns:
                raise ValueError(
                    f"{split} rows of image set {self.name!r} must be uint8 [N, {columns}] "
                    f"(C*H*W + 1 for {self.channels}x{self.height}x{self.width}), "
                    f"got {rows.dtype} {list(rows.shape)}"
                )

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def vocab_size(self) -> int:
        """The number of classes (the output layer's width), as `Corpus.vocab_size` is."""
        return self.n_classes

    @cached_property
    def identity(self) -> dict[str, Any]:
        """What identifies the data: name, shape [C, H, W], class names, rows and a sha256."""
        digest = hashlib.sha256()
        for split in (self.train, self.valid, self.test):
            step = max(1, (1 << 24) // split.shape[1])  # about 16 MiB at a time
            for start in range(0, len(split), step):
                digest.update(np.ascontiguousarray(split[start:start + step]).tobytes())
        return dict(name=self.name, shape=[self.channels, self.height, self.width],
                    class_names=list(self.class_names),
                    rows=[len(self.train), len(self.valid), len(self.test)],
                    sha256=digest.hexdigest())

    def unpack(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`unpack(rows, ...)` with this set's shape."""
        return unpack(rows, self.channels, self.height, self.width)


def unpack(
    rows: np.ndarray, channels: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows `[n, C*H*W + 1]` as (images float32 `[n, C, H, W]` in [0, 1], labels int64 `[n]`)."""
    rows = np.asarray(rows)
    columns = channels * height * width + 1
    if rows.ndim != 2 or rows.shape[1] != columns:
        raise ValueError(f"expected rows of shape [n, {columns}] for {channels}x{height}x{width} "
                         f"images, got {list(rows.shape)}")
    images = rows[:, :-1].astype(np.float32).reshape(len(rows), channels, height, width)
    images /= 255.0
    return images, rows[:, -1].astype(np.int64)


def load_images(
    dataset: str,
    *,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> ImageSet:
    """Load one of `IMAGE_DATASETS` (see the module docstring).

    `data_dir` is the folder of "image-folder" (and only of it); `cache_dir` (default
    `tying_env.data.corpus.default_cache_dir()`) is used by "cifar10" only.
    """
    if not isinstance(dataset, str) or dataset not in IMAGE_DATASETS:
        raise SettingError("dataset", f"dataset={dataset!r} is unknown for images; allowed: "
                                      f"{', '.join(IMAGE_DATASETS)}")
    if dataset == "image-folder":
        if data_dir is None:
            raise SettingError(
                "dataset",
                "dataset='image-folder' needs data_dir=FOLDER holding train/, valid/ and test/, "
                "each with one sub-folder of images per class"
            )
        return load_image_folder(data_dir)
    if data_dir is not None:
        raise SettingError("data_dir", f"data_dir={str(data_dir)!r} cannot be used with "
                                       f"dataset={dataset!r}; to read images from a folder pass "
                                       "dataset='image-folder'")
    if dataset == "digits":
        return load_digits()
    return load_cifar10(cache_dir=cache_dir)


def _read_only(rows: np.ndarray) -> np.ndarray:
    rows.flags.writeable = False  # like the memory-mapped cached arrays
    return rows


# ------------------------------------------------------------------ digits


def load_digits() -> ImageSet:
    """scikit-learn's bundled 8x8 digits, split stratified by class with a fixed seed."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    values = np.asarray(bunch.data, dtype=np.float64)  # [1797, 64], 0..16, row-major 8x8
    labels = np.asarray(bunch.target, dtype=np.int64)
    rows = np.empty((len(values), values.shape[1] + 1), dtype=np.uint8)
    rows[:, :-1] = np.rint(values * 255.0 / 16.0)
    rows[:, -1] = labels
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    parts: dict[str, list[np.ndarray]] = {split: [] for split in SPLITS}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_held = int(round(len(members) * DIGITS_VALID_FRACTION))
        parts["valid"].append(members[:n_held])
        parts["test"].append(members[n_held:2 * n_held])
        parts["train"].append(members[2 * n_held:])
    splits = {s: _read_only(rows[np.sort(np.concatenate(parts[s]))]) for s in SPLITS}
    return ImageSet("digits", splits["train"], splits["valid"], splits["test"], channels=1,
                    height=8, width=8, class_names=tuple(str(d) for d in range(10)))


# ------------------------------------------------------------------ image folder


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")  # e.g. .ipynb_checkpoints, macOS ._name.png


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and _visible(p))


def _image_files(class_dir: Path) -> list[Path]:
    return sorted((p for p in class_dir.iterdir()
                   if p.is_file() and _visible(p) and p.suffix.lower() in IMAGE_SUFFIXES),
                  key=lambda p: p.name)


def load_image_folder(data_dir: str | Path) -> ImageSet:
    """Read `data_dir/<split>/<class>/<image files>` (see the module docstring).

    Class names are the sorted class folders of `train/` (`valid/` and `test/` must have the
    same ones); rows are in order of class, then file name. Files with other suffixes than
    `IMAGE_SUFFIXES`, hidden files and folders, and anything deeper are ignored. Images are
    converted to grayscale ("L") when every training image is "L" or "1", else to "RGB".
    """
    root = Path(data_dir).expanduser()
    if not root.exists():
        raise MissingDataError("data_dir", f"data_dir={str(data_dir)!r} does not exist")
    if not root.is_dir():
        raise SettingError("data_dir", f"data_dir={str(data_dir)!r} is not a folder")
    for split in SPLITS:
        if not (root / split).is_dir():
            raise MissingDataError(
                "data_dir",
                f"data_dir={str(data_dir)!r} has no {split}/ folder ({root / split}); expected "
                "train/, valid/ and test/, each with one sub-folder of images per class"
            )
    classes = _class_folders(root / "train")
    if len(classes) > MAX_CLASSES:
        raise SettingError("data_dir", f"{root / 'train'} has {len(classes)} class folders; "
                                       f"at most {MAX_CLASSES} are supported (uint8 labels)")
    for split in ("valid", "test"):
        found = _class_folders(root / split)
        if found != classes:
            missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
            raise SettingError(
                "data_dir",
                f"{root / split} must have the same class folders as {root / 'train'}: "
                + "; ".join(f"{what}: {', '.join(map(repr, names))}"
                            for what, names in (("missing", missing), ("extra", extra)) if names)
            )
    files = {split: [(label, path) for label, name in enumerate(classes)
                     for path in _image_files(root / split / name)] for split in SPLITS}
    for split in SPLITS:
        if not files[split]:
            raise SettingError(
                "data_dir",
                f"{root / split} has no images (expected {split}/<class>/<image files> with "
                f"suffixes {', '.join(sorted(IMAGE_SUFFIXES))})"
            )

    from PIL import Image

    def header(path: Path) -> tuple[str, tuple[int, int]]:
        try:
            with Image.open(path) as im:
                return im.mode, im.size
        except OSError as e:  # includes PIL.UnidentifiedImageError
            raise _unreadable(path, e) from None

    modes = set()
    for _, path in files["train"]:
        modes.add(header(path)[0])
    mode = "L" if modes <= {"L", "1"} else "RGB"
    channels = 1 if mode == "L" else 3
    first = files["train"][0][1]
    width, height = header(first)[1]
    arrays = {}
    for split in SPLITS:
        rows = np.empty((len(files[split]), channels * height * width + 1), dtype=np.uint8)
        for i, (label, path) in enumerate(files[split]):
            try:
                with Image.open(path) as im:
                    if im.size != (width, height):
                        raise SettingError(
                            "data_dir",
                            f"{path} is {im.size[0]}x{im.size[1]} pixels (width x height), but "
                            f"{first} is {width}x{height}: all images must have the same size "
                            "(resize them beforehand)"
                        )
                    pixels = np.asarray(im.convert(mode), dtype=np.uint8)
            except OSError as e:
                raise _unreadable(path, e) from None
            pixels = pixels[None] if mode == "L" else pixels.transpose(2, 0, 1)  # (C, H, W)
            rows[i, :-1] = pixels.reshape(-1)
            rows[i, -1] = label
        arrays[split] = _read_only(rows)
    return ImageSet("image-folder", arrays["train"], arrays["valid"], arrays["test"],
                    channels=channels, height=height, width=width, class_names=tuple(classes))


def _unreadable(path: Path, error: Exception) -> SettingError:
    return SettingError("data_dir", f"{path} cannot be read as an image "
                                    f"({type(error).__name__}: {error})")


# ------------------------------------------------------------------ cifar10


def cifar10_cache_folder(cache_dir: str | Path | None = None) -> Path:
    """Where the CIFAR-10 rows are cached: `<cache_dir>/images/cifar10-v1`."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "images" / CIFAR10_CACHE_NAME


def load_cifar10(cache_dir: str | Path | None = None) -> ImageSet:
    """CIFAR-10 from the cache under `cache_dir`, else from HF `datasets` (then cached)."""
    folder = cifar10_cache_folder(cache_dir)
    columns = int(np.prod(CIFAR10_SHAPE)) + 1
    arrays = read_image_cache(folder, columns)
    if arrays is None:
        arrays = write_image_cache(folder, _hf_cifar10(folder))
    channels, height, width = CIFAR10_SHAPE
    return ImageSet("cifar10", *arrays, channels=channels, height=height, width=width,
                    class_names=CIFAR10_CLASSES)


def read_image_cache(folder: str | Path, columns: int) -> tuple[np.ndarray, ...] | None:
    """Memory-mapped (train, valid, test) rows cached in `folder`, or None to (re)build them.

    None when `folder` does not exist; also, with a warning (`warn_rebuilt`), when the entry
    fails its manifest check, does not load, or does not hold uint8 rows of `columns` columns.
    """
    folder = Path(folder)
    if not folder.exists():
        return None
    names = [f"{split}.npy" for split in SPLITS]
    problems = check_manifest(folder / MANIFEST_NAME, names)
    if not problems:
        try:
            arrays = tuple(np.load(folder / name, mmap_mode="r") for name in names)
        except (OSError, ValueError, EOFError) as e:
            problems = [f"{folder} does not load ({type(e).__name__}: {e})"]
        else:
            problems = [f"{folder / name} holds {a.dtype} {list(a.shape)}, not uint8 rows "
                        f"[N, {columns}]" for name, a in zip(names, arrays, strict=True)
                        if a.dtype != np.uint8 or a.ndim != 2 or a.shape[1] != columns]
            if not problems:
                return arrays
    warn_rebuilt(folder, problems)
    return None


def write_image_cache(
    folder: str | Path, arrays: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, ...]:
    """Cache the rows `arrays[split]` (uint8, 2-D, one width) in `folder`; read them back.

    Each split is written atomically as `<split>.npy`, then `manifest.json` (the entry is
    complete only once it exists). Returns the memory-mapped (train, valid, test).
    """
    folder = Path(folder)
    rows = {split: np.asarray(arrays[split]) for split in SPLITS}
    widths = {a.shape[1] if a.ndim == 2 else None for a in rows.values()}
    if any(a.dtype != np.uint8 or a.ndim != 2 for a in rows.values()) or len(widths) != 1:
        raise ValueError("image cache arrays must be uint8 rows [N, C*H*W + 1] of one width, got "
                         + ", ".join(f"{s}: {a.dtype} {list(a.shape)}" for s, a in rows.items()))
    (folder / MANIFEST_NAME).unlink(missing_ok=True)  # the entry is incomplete until rewritten
    names = []
    for split, a in rows.items():
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(a))
        write_bytes(folder / f"{split}.npy", buf.getvalue())
        names.append(f"{split}.npy")
    write_manifest(folder / MANIFEST_NAME, names)  # last: the entry is complete
    return tuple(np.load(folder / name, mmap_mode="r") for name in names)


def _hf_cifar10(folder: Path) -> dict[str, np.ndarray]:
    """CIFAR-10 rows from HF `datasets`; fails fast and helpfully when offline."""
    offline = _env_offline() or not _hub_reachable()
    try:
        import datasets

        with _forced_offline(offline):
            ds = datasets.load_dataset("cifar10")
        names = tuple(ds["train"].features["label"].names)
        if names != CIFAR10_CLASSES:
            raise ValueError(f"unexpected class names {names}, expected {CIFAR10_CLASSES}")
        train, test = _hf_rows(ds["train"]), _hf_rows(ds["test"])
    except Exception as e:
        why = unavailable_reason(offline)
        raise DataUnavailableError(
            f"dataset='cifar10' could not be loaded from Hugging Face ('cifar10'): {why} "
            f"({type(e).__name__}: {e}), nor from this package's cache ({folder}). "
            "Offline alternatives: dataset='digits' (scikit-learn's bundled 8x8 digits, no "
            "download), or dataset='image-folder' with data_dir=FOLDER holding train/, valid/ "
            "and test/, each with one sub-folder of images per class; or load 'cifar10' once "
            "with network access to fill the caches."
        ) from e
    n_train = len(train) - CIFAR10_VALID_ROWS
    return {"train": train[:n_train], "valid": train[n_train:], "test": test}


def _hf_rows(part: Any) -> np.ndarray:
    """Rows of an HF CIFAR-10 split (columns `img`: PIL images, `label`: ints)."""
    channels, height, width = CIFAR10_SHAPE
    rows = np.empty((len(part), channels * height * width + 1), dtype=np.uint8)
    i = 0
    for batch in part.iter(batch_size=1000):
        for image, label in zip(batch["img"], batch["label"], strict=True):
            if image.size != (width, height) or not 0 <= int(label) < len(CIFAR10_CLASSES):
                raise ValueError(f"row {i}: image of {image.size[0]}x{image.size[1]} pixels, "
                                 f"label {label}; expected {width}x{height} and 0..9")
            pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)  # (H, W, C)
            rows[i, :-1] = pixels.transpose(2, 0, 1).reshape(-1)
            rows[i, -1] = int(label)
            i += 1
    if i != len(rows):
        raise ValueError(f"read {i} rows of {len(rows)}")
    return rows
