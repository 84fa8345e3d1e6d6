"""Data layer: generated toys, digits, MNIST / CIFAR-10 / text8 loaders, preparation tools."""

import gzip
import hashlib
import io
import json
import pickle
import shutil
import tarfile
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from bayesgen.data import (
    DataModule,
    DatasetNotFoundError,
    build_datasets,
    decode_text,
    encode_text,
    prepare_image_zip,
    prepare_imagenet,
)
from bayesgen.data import images as images_module
from bayesgen.data import info as info_module
from bayesgen.data import text as text_module

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is absent")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network: any download attempt fails at once; no env var; cwd is a scratch folder."""
    calls = []

    def no_network(url, root, filename=None, md5=None, **kwargs):
        calls.append(url)
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(info_module, "download_url", no_network)
    monkeypatch.delenv(info_module.ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    return calls


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# ----------------------------------------------------------------------------- toys and digits
@pytest.mark.parametrize("name", ["circles", "moons", "sine2", "s_curve", "swirl"])
def test_toys_are_zscored_and_deterministic(name):
    train, val, test, info = build_datasets(name, n_train=5000, n_val=300, n_test=400)
    x = train.tensors[0]
    assert x.shape == (5000, *info.data_shape) and x.dtype == torch.float32
    assert (len(val), len(test)) == (300, 400)
    assert x.mean(0).abs().max() < 0.06 and (x.std(0) - 1).abs().max() < 0.06
    again = build_datasets(name, n_train=5000, n_val=300, n_test=400)[0].tensors[0]
    assert torch.equal(x, again)
    assert not torch.equal(x[:300], val.tensors[0])  # each split has its own seed
    other_seed = build_datasets(name, n_train=5000, seed=1)[0].tensors[0]
    assert not torch.equal(x, other_seed)
    labels = train.tensors[1]
    assert labels.dtype == torch.int64
    assert set(labels.unique().tolist()) == ({0, 1} if info.num_labels == 2 else {-1})


def test_default_sample_count_by_kind():
    """Scatter plots of 2-D/3-D points draw 2000 samples by default, grids 64."""
    from bayesgen.data.info import DatasetInfo

    assert build_datasets("moons", n_train=10, n_val=10, n_test=10)[3].default_sample_count() \
        == 2000
    assert DatasetInfo("s", (3,), "flat").is_points
    assert DatasetInfo("digits", (1, 8, 8), "image").default_sample_count() == 64
    assert DatasetInfo("tab", (5,), "flat").default_sample_count() == 64


def test_alt_toys_keep_raw_columns_and_half_normal_middle():
    x = build_datasets("alt_swirl", n_train=5000)[0].tensors[0]
    assert abs(x[:, 1].std() - 0.5) < 0.03
    assert x[:, 0].std() > 3  # raw swiss-roll coordinate, not z-scored
    assert build_datasets("alt_s_curve")[3].data_shape == (3,)


def test_toy_embedding_is_an_isometry():
    plain = build_datasets("s_curve", n_train=1000)[0].tensors[0]
    train, _, _, info = build_datasets("s_curve", n_train=1000, embed_dim=10)
    x = train.tensors[0]
    assert info.data_shape == (10,) and x.shape == (1000, 10)
    torch.testing.assert_close(x.norm(dim=1), plain.norm(dim=1), rtol=1e-5, atol=1e-5)


def test_digits_split_and_range():
    train, val, test, info = build_datasets("digits")
    assert (len(train), len(val), len(test)) == (1437, 180, 180)
    assert info.data_shape == (1, 8, 8) and info.num_labels == 10 and info.num_bins == 17
    x = torch.cat([train.tensors[0], val.tensors[0], test.tensors[0]])
    assert x.min() == -1 and x.max() == 1
    assert torch.equal((x + 1) * 8, ((x + 1) * 8).round())  # the 17 grey levels
    assert set(train.tensors[1].unique().tolist()) == set(range(10))
    assert torch.equal(build_datasets("digits")[1].tensors[0], val.tensors[0])


# ----------------------------------------------------------------------------- MNIST
@needs_shared
def test_mnist_from_shared_folder():
    train, val, test, info = build_datasets("mnist", root=SHARED / "mnist")
    assert (len(train), len(val), len(test)) == (55_000, 5_000, 10_000)
    x, y = train[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() == -1 and x.max() == 1
    assert info.num_bins == 256 and info.num_labels == 10
    pixels = (train.images.float() / 127.5 - 1)[:5]
    assert torch.equal(torch.stack([train[i][0] for i in range(5)]), pixels)
    binned = build_datasets("mnist", root=SHARED / "mnist", num_bins=16)[0][0][0]
    assert set((binned.unique() * 8 + 8).tolist()) <= {k + 0.5 for k in range(16)}


@needs_shared
def test_mnist_checksum_mismatch_is_a_clear_error(tmp_path):
    for f in (SHARED / "mnist").iterdir():
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" * 5))
    with pytest.raises(DatasetNotFoundError, match="md5"):
        build_datasets("mnist", root=tmp_path)


@needs_shared
def test_binarized_mnist_is_sampled_afresh():
    train, val, test, info = build_datasets("binarized_mnist", root=SHARED / "mnist")
    assert (len(train), len(val), len(test)) == (59_400, 600, 10_000)
    assert info.num_classes == 2 and info.kind == "image"
    draws = torch.stack([train[0][0] for _ in range(200)])
    assert draws.dtype == torch.int64 and set(draws.unique().tolist()) == {0, 1}
    p = train.images[0].float() / 255
    assert not torch.equal(draws[0], draws[1])
    assert (draws.float().mean(0) - p).abs().max() < 0.15
    soft = build_datasets("binarized_mnist", root=SHARED / "mnist", soft=True)[0]
    torch.testing.assert_close(soft[0][0], p)


@needs_shared
def test_binarized_mnist_as_float_holds_the_same_pixels_in_minus_one_one():
    train, _, _, info = build_datasets("binarized_mnist", root=SHARED / "mnist", as_float=True)
    assert info.num_bins == 2 and info.num_classes is None
    x = train[0][0]
    assert x.dtype == torch.float32 and set(x.unique().tolist()) <= {-1.0, 1.0}
    torch.manual_seed(3)
    a = train[5][0]
    ints = build_datasets("binarized_mnist", root=SHARED / "mnist")[0]
    torch.manual_seed(3)
    torch.testing.assert_close(a, 2 * ints[5][0].float() - 1)
    with pytest.raises(ValueError, match="not both"):
        build_datasets("binarized_mnist", root=SHARED / "mnist", soft=True, as_float=True)


# ----------------------------------------------------------------------------- missing files
@pytest.mark.parametrize(
    "name, expected",
    [
        ("mnist", ["train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]),
        ("fashion_mnist", ["train-images-idx3-ubyte.gz"]),
        ("cifar10", ["cifar-10-python.tar.gz"]),
        ("text8", ["text8.zip", "http://mattmahoney.net/dc/text8.zip"]),
    ],
)
def test_missing_files_give_one_clear_error(offline, tmp_path, name, expected):
    root = tmp_path / "nothing-here"
    with pytest.raises(DatasetNotFoundError) as error:
        build_datasets(name, root=root)
    message = str(error.value)
    assert str(root) in message and "downloading failed" in message
    assert all(e in message for e in expected)
    assert offline  # a download was attempted (and failed at once)
    offline.clear()
    with pytest.raises(DatasetNotFoundError, match="download=False"):
        build_datasets(name, root=root, download=False)
    assert not offline


def test_default_root_is_data_folder_when_nothing_found(offline, tmp_path):
    with pytest.raises(DatasetNotFoundError, match=str(Path("data") / "text8")):
        build_datasets("text8", download=False)
    assert info_module.download_dir("text8") == Path("data/text8")


def test_root_resolution_order(monkeypatch, tmp_path):
    (tmp_path / "proj").mkdir()
    (tmp_path / "shared" / "data" / "foo").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "proj")
    monkeypatch.setenv(info_module.ENV_VAR, str(tmp_path / "env"))
    dirs = [d.resolve() for d in info_module.search_dirs("foo")]
    assert dirs == [
        tmp_path / "env" / "foo",
        tmp_path / "shared" / "data" / "foo",
        tmp_path / "proj" / "data" / "foo",
    ]
    assert info_module.download_dir("foo") == tmp_path / "env" / "foo"
    assert info_module.search_dirs("foo", root="/r") == [Path("/r")]
    with pytest.raises(PermissionError, match="shared"):  # never writes into shared/data
        info_module.fetch(["http://x"], tmp_path / "shared" / "data" / "foo", "f", None)


def test_imagenet_missing_file_explains_how_to_prepare(offline, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="bayesgen prepare imagenet source=SRC dest="):
        build_datasets("imagenet32", root=tmp_path)


# ----------------------------------------------------------------------------- CIFAR-10
def make_fake_cifar(folder: Path, per_batch: int = 6) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    tgz = folder / "cifar-10-python.tar.gz"
    folder.mkdir(parents=True, exist_ok=True)
    all_images = []
    with tarfile.open(tgz, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
            all_images.append(data)
            labels = rng.integers(0, 10, per_batch).tolist()
            payload = pickle.dumps({b"data": data, b"labels": labels})
            member = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            member.size = len(payload)
            tar.addfile(member, io.BytesIO(payload))
    return tgz, np.concatenate(all_images).reshape(-1, 3, 32, 32)


def test_cifar10_from_python_tarball(offline, tmp_path, monkeypatch):
    tgz, pixels = make_fake_cifar(tmp_path / "cifar")
    with pytest.raises(DatasetNotFoundError, match="md5"):
        build_datasets("cifar10", root=tmp_path / "cifar", val_size=4)
    monkeypatch.setattr(images_module, "CIFAR10_TGZ_MD5", md5(tgz.read_bytes()))
    train, val, test, info = build_datasets("cifar10", root=tmp_path / "cifar", val_size=4)
    assert (len(train), len(val), len(test)) == (26, 4, 6)
    assert info.data_shape == (3, 32, 32) and info.num_bins == 256
    x, y = test[0]
    assert torch.equal(x, torch.from_numpy(pixels[30]).float() / 127.5 - 1)
    assert y.dtype == torch.int64 and 0 <= y < 10
    train16, _, _, info16 = build_datasets(
        "cifar10", root=tmp_path / "cifar", val_size=4, num_bins=16
    )
    assert info16.num_bins == 16
    centres = 2 * (torch.arange(16) + 0.5) / 16 - 1
    assert torch.isin(train16[0][0], centres).all()
    idx = (torch.from_numpy(pixels[30]).long() * 16 // 255).clamp(max=15)
    x16 = build_datasets("cifar10", root=tmp_path / "cifar", val_size=4, num_bins=16)[2][0][0]
    assert torch.equal(x16, centres[idx])


PINNED_BFN_VAL = [159, 167, 283, 461, 527]  # the first CIFAR-10 validation images of BFN


def test_reference_splits_are_the_references_random_splits():
    """The very (val, train) indices of torch's random_split as BFN's data.py and BSI's CIFAR-10
    module call it: fractions (train first) with their fixed generator seeds."""
    from torch.utils.data import random_split

    for name, n, n_val in (("bfn", 50_000, 500), ("bfn", 60_000, 600), ("bsi", 50_000, 5000)):
        val, train = info_module.reference_split(n, name)
        fractions, seed = info_module.REFERENCE_SPLITS[name]
        ref_train, ref_val = random_split(range(n), list(fractions),
                                          generator=torch.Generator().manual_seed(seed))
        assert (len(val), len(train)) == (n_val, n - n_val)
        assert set(val.tolist()) == set(ref_val.indices)
        assert set(train.tolist()) == set(ref_train.indices)
    # pinned, so that a change of torch's random_split shows up here
    assert info_module.reference_split(50_000, "bfn")[0][:5].tolist() == PINNED_BFN_VAL
    with pytest.raises(ValueError, match="reference_split"):
        info_module.reference_split(10, "vdm")


def test_cifar10_reference_split(offline, tmp_path, monkeypatch):
    tgz, pixels = make_fake_cifar(tmp_path / "cifar")
    monkeypatch.setattr(images_module, "CIFAR10_TGZ_MD5", md5(tgz.read_bytes()))
    train, val, _, _ = build_datasets("cifar10", root=tmp_path / "cifar", reference_split="bsi")
    val_idx, train_idx = info_module.reference_split(30, "bsi")
    assert (len(train), len(val)) == (len(train_idx), len(val_idx)) == (27, 3)
    assert torch.equal(val[0][0], torch.from_numpy(pixels[val_idx[0]]).float() / 127.5 - 1)


# ----------------------------------------------------------------------------- text
def test_encode_decode_roundtrip():
    idx = encode_text("Hello, World! xyz")
    assert idx.dtype == torch.int64 and len(idx) == 17
    assert decode_text(idx) == "hello  world  xyz"
    assert decode_text(idx, space="_") == "hello__world__xyz"
    assert decode_text(torch.stack([idx, idx])) == ["hello  world  xyz"] * 2
    with pytest.raises(ValueError):
        decode_text(torch.tensor([27]))


@needs_shared
def test_tinyshakespeare_text8_preprocessing():
    path = SHARED / "text" / "tinyshakespeare.txt"
    train, val, test, info = build_datasets("text", root=path, seq_len=64)
    assert info.num_classes == 27 and info.data_shape == (64,) and info.kind == "text"
    whole = torch.cat([train.data, val.data, test.data]).long()
    assert len(train.data) == pytest.approx(0.9 * len(whole), abs=1)
    assert whole.min() == 0 and whole.max() == 26
    assert not ((whole[1:] == 0) & (whole[:-1] == 0)).any()  # single spaces, like text8
    x, y = train[0]
    assert x.shape == (64,) and x.dtype == torch.int64 and y == -1
    assert decode_text(x).startswith("first citizen before we proceed")
    assert torch.equal(encode_text(decode_text(x)), x)
    assert info.decode(x) == decode_text(x)
    named = build_datasets("tinyshakespeare", root=path.parent, seq_len=64)[0]
    assert torch.equal(named.data, train.data)


def test_text8_zip_checksum_and_split(offline, tmp_path, monkeypatch):
    folder = tmp_path / "text8"
    folder.mkdir()
    words = np.random.default_rng(0).choice(["anarchism", "originated", "as", "a", "term"], 4000)
    text = " ".join(words)[:20_000]
    with zipfile.ZipFile(folder / "text8.zip", "w") as z:
        z.writestr("text8", text)
    with pytest.raises(DatasetNotFoundError, match="md5.*text8.zip"):
        build_datasets("text8", root=folder)
    monkeypatch.setattr(text_module, "TEXT8_MD5", md5((folder / "text8.zip").read_bytes()))
    train, val, test, info = build_datasets("text8", root=folder, seq_len=100)
    assert (len(train), len(val), len(test)) == (180, 10, 10)
    assert decode_text(train[0][0]) == text[:100]
    assert decode_text(test[9][0]) == text[-100:]
    # BFN's official training windows: one at every offset; val/test stay non-overlapping
    train, val, test, _ = build_datasets("text8", root=folder, seq_len=100, train_stride=1)
    assert (len(train), len(val), len(test)) == (18_000 - 100 + 1, 10, 10)
    assert decode_text(train[7][0]) == text[7:107]
    assert decode_text(train[len(train) - 1][0]) == text[17_900:18_000]
    with pytest.raises(IndexError):
        train[len(train)]


def test_text_windows_every_stride():
    chunks = text_module.TextChunks(np.arange(10, dtype=np.uint8) % 27, seq_len=4, stride=3)
    assert [chunks[i][0].tolist() for i in range(len(chunks))] == [
        [0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert len(text_module.TextChunks(np.zeros(3, np.uint8), seq_len=4, stride=1)) == 0
    with pytest.raises(ValueError, match="train_stride"):
        text_module.TextChunks(np.zeros(9, np.uint8), seq_len=4, stride=-1)


# ----------------------------------------------------------------------------- preparation
@needs_shared
def test_prepare_image_zip_from_jpeg_tar(tmp_path):
    dest = prepare_image_zip(
        SHARED / "cifar10-jpeg" / "test.tar", tmp_path / "c.zip", max_images=12, progress=False
    )
    with zipfile.ZipFile(dest) as z:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
        labels = json.loads(z.read("dataset.json"))["labels"]
        assert len(labels) == 12 and labels[0] == ["00000/img00000000.png", 0]  # airplane
    train, val, test, info = build_datasets("image_zip", root=dest, val_size=2)
    assert info.data_shape == (3, 32, 32) and info.num_labels == 1
    assert (len(train), len(val), len(test)) == (10, 2, 0)
    x, y = train[0]
    assert x.shape == (3, 32, 32) and -1 <= x.min() and x.max() <= 1 and y == 0


def test_prepare_image_zip_from_class_folders(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / "src" / cls).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "src" / cls / f"{i}.png")
    train, _, _, folder_info = build_datasets("image_folder", root=tmp_path / "src", val_size=0)
    assert folder_info.num_labels == 2 and [int(train[i][1]) for i in range(6)] == [0] * 3 + [1] * 3
    first = np.asarray(Image.open(tmp_path / "src" / "cats" / "0.png")).transpose(2, 0, 1)
    assert torch.equal(train[0][0], torch.from_numpy(first.copy()).float() / 127.5 - 1)

    dest = prepare_image_zip(tmp_path / "src", tmp_path / "out.zip", resolution=4, progress=False)
    train, val, test, info = build_datasets("image_zip", root=dest, val_size=2)
    assert info.data_shape == (3, 4, 4) and info.num_labels == 2
    assert sorted(int(y) for _, y in [*train, *val]) == [0, 0, 0, 1, 1, 1]
    same = prepare_image_zip(dest, tmp_path / "copy.zip", progress=False)  # a ZIP as source
    assert json.loads(zipfile.ZipFile(same).read("dataset.json"))["labels"][3][1] == 1


def test_prepare_image_zip_from_cifar_tarball(tmp_path, monkeypatch):
    tgz, pixels = make_fake_cifar(tmp_path, per_batch=2)
    with pytest.raises(DatasetNotFoundError, match="not the official CIFAR-10"):  # md5 first
        prepare_image_zip(tgz, tmp_path / "cifar.zip", split="test", progress=False)
    monkeypatch.setattr(images_module, "CIFAR10_TGZ_MD5", md5(tgz.read_bytes()))
    dest = prepare_image_zip(tgz, tmp_path / "cifar.zip", split="test", progress=False)
    train, val, test, info = build_datasets("image_zip", root=dest, val_size=0)
    assert len(train) == 2
    assert torch.equal(train[1][0], torch.from_numpy(pixels[11]).float() / 127.5 - 1)


def test_prepare_imagenet_npz_to_hdf5(tmp_path):
    rng = np.random.default_rng(0)
    src, r = tmp_path / "npz", 32
    src.mkdir()
    batches = []
    for name, n in [("train_data_batch_1", 60), ("train_data_batch_2", 40), ("val_data", 20)]:
        data = rng.integers(0, 256, (n, 3 * r * r), dtype=np.uint8)
        labels = rng.integers(1, 1001, n)
        np.savez(src / f"{name}.npz", data=data, labels=labels)
        batches.append((data, labels))
    dest = prepare_imagenet(src, tmp_path / "imagenet32" / "imagenet32.h5", r, progress=False)
    with h5py.File(dest) as f:
        assert [len(f[s]["labels"]) for s in ("train", "val", "test")] == [99, 1, 20]
        assert f["test/images"].shape == (20, 3, r, r)
        np.testing.assert_array_equal(f["test/images"][3], batches[2][0][3].reshape(3, r, r))
        np.testing.assert_array_equal(f["test/labels"][:], batches[2][1] - 1)
        train_labels = np.concatenate([f["train/labels"][:], f["val/labels"][:]])
    assert sorted(train_labels) == sorted(np.concatenate([b[1] for b in batches[:2]]) - 1)
    train, val, test, info = build_datasets("imagenet32", root=tmp_path / "imagenet32")
    assert (len(train), len(val), len(test)) == (99, 1, 20) and info.num_labels == 1000
    x, y = test[3]
    assert torch.equal(x, torch.from_numpy(batches[2][0][3].reshape(3, r, r)).float() / 127.5 - 1)
    assert y == batches[2][1][3] - 1
    x, _ = next(iter(torch.utils.data.DataLoader(train, batch_size=8, num_workers=1)))
    assert x.shape == (8, 3, r, r)


# ----------------------------------------------------------------------------- registry, loaders
def test_unknown_name_or_option_lists_the_valid_ones():
    with pytest.raises(ValueError, match="circles.*digits"):
        build_datasets("nope")
    with pytest.raises(ValueError, match="n_train"):
        build_datasets("moons", n_points=3)
    with pytest.raises(ValueError, match="val_size"):
        DataModule("mnist", batchsize=3)


def test_datamodule_info_before_setup_and_loaders(offline):
    assert DataModule("text8", root="nowhere").info.num_classes == 27  # reads no file
    dm = DataModule("digits", batch_size=100, eval_batch_size=64)
    assert dm.info.data_shape == (1, 8, 8)
    dm.prepare_data()
    dm.setup("fit")
    train = dm.train_dataloader()
    assert len(train) == 1437 // 100
    epoch_1 = torch.cat([y for _, y in train])  # a whole epoch, then the next one
    epoch_2 = torch.cat([y for _, y in train])
    assert not torch.equal(epoch_1, dm.train.tensors[1][:len(epoch_1)])  # shuffled
    assert not torch.equal(epoch_1, epoch_2)  # each epoch in another order
    val = dm.val_dataloader()
    assert len(val) == 3 and sum(len(b[0]) for b in val) == 180
    assert torch.equal(torch.cat([y for _, y in val]), dm.val.tensors[1])  # in order
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (64, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
