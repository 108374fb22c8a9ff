"""`.keras` model archives, read into (config, weights) and written back edited.

Keras 3's format, which tf.keras >= 2.13 also writes (its v3 format).

The archive is a zip of `metadata.json` (`keras_version`, `date_saved`),
`config.json` (the serialized model, plus `compile_config` when compiled) and
`model.weights.h5`, in that order (plus `assets/` for layers that have any). The
weights file mirrors how Keras walks the model: a model's layers are the group
`layers/` (`_layer_checkpoint_dependencies/` from tf.keras 2.13), one subgroup per
tracked layer (`model.layers`: a Sequential leaves out its InputLayer), named after
the layer's class in snake case and numbered from the second of a class on
(`conv2d`, `conv2d_1`, ...; never after the layer's name), in layer order. A layer
group holds its own variables as `vars/0`, `vars/1`, ... (trainable then
non-trainable: `layer.get_weights()` order), Keras 3 records the layer's name as
the `name` attribute of `vars`, wrapped layers follow in their attribute's group
(`time_distributed/layer/vars/0`), and a nested model repeats the pattern
(`layers/functional/layers/conv2d/vars/0`). A compiled model adds `optimizer/` at
the root (tf.keras also `metrics/`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py

from prunejob_contract.errors import InvalidModel
from pruner.io import h5files, layerpaths
from pruner.io.h5files import Layout, Weights

CONFIG = "config.json"
METADATA = "metadata.json"
WEIGHTS = "model.weights.h5"
OPTIMIZER_GROUP = "optimizer"
COMPILE_CONFIG = "compile_config"
LAYERS_GROUPS = ("layers", "_layer_checkpoint_dependencies")
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # zip local file header, 30 bytes


def read(path: Path) -> tuple[dict[str, Any], Weights, str | None, Layout]:
    """(config, weights, keras_version, layout) of a `.keras` archive."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise InvalidModel(
            f"cannot load {path} as a Keras model: it starts like a .keras zip but is "
            "damaged (truncated or corrupt); copy or export the model again"
        ) from None
    with archive:
        names = set(archive.namelist())
        if CONFIG not in names:
            raise InvalidModel(f"{path} is a zip file but not a Keras model (no {CONFIG})")
        if WEIGHTS not in names:
            other = sorted(name for name in names if name.startswith("model.weights"))
            stored = f" (its weights are {', '.join(other)}: only {WEIGHTS} is supported)"
            raise InvalidModel(f"{path} has no {WEIGHTS}{stored if other else ''}")
        config = _json_member(path, archive, CONFIG)
        if not isinstance(config, dict) or "config" not in config:
            raise InvalidModel(f"{path}: its {CONFIG} is not a Keras model config")
        version = None
        if METADATA in names:
            metadata = _json_member(path, archive, METADATA)
            if isinstance(metadata, dict) and metadata.get("keras_version") is not None:
                version = str(metadata["keras_version"])
        layout = Layout()
        if config.get(COMPILE_CONFIG):  # an uncompiled Sequential stores {}
            layout.dropped.append("training config")
        keras3 = version is None or not version.startswith("2.")
        with _open_member(path, archive, WEIGHTS) as handle:
            if OPTIMIZER_GROUP in handle:
                layout.dropped.append("optimizer state")
            weights = _read_weights(path, handle, config, keras3, layout)
        return config, weights, version, layout


def _json_member(path: Path, archive: zipfile.ZipFile, name: str) -> Any:
    try:
        return json.loads(archive.read(name))
    except (ValueError, zipfile.BadZipFile, OSError) as err:
        raise InvalidModel(f"cannot load {path} as a Keras model: bad {name} ({err})") from None


@contextlib.contextmanager
def _open_member(path: Path, archive: zipfile.ZipFile, name: str) -> Iterator[h5py.File]:
    """The archive's weights file opened by h5py in place: a window on the archive's
    bytes when the member is stored (Keras stores it uncompressed), else zipfile's
    decompressing stream."""
    info = archive.getinfo(name)
    try:
        with contextlib.ExitStack() as stack:
            if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:
                fd = os.open(path, os.O_RDONLY)
                stack.callback(os.close, fd)
                header = os.pread(fd, _LOCAL_HEADER.size, info.header_offset)
                fields = _LOCAL_HEADER.unpack(header)
                if fields[0] != b"PK\x03\x04":
                    raise OSError("bad local header")
                start = info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10]
                stream: Any = h5files.FileWindow(fd, start, info.file_size)
            else:
                stream = stack.enter_context(archive.open(info))
            handle = stack.enter_context(h5py.File(stream, "r"))
            yield handle
    except (OSError, zipfile.BadZipFile) as err:
        raise InvalidModel(
            f"cannot load {path} as a Keras model: its {name} is unreadable ({err})"
        ) from None


def _read_weights(
    path: Path, handle: h5py.File, config: dict[str, Any], keras3: bool, layout: Layout
) -> Weights:
    weights: Weights = {}
    _read_model(path, handle, "", config, "", keras3, layout, weights)
    return weights


