"""Image corpora: digits, a local image folder, CIFAR-10's cache and offline failure (offline)."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tying_env.data import images as images_mod
from tying_env.data.images import (
    CIFAR10_CLASSES,
    DIGITS_SPLIT_ROWS,
    IMAGE_DATASETS,
    ImageSet,
    cifar10_cache_folder,
    load_images,
    read_image_cache,
    unpack,
    write_image_cache,
)
from tying_env.errors import DataUnavailableError, MissingDataError, SettingError

SPLITS = ("train", "valid", "test")


@pytest.fixture(scope="module")
def digits() -> ImageSet:
    return load_images("digits")


# ------------------------------------------------------------------ digits


def test_digits_layout(digits: ImageSet) -> None:
    assert digits.name == "digits" and digits.source is None
    assert (digits.channels, digits.height, digits.width) == (1, 8, 8)
    assert digits.class_names == tuple("0123456789")
    assert digits.n_classes == digits.vocab_size == 10
    sizes = {s: len(getattr(digits, s)) for s in SPLITS}
    assert sizes == DIGITS_SPLIT_ROWS == {"train": 1259, "valid": 269, "test": 269}
    assert sum(sizes.values()) == 1797
    for s in SPLITS:
        rows = getattr(digits, s)
        assert rows.dtype == np.uint8 and rows.shape[1] == 8 * 8 + 1
        assert not rows.flags.writeable


def test_digits_splits_partition_the_dataset(digits: ImageSet) -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    expected = np.c_[np.rint(bunch.data * 255 / 16), bunch.target].astype(np.uint8)
    seen = [{r.tobytes() for r in getattr(digits, s)} for s in SPLITS]
    assert all(len(rows) == len(getattr(digits, s)) for rows, s in zip(seen, SPLITS, strict=True))
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert seen[0] | seen[1] | seen[2] == {r.tobytes() for r in expected}
    assert expected[:, :-1].max() == 255 and expected[:, :-1].min() == 0


def test_digits_split_is_stratified(digits: ImageSet) -> None:
    totals = sum(np.bincount(getattr(digits, s)[:, -1], minlength=10) for s in SPLITS)
    for s, share in (("train", 0.70), ("valid", 0.15), ("test", 0.15)):
        counts = np.bincount(getattr(digits, s)[:, -1], minlength=10)
        assert np.all(counts > 0)
        assert np.all(np.abs(counts - share * totals) <= 1.5), (s, counts, totals)


def test_digits_deterministic_and_identity(digits: ImageSet) -> None:
    again = load_images("digits")
    for s in SPLITS:
        np.testing.assert_array_equal(getattr(digits, s), getattr(again, s))
    assert again.identity == digits.identity
    ident = digits.identity
    assert ident["name"] == "digits" and ident["shape"] == [1, 8, 8]
    assert ident["rows"] == [1259, 269, 269] and ident["class_names"] == list("0123456789")
    valid = np.array(digits.valid)
    valid[0, 0] ^= 1
    changed = ImageSet("digits", digits.train, valid, digits.test, channels=1, height=8, width=8,
                       class_names=digits.class_names)
    assert changed.identity["sha256"] != ident["sha256"]
    swapped = ImageSet("digits", digits.train, digits.test, digits.valid, channels=1, height=8,
                       width=8, class_names=digits.class_names)
    assert swapped.identity["sha256"] != ident["sha256"]


def test_unpack(digits: ImageSet) -> None:
    images, labels = digits.unpack(digits.train[:50])
    assert images.shape == (50, 1, 8, 8) and images.dtype == np.float32
    assert labels.shape == (50,) and labels.dtype == np.int64
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.max() == 1.0
    assert set(labels.tolist()) <= set(range(10))
    np.testing.assert_array_equal(labels, digits.train[:50, -1])
    np.testing.assert_allclose(images[3, 0], digits.train[3, :-1].reshape(8, 8) / 255.0)
    all_images, all_labels = unpack(digits.test, 1, 8, 8)
    assert all_images.shape == (269, 1, 8, 8) and set(all_labels.tolist()) == set(range(10))
    empty, none = unpack(digits.valid[:0], 1, 8, 8)
    assert empty.shape == (0, 1, 8, 8) and none.shape == (0,)
    with pytest.raises(ValueError, match=r"\[n, 65\]"):
        unpack(digits.train[:, :-1], 1, 8, 8)


def test_imageset_checks_row_width(digits: ImageSet) -> None:
    with pytest.raises(ValueError, match="uint8"):
        ImageSet("digits", digits.train, digits.valid, digits.test, channels=1, height=8,
                 width=7, class_names=digits.class_names)


# ------------------------------------------------------------------ image folder


def _pixels(seed: int, mode: str, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    if mode == "RGB":
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    image = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8))
    return image.convert("1") if mode == "1" else image


def make_folder(root: Path, modes: dict[tuple[str, str, str], str],
                size: tuple[int, int] = (6, 5)) -> Path:
    """`root/<split>/<class>/<file>` for each (split, class, file) -> mode in `modes`."""
    for i, ((split, cls, name), mode) in enumerate(sorted(modes.items())):
        path = root / split / cls / name
        path.parent.mkdir(parents=True, exist_ok=True)
        _pixels(i, mode, size).save(path)
    return root


def gray_modes() -> dict[tuple[str, str, str], str]:
    modes = {}
    for split, n in (("train", 3), ("valid", 1), ("test", 2)):
        for cls in ("cat", "ant", "bee"):
            for k in range(n):
                modes[split, cls, f"img{k}.png"] = "L"
    modes["train", "bee", "zz.PNG"] = "1"  # suffixes are case-insensitive
    return modes


def test_image_folder_grayscale(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs", gray_modes())
    (root / "train" / "ant" / "notes.txt").write_text("ignored")
    (root / "train" / "ant" / ".hidden.png").write_bytes(b"not an image")
    (root / "train" / "README.md").write_text("ignored")
    (root / "valid" / "ant" / "deeper").mkdir()
    s = load_images("image-folder", data_dir=root)
    assert s.name == "image-folder" and s.source is None
    assert s.class_names == ("ant", "bee", "cat") and s.n_classes == s.vocab_size == 3
    assert (s.channels, s.height, s.width) == (1, 5, 6)
    assert [len(s.train), len(s.valid), len(s.test)] == [10, 3, 6]
    assert s.train.shape[1] == 5 * 6 + 1
    assert s.train[:, -1].tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]  # by class, then name
    images, labels = s.unpack(s.train)
    assert images.shape == (10, 1, 5, 6) and labels.tolist()[-1] == 2
    expected = np.asarray(Image.open(root / "train" / "bee" / "img1.png"))
    np.testing.assert_array_equal(s.train[4, :-1].reshape(5, 6), expected)
    binary = s.train[6, :-1]  # bee/zz.PNG, mode "1" -> 0 or 255
    assert set(np.unique(binary).tolist()) <= {0, 255}
    assert load_images("image-folder", data_dir=str(root)).identity == s.identity


def test_image_folder_rgb(tmp_path: Path) -> None:
    modes = gray_modes()
    modes["train", "ant", "img0.png"] = "RGB"  # one colour training image -> all RGB
    root = make_folder(tmp_path / "imgs", modes)
    s = load_images("image-folder", data_dir=root)
    assert (s.channels, s.height, s.width) == (3, 5, 6)
    assert s.train.shape == (10, 3 * 5 * 6 + 1)
    images, _ = s.unpack(s.train)
    assert images.shape == (10, 3, 5, 6)
    colour = np.asarray(Image.open(root / "train" / "ant" / "img0.png"))  # (H, W, C)
    np.testing.assert_array_equal(s.train[0, :-1].reshape(3, 5, 6), colour.transpose(2, 0, 1))
    gray = s.valid[0, :-1].reshape(3, 5, 6)  # a grayscale image, converted: equal channels
    np.testing.assert_array_equal(gray[0], gray[1])
    np.testing.assert_array_equal(gray[0], np.asarray(Image.open(root / "valid/ant/img0.png")))


def test_image_folder_jpeg_and_more(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    for split in SPLITS:
        for cls, suffix in (("a", ".jpg"), ("b", ".BMP")):
            (root / split / cls).mkdir(parents=True)
            _pixels(1, "RGB", (4, 4)).save(root / split / cls / f"x{suffix}")
    s = load_images("image-folder", data_dir=root)
    assert (s.channels, s.height, s.width) == (3, 4, 4) and s.class_names == ("a", "b")
    assert s.test[:, -1].tolist() == [0, 1]


def test_image_folder_missing(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError, match="nowhere") as err:
        load_images("image-folder", data_dir=tmp_path / "nowhere")
    assert err.value.argument == "data_dir"
    root = make_folder(tmp_path / "imgs", gray_modes())
    shutil.rmtree(root / "valid")
    with pytest.raises(MissingDataError, match=r"no valid/ folder") as err:
        load_images("image-folder", data_dir=root)
    assert err.value.argument == "data_dir"
    (tmp_path / "file").write_text("x")
    with pytest.raises(SettingError, match="not a folder"):
        load_images("image-folder", data_dir=tmp_path / "file")


def test_image_folder_class_mismatch(tmp_path: Path) -> None:
    modes = gray_modes()
    modes = {k: v for k, v in modes.items() if not (k[0] == "test" and k[1] == "bee")}
    modes["test", "wasp", "img0.png"] = "L"
    root = make_folder(tmp_path / "imgs", modes)
    with pytest.raises(SettingError, match=r"test.*missing: 'bee'; extra: 'wasp'") as err:
        load_images("image-folder", data_dir=root)
    assert err.value.argument == "data_dir"


def test_image_folder_empty_split(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs", gray_modes())
    for path in (root / "test").glob("*/*.png"):
        path.rename(path.with_suffix(".txt"))
    with pytest.raises(SettingError, match=r"test has no images") as err:
        load_images("image-folder", data_dir=root)
    assert err.value.argument == "data_dir"


def test_image_folder_size_mismatch(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs", gray_modes())
    _pixels(0, "L", (7, 5)).save(root / "valid" / "bee" / "img0.png")
    with pytest.raises(SettingError, match=r"valid/bee/img0\.png is 7x5 .* 6x5") as err:
        load_images("image-folder", data_dir=root)
    assert err.value.argument == "data_dir"


def test_image_folder_unreadable_image(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs", gray_modes())
    (root / "test" / "cat" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(SettingError, match=r"cat/broken\.png cannot be read") as err:
        load_images("image-folder", data_dir=root)
    assert err.value.argument == "data_dir"


def test_image_folder_too_many_classes(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    for split in SPLITS:
        (root / split).mkdir(parents=True)
    for k in range(257):
        (root / "train" / f"c{k:03d}").mkdir()
    with pytest.raises(SettingError, match="257 class folders") as err:
        load_images("image-folder", data_dir=root)
    assert err.value.argument == "data_dir"


# ------------------------------------------------------------------ cifar10


def _fake_cifar_rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 256, (n, 3 * 32 * 32 + 1), dtype=np.uint8)
    rows[:, -1] = rng.integers(0, 10, n)
    return rows


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list:
    """HF offline with empty caches; returns the list of attempted network connections."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    attempts: list = []

    def no_network(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access in an offline test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(images_mod, "_hub_reachable", lambda *a, **k: attempts.append("hub"))
    return attempts


def test_cifar10_offline_fails_fast(offline: list, tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError) as err:
        load_images("cifar10", cache_dir=tmp_path / "cache")
    msg = str(err.value)
    for needle in ("dataset='cifar10'", "offline mode", "dataset='digits'",
                   "dataset='image-folder'", "data_dir=FOLDER"):
        assert needle in msg
    assert offline == []  # neither the hub check nor any connection was attempted
    assert not (tmp_path / "cache" / "images").exists()


def test_cifar10_cache_round_trip(offline: list, tmp_path: Path) -> None:
    folder = cifar10_cache_folder(tmp_path / "cache")
    assert folder == tmp_path / "cache" / "images" / "cifar10-v1"
    fake = {"train": _fake_cifar_rows(6, 0), "valid": _fake_cifar_rows(2, 1),
            "test": _fake_cifar_rows(3, 2)}
    written = write_image_cache(folder, fake)
    assert (folder / "manifest.json").is_file()
    assert sorted(p.name for p in folder.iterdir()) == [
        "manifest.json", "test.npy", "train.npy", "valid.npy"]
    s = load_images("cifar10", cache_dir=tmp_path / "cache")
    assert offline == []
    assert s.name == "cifar10" and s.class_names == CIFAR10_CLASSES and s.vocab_size == 10
    assert (s.channels, s.height, s.width) == (3, 32, 32)
    for split, rows in zip(SPLITS, written, strict=True):
        np.testing.assert_array_equal(getattr(s, split), fake[split])
        np.testing.assert_array_equal(rows, fake[split])
        assert isinstance(getattr(s, split), np.memmap)
    images, labels = s.unpack(s.train)
    assert images.shape == (6, 3, 32, 32) and labels.tolist() == fake["train"][:, -1].tolist()


def test_cifar10_damaged_cache_is_rebuilt(offline: list, tmp_path: Path) -> None:
    folder = cifar10_cache_folder(tmp_path / "cache")
    fake = {s: _fake_cifar_rows(2, i) for i, s in enumerate(SPLITS)}
    write_image_cache(folder, fake)
    data = bytearray((folder / "valid.npy").read_bytes())
    data[-1] ^= 0xFF
    (folder / "valid.npy").write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="valid.npy does not match"):
        assert read_image_cache(folder, 3 * 32 * 32 + 1) is None
    with pytest.warns(UserWarning, match="damaged"), pytest.raises(DataUnavailableError):
        load_images("cifar10", cache_dir=tmp_path / "cache")  # rebuilding needs the hub


