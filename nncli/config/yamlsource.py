"""YAML with line numbers: plain Python data plus the line of every node, by YAML path.

A path is a tuple of keys and indices, `("model", 2, "linear", "units")`, written
`model[2].linear.units`.

What a file may ask for is bounded before it is built (configs, sweep files and `--set` values
alike): nesting at most `MAX_DEPTH` levels, and aliases (`*name`) expanding it to at most
`MAX_EXPANSION` times its own size plus `EXPANSION_ALLOWANCE` (counted in values and the
characters of strings), so that a "billion laughs" file is one config error, not gigabytes.
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from nncli.errors import ConfigError

YamlPath = tuple

MAX_DEPTH = 64  # nested mappings and lists; a config needs five or six
MAX_EXPANSION = 2  # what aliases may make of a file: this many times its size, plus...
EXPANSION_ALLOWANCE = 100_000  # ...this much (values, and characters of strings)
MAX_BYTES = 1 << 20  # the largest config or sweep file read (1 MiB)

# How messages name the overrides of a config: `--set` on the command line, `overrides` from
# Python (`nncli.train(config, overrides={...})`). A `Source` carries the name it is given.
CLI_OVERRIDES = "--set"


def how_to_set(key: str, value: str, label: str = CLI_OVERRIDES) -> str:
    """How the user sets `key` to `value`: `--set train.epochs=N`, or from Python
    `overrides={'train.epochs': N}` (`label` is what the caller calls its overrides)."""
    return f"{label} {key}={value}" if label == CLI_OVERRIDES else f"{label}={{'{key}': {value}}}"


class _TooDeep(Exception):
    def __init__(self, line: int):
        super().__init__(line)
        self.line = line


class Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading `1e-3` as a float (YAML 1.1 wants `1.0e-3` and would
    otherwise give the string "1e-3": a trap for every learning rate), and composing at most
    `MAX_DEPTH` levels of nesting (PyYAML recurses once per level: 500 would overflow)."""

    _depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooDeep(self.peek_event().start_mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


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


def load_value(text: str, label: str = CLI_OVERRIDES):
    """One YAML value, as `--set` reads it (bounded as a file is); None for no value. `label`
    names the overrides in messages."""
    source = _parse(text, label, empty_ok=True)
    return None if source is None else source.data


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
    overrides_label: str = CLI_OVERRIDES  # how messages name its overrides: `--set`, `overrides`

    def location(self, path: YamlPath) -> str:
        """`file:line` of the nearest node on `path` (`--set` for an overridden value)."""
        path = tuple(path)
        if any(path[:n] in self.overridden for n in range(len(path) + 1)):
            return self.overrides_label  # the value, or a mapping or list around it, was overridden
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                return f"{self.file}:{self.lines[path[:n]]}"
        return self.file

    def error(self, path: YamlPath, message: str) -> ConfigError:
        return ConfigError(message, format_path(path), self.location(path))


class _Budget:
    """What is left of the values and characters a file may expand to, and the nodes being
    walked (an alias among them refers to itself)."""

    def __init__(self, text: str, file: str):
        self.limit = MAX_EXPANSION * len(text) + EXPANSION_ALLOWANCE
        self.left = self.limit
        self.file = file
        self.open: set[int] = set()

    def spend(self, node: yaml.Node, depth: int) -> None:
        line = node.start_mark.line + 1
        if id(node) in self.open:
            raise ConfigError("not valid YAML: an alias refers to itself", location=f"{self.file}:{line}")
        if depth > MAX_DEPTH:
            raise ConfigError(f"nested more than {MAX_DEPTH} levels deep (through aliases)",
                              location=f"{self.file}:{line}")
        self.left -= 1 + (len(node.value) if isinstance(node, yaml.ScalarNode) else 0)
        if self.left < 0:
            raise ConfigError(
                f"aliases expand this file past {self.limit:,} values and characters ({MAX_EXPANSION}"
                f" times its size plus {EXPANSION_ALLOWANCE:,}): refused, as an alias bomb would be",
                location=f"{self.file}:{line}",
            )


def _walk(node: yaml.Node, path: YamlPath, lines: dict, budget: _Budget) -> object:
    budget.spend(node, len(path))
    file = budget.file
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.ScalarNode):
        return _scalar(node, path, file)
    budget.open.add(id(node))
    try:
        if isinstance(node, yaml.SequenceNode):
            return [_walk(item, (*path, i), lines, budget) for i, item in enumerate(node.value)]
        _no_duplicate_keys(node, file)
        _flatten_merge_keys(node, file)  # merged keys come first, so the mapping's own keys win
        out = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(
                    "mapping keys must be plain names, not lists or mappings",
                    location=f"{file}:{key_node.start_mark.line + 1}",
                )
            budget.spend(key_node, len(path))
            key = _scalar(key_node, path, file)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise ConfigError(
                    f"mapping keys must be plain names, got {key!r}",
                    location=f"{file}:{key_node.start_mark.line + 1}",
                )
            lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = _walk(value_node, (*path, key), lines, budget)
        return out
    finally:
        budget.open.discard(id(node))


def _scalar(node: yaml.ScalarNode, path: YamlPath, file: str):
    try:
        return _construct(node)
    except ValueError:  # an integer of more than 4,300 digits, which int() refuses
        digits = sum(c.isdigit() for c in node.value)
        raise ConfigError(
            f"cannot read {node.value[:12]}...: a number of {digits:,} digits is too long to be one",
            format_path(path) or None, f"{file}:{node.start_mark.line + 1}",
        ) from None


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