def _read_model(
    path: Path,
    group: h5py.Group,
    where: str,
    entry: dict[str, Any],
    prefix: str,
    keras3: bool,
    layout: Layout,
    weights: Weights,
) -> None:
    """Read the layers of the model `entry`, whose group is `group` at `where` (its
    path in the file, "" for the root)."""
    layers = layerpaths.tracked_layers(entry)
    found = [name for name in LAYERS_GROUPS if isinstance(group.get(name), h5py.Group)]
    if not found:
        return  # a model without variables
    container_path = f"{where}{found[0]}/"
    children = dict(group[found[0]].items())
    groups = layerpaths.unique_names(
        [layerpaths.snake_case(str(layer.get("class_name", "")), keras3=keras3) for layer in layers]
    )
    for layer, group_name in zip(layers, groups, strict=True):
        name = layerpaths.layer_name(layer)
        layer_group = children.pop(group_name, None)
        if not isinstance(layer_group, h5py.Group):
            continue  # Keras writes no group for a layer without variables
        members = dict(layer_group.items())
        own = members.get("vars")
        recorded = own.attrs.get("name") if isinstance(own, h5py.Group) else None
        if recorded is not None and h5files.text(recorded) != name:
            raise InvalidModel(
                f"{path}: weights group {container_path}{group_name} is recorded for layer "
                f"{h5files.text(recorded)!r}, the config puts {name!r} there; the archive "
                "does not follow Keras' layout"
            )
        group_path = container_path + group_name
        if layerpaths.model_layers(layer) is not None:
            _read_model(
                path, layer_group, group_path + "/", layer, f"{prefix}{name}/", keras3, layout,
                weights,
            )  # fmt: skip
            continue
        datasets = _layer_datasets(members, group_path)
        for index, (dataset_path, _) in enumerate(datasets):
            layout.datasets[dataset_path] = (prefix + name, index)
        if datasets:
            weights[prefix + name] = [dataset[()] for _, dataset in datasets]
    for group_name, member in children.items():
        if isinstance(member, h5py.Group) and _holds_data(member):
            raise InvalidModel(
                f"{path}: weights group {container_path}{group_name} belongs to no layer of the "
                "config; the archive does not follow Keras' layout"
            )


def _layer_datasets(members: dict[str, Any], group_path: str) -> list[tuple[str, h5py.Dataset]]:
    """(path, dataset) of a layer's variables in `get_weights()` order: its own
    (`vars/0`, `vars/1`, ...), then those of the layers it wraps, in the order Keras
    walks them (attribute names sorted, private ones last); random-seed state is no
    weight."""
    found: list[tuple[str, h5py.Dataset]] = []
    own = members.get("vars")
    if isinstance(own, h5py.Group):
        variables = dict(own.items())
        for key in sorted(variables, key=_index):
            if isinstance(variables[key], h5py.Dataset):
                found.append((f"{group_path}/vars/{key}", variables[key]))
    wrapped = [
        key for key, member in members.items() if key != "vars" and isinstance(member, h5py.Group)
    ]
    for key in sorted(wrapped, key=lambda name: ("~" + name) if name.startswith("_") else name):
        if not key.startswith("seed_generator"):
            found += _layer_datasets(dict(members[key].items()), f"{group_path}/{key}")
    return found


def _index(key: str) -> tuple[int, str]:
    return (int(key), "") if key.isdigit() else (1 << 30, key)


def _holds_data(group: h5py.Group) -> bool:
    found: list[str] = []
    group.visititems(
        lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None
    )
    return bool(found)


def write(
    source: Path, target: Path, config: dict[str, Any], weights: Weights, layout: Layout
) -> None:
    """Write the archive `source` to `target` with `config.json` replaced by `config`
    (without a non-empty `compile_config`) and each weight by its value in `weights`; the
    optimizer state is left out, every other member and group is copied as it is."""
    replacements = layout.replacements(weights)
    edited = {key: value for key, value in config.items() if key != COMPILE_CONFIG or not value}
    with contextlib.ExitStack() as stack:
        archive = stack.enter_context(zipfile.ZipFile(source))
        fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".h5", dir=target.parent)
        os.close(fd)
        stack.callback(os.unlink, temp_name)
        with (
            _open_member(source, archive, WEIGHTS) as original,
            h5files.create_like(temp_name, original) as out,
        ):
            h5files.copy_attrs(original, out)
            h5files.copy_edited(original, out, replacements, drop=frozenset({OPTIMIZER_GROUP}))
        out_zip = stack.enter_context(zipfile.ZipFile(target, "w"))
        for info in archive.infolist():
            if info.filename == CONFIG:
                out_zip.writestr(_same_entry(info), json.dumps(edited).encode())
            elif info.filename == WEIGHTS:
                entry = _same_entry(info)
                entry.file_size = os.path.getsize(temp_name)
                with open(temp_name, "rb") as data, out_zip.open(entry, "w") as dest:
                    shutil.copyfileobj(data, dest, 1 << 20)
            else:
                with archive.open(info) as data, out_zip.open(_same_entry(info), "w") as dest:
                    shutil.copyfileobj(data, dest, 1 << 20)


def _same_entry(info: zipfile.ZipInfo) -> zipfile.ZipInfo:
    """A fresh entry with the name, date, compression and permissions of `info`."""
    entry = zipfile.ZipInfo(info.filename, date_time=info.date_time)
    entry.compress_type = info.compress_type
    entry.external_attr = info.external_attr
    entry.create_system = info.create_system
    entry.file_size = info.file_size  # zipfile picks zip64 from it
    return entry
