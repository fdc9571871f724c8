"""Where a config's data files are: relative paths read from the config's folder, then the
data directory, and stored absolute."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

from nncli.config.schema import Config
from nncli.errors import DataError


def is_path_option(key: str) -> bool:
    """Dataset options naming files: `path` and every `*_path` (csv's labels_path, test_path...)."""
    return key == "path" or key.endswith("_path")


def resolve_data_paths(config: Config, data_dir: Path) -> Config:
    """`config` with its dataset's file options made absolute.

    A relative path is looked up in the config file's folder, then in the data directory; a
    path that is absolute already (a checkpoint's config) is also looked up by its name in the
    data directory when it is no longer there. A file found nowhere is an error naming every
    place looked in.
    """
    options, changed = dict(config.data.options), False
    for key, value in config.data.options.items():
        if not is_path_option(key) or not isinstance(value, str) or not value:
            continue
        given = Path(value).expanduser()
        if given.is_absolute():
            places = [given, Path(data_dir) / given.name]
        else:
            folder = config.source.folder
            places = ([folder / given] if folder is not None else [Path.cwd() / given]) + [
                Path(data_dir) / given
            ]
        found = next((p for p in places if p.is_file()), None)
        if found is None:
            looked = " and ".join(str(p) for p in dict.fromkeys(places))
            raise DataError(
                f"{config.source.location(('data', key))} data.{key}: {value} not found; looked in"
                f" {looked} (relative paths are read from the config's folder, then --data-dir)"
            )
        if str(found.resolve()) != value:
            options[key], changed = str(found.resolve()), True
    if not changed:
        return config
    return replace(config, data=replace(config.data, options=MappingProxyType(options)))