MERGE = "tag:yaml.org,2002:merge"


def _flatten_merge_keys(node: yaml.MappingNode, file: str) -> None:
    """Resolve YAML merge keys (`<<: *defaults`) in place, as PyYAML's constructor does, but
    keeping one entry per key (the one that wins: the mapping's own, else the first merged):
    PyYAML keeps them all, and mappings that merge each other twice would double at each level."""
    merged: list = []  # each merge key's mappings, in order
    own: list = []
    for key_node, value_node in node.value:
        if key_node.tag != MERGE:
            own.append((key_node, value_node))
            continue
        sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        for sub in sources:
            if not isinstance(sub, yaml.MappingNode):
                raise ConfigError("not valid YAML: a merge key (<<) takes a mapping or a list of mappings",
                                  location=f"{file}:{sub.start_mark.line + 1}")
            _flatten_merge_keys(sub, file)
        merged += [pair for sub in sources for pair in sub.value]
    if not merged:
        return
    entries: dict = {}  # the first merged entry of a key wins, and the mapping's own over all
    own_keys = {id(key_node) for key_node, _ in own}
    for key_node, value_node in merged + own:
        if key_node.tag == "tag:yaml.org,2002:value":
            key_node.tag = "tag:yaml.org,2002:str"
        name = (key_node.tag, key_node.value) if isinstance(key_node, yaml.ScalarNode) else id(key_node)
        if name not in entries or id(key_node) in own_keys:
            entries[name] = (key_node, value_node)
    node.value = list(entries.values())


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
        if path.is_file() and path.stat().st_size > MAX_BYTES:
            raise ConfigError(f"{path} holds {path.stat().st_size:,} bytes: more than a config"
                              f" or sweep file may ({MAX_BYTES:,})")
        # read with a bound: a pipe (`<(...)`) has no size to check first, and /dev/zero no end
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            raise ConfigError(f"{path} holds more than {MAX_BYTES:,} bytes: more than a config or"
                              " sweep file may")
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {path}: {err}") from None
    source = parse_yaml(text, str(path))
    source.folder = path.resolve().parent
    return source


def parse_yaml(text: str, file: str) -> Source:
    source = _parse(text, file)
    assert source is not None
    return source


def _parse(text: str, file: str, empty_ok: bool = False) -> Source | None:
    """`text` read as YAML, bounded (see the module docstring); None for an empty document
    where `empty_ok`. A copy of what is kept for the text: a sweep reads its base once per trial."""
    source = _parsed(text, file)
    if source is None and not empty_ok:
        raise ConfigError("the config file is empty", location=file)
    return copy.deepcopy(source)


@functools.lru_cache(maxsize=16)
def _parsed(text: str, file: str) -> Source | None:
    try:
        node = yaml.compose(text, Loader=Loader)
    except _TooDeep as err:
        where = f"{file}:{err.line}"
        raise ConfigError(f"nested more than {MAX_DEPTH} levels deep", location=where) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else file
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"not valid YAML: {problem}", location=where) from None
    if node is None:
        return None
    lines: dict = {}
    try:
        data = _walk(node, (), lines, _Budget(text, file))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else file
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"not valid YAML: {problem}", location=where) from None
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
    label = source.overrides_label
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{label} expects KEY=VALUE, got {assignment!r}")
    try:
        path = parse_path(key.strip())
        value = load_value(text, label) if text.strip() else None
    except ValueError as err:
        raise ConfigError(f"{label} {assignment!r}: {err}") from None
    except ConfigError as err:
        raise ConfigError(f"{label} {key.strip()}: {err.message}") from None
    set_value(source, path, value, key)


# Top-level sections that may be a bare name (`optimizer: adam`) standing for {type: adam}.
BARE_COMPONENTS = ("optimizer", "loss", "schedule")


def set_value(source: Source, path: YamlPath, value: object, key: str | None = None) -> None:
    """Set the node at `path` of `source.data` to `value`, making the mappings on the way;
    errors name the override as `--set {key}` (the source's `overrides_label`)."""
    key = key or format_path(path)
    label = source.overrides_label
    node = source.data
    for depth, part in enumerate(path[:-1]):
        child_path = path[: depth + 1]
        if isinstance(part, int):
            if not isinstance(node, list) or not -len(node) <= part < len(node):
                raise ConfigError(f"{label} {key}: {format_path(child_path)} does not exist")
            if isinstance(node[part], str) and isinstance(path[depth + 1], str):
                # `- relu` given as a bare name: `--set model[1].relu.x=...` needs a mapping
                node[part] = {node[part]: {}}
            node = node[part]
        else:
            if not isinstance(node, dict):
                raise ConfigError(f"{label} {key}: {format_path(path[:depth])} is not a mapping")
            if node.get(part) is None:
                node[part] = {}
            elif depth == 0 and part in BARE_COMPONENTS and isinstance(node[part], str):
                # `optimizer: adam` given as a bare name: `--set optimizer.lr=...` needs a mapping
                node[part] = {"type": node[part]}
            node = node[part]
    last = path[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or not -len(node) <= last < len(node):
            raise ConfigError(f"{label} {key}: {format_path(path)} does not exist")
    elif not isinstance(node, dict):
        raise ConfigError(f"{label} {key}: {format_path(path[:-1])} is not a mapping")
    node[last] = value
    source.overridden.add(_absolute(path, source.data))
