"""Character-level text: text8, tinyshakespeare and any local text file, as 27 symbols.

The alphabet is "_abcdefghijklmnopqrstuvwxyz": index 0 is the space (shown as '_' in BFN's
samples), 1–26 are a–z. Text is prepared the way text8 was made from Wikipedia (Mahoney's
wikifil.pl): lowercase, every character outside a–z becomes a space, and runs of spaces are
collapsed into one (`collapse_spaces=False` keeps them, e.g. one space per newline). text8
itself is already in this form. Items are `(x, y)`: x int64 (seq_len,) indices of one
window of the text, y = −1. Windows are non-overlapping chunks, except that training windows
start every `train_stride` characters when that is set (1: every offset, as BFN's official
text8 code trains).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from bayesgen.data.info import (
    DatasetInfo,
    DatasetNotFoundError,
    DataSource,
    download_dir,
    download_or_explain,
    fetch,
    md5_of_file,
    search_dirs,
)

ALPHABET = "_abcdefghijklmnopqrstuvwxyz"
TEXT8_URL = "http://mattmahoney.net/dc/text8.zip"
TEXT8_MD5 = "f26f94c5209bc6159618bad4a559ff81"  # of text8.zip
TEXT8_LENGTH = 100_000_000
SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
SHAKESPEARE_MD5 = "6fb458f1232090904fb40fe944165e91"
SPLIT = (0.90, 0.05, 0.05)  # text8: first 90M train, next 5M val, last 5M test

_LOOKUP = np.zeros(256, dtype=np.uint8)  # byte -> index; anything outside a-z/A-Z -> 0 (space)
_LOOKUP[np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", np.uint8)] = np.arange(1, 27)
_LOOKUP[np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", np.uint8)] = np.arange(1, 27)


def text_to_indices(data: bytes | str, collapse_spaces: bool = False) -> np.ndarray:
    """text8 preprocessing as uint8 indices: a–z (any case) -> 1..26, everything else -> 0."""
    if isinstance(data, str):
        data = data.encode("ascii", errors="replace")  # one byte per character
    idx = _LOOKUP[np.frombuffer(data, dtype=np.uint8)]
    if collapse_spaces and len(idx):
        keep = np.ones(len(idx), dtype=bool)
        keep[1:] = (idx[1:] != 0) | (idx[:-1] != 0)
        idx = idx[keep]
    return idx


def encode_text(text: str) -> torch.Tensor:
    """A string -> int64 indices, one per character (text8 preprocessing, no collapsing)."""
    return torch.from_numpy(text_to_indices(text).astype(np.int64))


def decode_text(indices, space: str = " ") -> str | list[str]:
    """Indices (seq_len,) -> str, or (batch, seq_len) -> list of str. Index 0 is shown as
    `space` (' ' by default; '_' as in BFN's samples)."""
    idx = torch.as_tensor(indices).long().cpu()
    if idx.numel() and (idx.min() < 0 or idx.max() >= len(ALPHABET)):
        raise ValueError(f"text indices must lie in [0, {len(ALPHABET) - 1}]")
    if idx.ndim > 1:
        return [decode_text(row, space) for row in idx]
    letters = space + ALPHABET[1:]
    return "".join(letters[i] for i in idx.tolist())


class TextChunks(Dataset):
    """Windows of `seq_len` characters of an index array starting every `stride` characters
    (default `seq_len`: non-overlapping chunks, the tail dropped; 1: every offset, N − L + 1
    windows — BFN's official Text8Dataset has N − L, leaving out the last one)."""

    def __init__(self, indices: np.ndarray, seq_len: int, stride: int | None = None):
        self.data, self.seq_len = torch.from_numpy(np.ascontiguousarray(indices)), seq_len
        self.stride = stride or seq_len
        if self.stride < 1:
            raise ValueError(f"train_stride must be a positive number of characters, "
                             f"got {stride}")

    def __len__(self) -> int:
        if len(self.data) < self.seq_len:
            return 0
        return (len(self.data) - self.seq_len) // self.stride + 1

    def __getitem__(self, i):
        if not 0 <= i < len(self):
            raise IndexError(i)
        start = i * self.stride
        return self.data[start : start + self.seq_len].long(), torch.tensor(-1)


def _text_info(name: str, seq_len: int) -> DatasetInfo:
    return DatasetInfo(
        name=name, data_shape=(seq_len,), kind="text", num_classes=len(ALPHABET), decode=decode_text
    )


def _split(indices: np.ndarray, seq_len: int,
           train_stride: int | None = None) -> tuple[TextChunks, TextChunks, TextChunks]:
    """Contiguous 90% / 5% / 5% split (for text8: 90M / 5M / 5M characters); training windows
    every `train_stride` characters, validation and test windows non-overlapping."""
    n_train, n_val = int(len(indices) * SPLIT[0]), int(len(indices) * SPLIT[1])
    parts = indices[:n_train], indices[n_train : n_train + n_val], indices[n_train + n_val :]
    return (TextChunks(parts[0], seq_len, train_stride), TextChunks(parts[1], seq_len),
            TextChunks(parts[2], seq_len))


class TextFileData(DataSource):
    """Any local text file (`root` = its path), text8-style, split 90/5/5 in reading order."""

    def __init__(self, root=None, seq_len: int = 256, collapse_spaces: bool = True,
                 train_stride: int | None = None):
        if root is None:
            raise ValueError("text needs root=<path of a text file>")
        self.path, self.seq_len, self.collapse_spaces = Path(root), seq_len, collapse_spaces
        self.train_stride = train_stride
        self.info = _text_info(self.path.stem, seq_len)

    def _read(self) -> bytes:
        if not self.path.is_file():
            raise DatasetNotFoundError(f"text file {self.path} not found")
        return self.path.read_bytes()

    def load(self):
        return _split(text_to_indices(self._read(), self.collapse_spaces), self.seq_len,
                      self.train_stride)


class TinyShakespeareData(TextFileData):
    """char-rnn's tinyshakespeare (1,115,394 characters) as text8-style text, split 90/5/5.
    Read from `tinyshakespeare.txt` in the `text` data folder, downloaded when missing."""

    filename, folder = "tinyshakespeare.txt", "text"

    def __init__(
        self,
        root=None,
        seq_len: int = 256,
        collapse_spaces: bool = True,
        download: bool = True,
        train_stride: int | None = None,
    ):
        self.root, self.seq_len, self.collapse_spaces = root, seq_len, collapse_spaces
        self.download, self.train_stride = download, train_stride
        self.info = _text_info("tinyshakespeare", seq_len)

    def _locate(self) -> Path:
        for d in search_dirs(self.folder, self.root):
            if (d / self.filename).is_file():
                path = d / self.filename
                if md5_of_file(path) != SHAKESPEARE_MD5:
                    raise DatasetNotFoundError(f"{path} fails its md5 check ({SHAKESPEARE_MD5})")
                return path
        dest = download_dir(self.folder, self.root)
        message = (
            f"tinyshakespeare: {self.filename} not found in "
            f"{', '.join(map(str, search_dirs(self.folder, self.root)))}; put {SHAKESPEARE_URL} "
            f"at {dest / self.filename}"
        )
        return download_or_explain(message, self.download, lambda: fetch(
            [SHAKESPEARE_URL], dest, self.filename, SHAKESPEARE_MD5))

    def prepare(self) -> None:
        self._locate()

    def _read(self) -> bytes:
        return self._locate().read_bytes()


class Text8Data(DataSource):
    """text8 (the first 10⁸ characters of cleaned English Wikipedia), 27 symbols: first 90M
    characters train, next 5M val, last 5M test, in chunks of `seq_len` (256); training windows
    every `train_stride` characters when set (1: every offset, as the official BFN code).

    Reads `text8.zip` (md5 checked) or the unzipped `text8` (length and alphabet checked) from
    the `text8` data folder; downloads text8.zip from `TEXT8_URL` when missing.
    """

    folder = "text8"

    def __init__(self, root=None, seq_len: int = 256, download: bool = True,
                 train_stride: int | None = None):
        self.root, self.seq_len, self.download = root, seq_len, download
        self.train_stride = train_stride
        self.info = _text_info("text8", seq_len)

    def _locate(self) -> Path:
        for d in search_dirs(self.folder, self.root):
            if (d / "text8.zip").is_file():
                path = d / "text8.zip"
                if md5_of_file(path) != TEXT8_MD5:
                    raise DatasetNotFoundError(
                        f"{path} fails its md5 check (expected {TEXT8_MD5}); delete it and "
                        f"download it again from {TEXT8_URL}."
                    )
                return path
            if (d / "text8").is_file():
                return d / "text8"
        dest = download_dir(self.folder, self.root)
        message = (
            f"text8: not found in {', '.join(map(str, search_dirs(self.folder, self.root)))}. "
            f"Download {TEXT8_URL} and put text8.zip (or the unzipped text8) in {dest} "
            "(or pass root=..., or set BAYESGEN_DATA_DIR to a folder holding 'text8/')"
        )
        return download_or_explain(message, self.download, lambda: fetch(
            [TEXT8_URL], dest, "text8.zip", TEXT8_MD5))

    def prepare(self) -> None:
        self._locate()

    def load(self):
        path = self._locate()
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as z:
                data = z.read("text8")
        else:
            data = path.read_bytes()
            raw = np.frombuffer(data, np.uint8)
            if len(raw) != TEXT8_LENGTH or not np.all((raw == 32) | ((raw >= 97) & (raw <= 122))):
                raise DatasetNotFoundError(
                    f"{path} is not text8 ({TEXT8_LENGTH:,} characters of a–z and space); "
                    f"replace it by the text8 inside {TEXT8_URL}."
                )
        return _split(text_to_indices(data), self.seq_len, self.train_stride)
