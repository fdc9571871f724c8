"""YAML with line numbers: plain Python data plus the line of every node, by YAML path.

A path is a tuple of keys and indices, `("model", 2, "linear", "units")`, written
`model[2].linear.units`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from nncli.errors import ConfigError

YamlPath = tuple

# How messages name the overrides of a config: `--set` on the command line, `overrides` from
# Python (`nncli.train(config, overrides={...})`, which sets it with `overrides_named`).
_overrides_name: ContextVar[str] = ContextVar("overrides_name", default="--set")


@contextlib.contextmanager
def overrides_named(name: str) -> Iterator[None]:
    """Within this block, messages call the overrides `name` instead of `--set`."""
    token = _overrides_name.set(name)
    try:
        yield
    finally:
        _overrides_name.reset(token)


def overrides_name() -> str:
    """`--set`, or what the caller calls its overrides (`overrides_named`)."""
    return _overrides_name.get()


def how_to_set(key: str, value: str) -> str:
    """How the user sets `key` to `value`: `--set train.epochs=N`, or from Python
    `overrides={'train.epochs': N}`."""
    name = overrides_name()
    return f"{name} {key}={value}" if name == "--set" else f"{name}={{'{key}': {value}}}"


class Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading `1e-3` as a float (YAML 1.1 wants `1.0e-3` and would
    otherwise give the string "1e-3": a trap for every learning rate)."""


Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_value(text: str):
    """One YAML value, as `--set` reads it."""
    return yaml.load(text, Loader=Loader)


def format_path(path: YamlPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_path(text: str) -> YamlPath:
    """`model[0].linear.units` -> ("model", 0, "linear", "units")."""
    parts: list = []
    for chunk in text.split("."):
        if not chunk:
            raise ValueError(f"empty component in {text!r}")
        name, _, rest = chunk.partition("[")
        if name:
            parts.append(name)
        while rest:
            index, close, rest = rest.partition("]")
            if not close or not index.lstrip("-").isdigit():
                raise ValueError(f"bad index in {text!r}")
            parts.append(int(index))
            if rest:
                if not rest.startswith("["):
                    raise ValueError(f"unexpected {rest!r} in {text!r}")
                rest = rest[1:]
    return tuple(parts)


@dataclass
class Source:
    """The data of a YAML document and where each of its nodes stands."""

    data: object
    file: str
    lines: dict[YamlPath, int] = field(default_factory=dict)
    overridden: set[YamlPath] = field(default_factory=set)
    folder: Path | None = None  # the folder of the file read, against which its paths resolve

    def location(self, path: YamlPath) -> str:
        """`file:line` of the nearest node on `path` (`--set` for an overridden value)."""
        path = tuple(path)
        if any(path[:n] in self.overridden for n in range(len(path) + 1)):
            return overrides_name()  # the value, or a mapping or list around it, was overridden
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                return f"{self.file}:{self.lines[path[:n]]}"
        return self.file

    def error(self, path: YamlPath, message: str) -> ConfigError:
        return ConfigError(message, format_path(path), self.location(path))


def _walk(node: yaml.Node, path: YamlPath, lines: dict, file: str) -> object:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        _no_duplicate_keys(node, file)
        _flatten_merge_keys(node)  # merged keys come first, so the mapping's own keys win
        out = {}
        for key_node, value_node in node.value:
            key = _construct(key_node)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise ConfigError(
                    f"mapping keys must be plain names, got {key!r}",
                    location=f"{file}:{key_node.start_mark.line + 1}",
                )
            lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = _walk(value_node, (*path, key), lines, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_walk(item, (*path, i), lines, file) for i, item in enumerate(node.value)]
    return _construct(node)


def _no_duplicate_keys(node: yaml.MappingNode, file: str) -> None:
    """PyYAML keeps the last of two equal keys without a word; a config should not."""
    seen: dict = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = _construct(key_node)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise ConfigError(
                f"duplicate key {key!r} (the first is on line {seen[key]})", location=f"{file}:{line}"
            )
        seen[key] = line


def _flatten_merge_keys(node: yaml.MappingNode) -> None:
    """Resolve YAML merge keys (`<<: *defaults`) in place, as PyYAML's constructor does."""
    loader = Loader("")
    try:
        loader.flatten_mapping(node)
    finally:
        loader.dispose()


def _construct(node: yaml.Node):
    loader = Loader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def load_yaml(path: str | Path) -> Source:
    """Read a YAML file; any failure is a `ConfigError` naming the file (and line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {path}: {err}") from None
    source = parse_yaml(text, str(path))
    source.folder = path.resolve().parent
    return source


def parse_yaml(text: str, file: str) -> Source:
    try:
        node = yaml.compose(text, Loader=Loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else file
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"not valid YAML: {problem}", location=where) from None
    if node is None:
        raise ConfigError("the config file is empty", location=file)
    lines: dict = {}
    try:
        data = _walk(node, (), lines, file)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else file
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"not valid YAML: {problem}", location=where) from None
    except RecursionError:
        raise ConfigError("not valid YAML: an alias refers to itself", location=file) from None
    return Source(data, file, lines)


def _absolute(path: YamlPath, data) -> YamlPath:
    """`path` with negative list indices replaced by their positive equivalents."""
    out, node = [], data
    for part in path:
        if isinstance(part, int) and isinstance(node, list) and part < 0:
            part += len(node)
        out.append(part)
        node = node[part] if isinstance(node, dict | list) else None
    return tuple(out)


def apply_override(source: Source, assignment: str) -> None:
    """Apply `KEY=VALUE` (dotted path with indices; VALUE parsed as YAML) to `source.data`."""
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{overrides_name()} expects KEY=VALUE, got {assignment!r}")
    try:
        path = parse_path(key.strip())
        value = load_value(text) if text.strip() else None
    except (ValueError, yaml.YAMLError) as err:
        raise ConfigError(f"{overrides_name()} {assignment!r}: {err}") from None
    set_value(source, path, value, key)


def set_value(source: Source, path: YamlPath, value: object, key: str | None = None) -> None:
    """Set the node at `path` of `source.data` to `value`, making the mappings on the way;
    errors name the override as `--set {key}` (`overrides_name`)."""
    key = key or format_path(path)
    node = source.data
    for depth, part in enumerate(path[:-1]):
        child_path = path[: depth + 1]
        if isinstance(part, int):
            if not isinstance(node, list) or not -len(node) <= part < len(node):
                raise ConfigError(f"{overrides_name()} {key}: {format_path(child_path)} does not exist")
            if isinstance(node[part], str) and isinstance(path[depth + 1], str):
                # `- relu` given as a bare name: `--set model[1].relu.x=...` needs a mapping
                node[part] = {node[part]: {}}
            node = node[part]
        else:
            if not isinstance(node, dict):
                raise ConfigError(f"{overrides_name()} {key}: {format_path(path[:depth])} is not a mapping")
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
    last = path[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or not -len(node) <= last < len(node):
            raise ConfigError(f"{overrides_name()} {key}: {format_path(path)} does not exist")
    elif not isinstance(node, dict):
        raise ConfigError(f"{overrides_name()} {key}: {format_path(path[:-1])} is not a mapping")
    node[last] = value
    source.overridden.add(_absolute(path, source.data))