def test_image_cache_checks_shapes(tmp_path: Path) -> None:
    small = {s: np.zeros((2, 5), np.uint8) for s in SPLITS}
    write_image_cache(tmp_path / "entry", small)
    assert read_image_cache(tmp_path / "missing", 5) is None
    arrays = read_image_cache(tmp_path / "entry", 5)
    assert arrays is not None and [a.shape for a in arrays] == [(2, 5)] * 3
    with pytest.warns(UserWarning, match=r"not uint8 rows \[N, 7\]"):
        assert read_image_cache(tmp_path / "entry", 7) is None
    with pytest.raises(ValueError, match="uint8"):
        write_image_cache(tmp_path / "bad", {**small, "test": np.zeros((2, 5), np.int64)})
    with pytest.raises(ValueError, match="one width"):
        write_image_cache(tmp_path / "bad", {**small, "test": np.zeros((2, 6), np.uint8)})


# ------------------------------------------------------------------ settings


@pytest.mark.parametrize("name", ["mnist", "Digits", "", None])
def test_unknown_dataset(name) -> None:
    with pytest.raises(SettingError) as err:
        load_images(name)
    assert err.value.argument == "dataset"
    assert all(d in str(err.value) for d in IMAGE_DATASETS)


@pytest.mark.parametrize("name", ["digits", "cifar10"])
def test_data_dir_only_for_image_folder(name: str, tmp_path: Path) -> None:
    with pytest.raises(SettingError, match="image-folder") as err:
        load_images(name, data_dir=tmp_path)
    assert err.value.argument == "data_dir" and name in str(err.value)


def test_image_folder_needs_data_dir() -> None:
    with pytest.raises(SettingError, match="data_dir=FOLDER") as err:
        load_images("image-folder")
    assert err.value.argument == "dataset"
