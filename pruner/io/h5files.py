"""HDF5 plumbing for model files, with h5py and numpy only (no Keras).

Exact attribute copies, Keras' chunked attributes, and copying a file with some
datasets replaced.

`copy_edited` is how a pruned file is written: every group, attribute and dataset of
the source is copied as it is (H5Ocopy for untouched subtrees), except the datasets
given new values, which are recreated under the same name, dtype, filters and
attributes, and the members and attributes left out on purpose.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np

Replacements = Mapping[str, np.ndarray]
# A weight's place in the seam's `weights`: (layer path, index in that layer's list).
WeightRef = tuple[str, int]


# {layer path: [its weight arrays, in Keras order]}: what model files are read into and
# written from.
Weights = dict[str, list[np.ndarray]]


class Layout:
    """Where each weight of a read model lives: dataset path (in the HDF5 file that
    holds the weights) -> WeightRef, and what writing it back leaves out."""

    def __init__(self) -> None:
        self.datasets: dict[str, WeightRef] = {}
        self.dropped: list[str] = []

    def counts(self) -> dict[str, int]:
        """Layer path -> how many weights it has."""
        counts: dict[str, int] = {}
        for owner, index in self.datasets.values():
            counts[owner] = max(counts.get(owner, 0), index + 1)
        return counts

    def replacements(self, weights: Mapping[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
        """Dataset path -> its new value, from weights of the seam's structure."""
        return {path: weights[owner][index] for path, (owner, index) in self.datasets.items()}


def text(value: Any) -> str:
    """An attribute value as text (h5py gives str, bytes or numpy bytes)."""
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return text(value[()])
    return str(value)


def string_list(group: h5py.Group, name: str) -> list[str] | None:
    """A list-of-strings attribute as Keras writes it: whole, or split into `name0`,
    `name1`, ... when it is too large for one HDF5 object header. None when absent."""
    if name in group.attrs:
        return [text(item) for item in np.atleast_1d(group.attrs[name])]
    if f"{name}0" not in group.attrs:
        return None
    values: list[str] = []
    chunk = 0
    while f"{name}{chunk}" in group.attrs:
        values += [text(item) for item in np.atleast_1d(group.attrs[f"{name}{chunk}"])]
        chunk += 1
    return values


def copy_attrs(
    source: h5py.HLObject, target: h5py.HLObject, skip: frozenset[str] = frozenset()
) -> None:
    """Copy every attribute (in the source's order) with its exact HDF5 type."""
    for name in source.attrs:
        if name not in skip:
            attr = source.attrs.get_id(name)
            target.attrs.create(name, source.attrs[name], shape=attr.shape, dtype=attr.dtype)


def write_string_attr(target: h5py.HLObject, name: str, value: str, like: h5py.h5a.AttrID) -> None:
    """Set a string attribute in the string type of `like` (variable or fixed length,
    ascii or utf-8), so that an edited attribute keeps the file's own dialect."""
    info = h5py.check_string_dtype(like.dtype)
    encoding = info.encoding if info is not None else "utf-8"
    data = value.encode("utf-8")
    if info is not None and info.length is None:  # variable length, as h5py 3 writes
        vlen = h5py.string_dtype(encoding)
        target.attrs.create(name, data if encoding == "ascii" else value, dtype=vlen)
        return
    fixed = h5py.string_dtype(encoding, length=max(1, len(data)))  # as h5py 2 / Keras 2.2.4
    try:
        target.attrs.create(name, np.array(data, dtype=fixed), dtype=fixed)
    except (ValueError, RuntimeError):  # beyond the object header's limit: variable length
        target.attrs.create(name, data, dtype=h5py.string_dtype(encoding))


def _group_options(source: h5py.Group) -> dict[str, Any]:
    plist = source.id.get_create_plist()
    return {"track_order": True} if plist.get_link_creation_order() else {}


def _replace_dataset(
    source: h5py.Dataset, parent: h5py.Group, name: str, value: np.ndarray
) -> None:
    """Recreate `source` under `parent/name` holding `value` (same dtype, filters,
    attributes; the new shape)."""
    value = np.asarray(value)
    if value.dtype != source.dtype:
        if not np.can_cast(value.dtype, source.dtype, casting="same_kind"):
            raise ValueError(
                f"new value for {source.name} is {value.dtype}, the file holds {source.dtype}"
            )
        value = value.astype(source.dtype)
    options: dict[str, Any] = {}
    if source.chunks is not None and value.size:
        options["chunks"] = True
        for key in ("compression", "compression_opts", "shuffle", "fletcher32", "scaleoffset"):
            setting = getattr(source, key)
            if setting not in (None, False):
                options[key] = setting
    created = parent.create_dataset(name, data=value, dtype=source.dtype, **options)
    copy_attrs(source, created)


def copy_edited(
    source: h5py.Group,
    target: h5py.Group,
    replacements: Replacements,
    *,
    drop: frozenset[str] = frozenset(),
) -> None:
    """Copy the members of `source` into `target` (both groups; the attributes of
    `source` itself are the caller's), recreating the datasets whose path (relative
    to the file root, no leading slash) is in `replacements`, leaving out the members
    whose path is in `drop`, and copying every other subtree whole."""
    touched = {path.rpartition("/")[0] for path in [*replacements, *drop]}
    for path in list(touched):
        while path:
            path = path.rpartition("/")[0]
            touched.add(path)
    _copy_members(source, target, replacements, drop, touched)


def _copy_members(
    source: h5py.Group,
    target: h5py.Group,
    replacements: Replacements,
    drop: frozenset[str],
    touched: set[str],
) -> None:
    for name, member in source.items():
        path = member.name.lstrip("/")
        if path in drop:
            continue
        if isinstance(member, h5py.Dataset) and path in replacements:
            _replace_dataset(member, target, name, replacements[path])
        elif isinstance(member, h5py.Group) and path in touched:
            group = target.create_group(name, **_group_options(member))
            copy_attrs(member, group)
            _copy_members(member, group, replacements, drop, touched)
        else:
            source.copy(member, target, name=name)  # H5Ocopy: attributes and all


def create_like(path: str | os.PathLike[str], source: h5py.File) -> h5py.File:
    """A new HDF5 file whose root orders its members as the source's does."""
    return h5py.File(path, "w", **_group_options(source))


class FileWindow(io.RawIOBase):
    """Read-only, seekable view of `length` bytes at `offset` of an open file: lets
    h5py read a `.keras` archive's stored (uncompressed) weights file in place."""

    def __init__(self, fd: int, offset: int, length: int) -> None:
        super().__init__()
        self._fd, self._offset, self._length, self._position = fd, offset, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), self._length - self._position)
        if wanted <= 0:
            return 0
        got = os.preadv(self._fd, [view[:wanted]], self._offset + self._position)
        self._position += got
        return got
