"""Device profiles: what one kind of chip is, as validated data.

A profile is a YAML file in ``device_profiles/`` (one per device kind). It is checked against ``SCHEMA`` on load;
anything wrong (an unknown key, a missing field, a wrong type, a value out of range) raises one ``ProfileError``
whose message is a single line naming the file, the key path and what was expected::

    device_profiles/bss2.yaml: mismatch.lognormal.gL.neuron: expected a number in [0, 2], got -0.1

The schema and its checks are in ``hw_models.profile_schema``. The validated profile is held as plain nested dicts
(``Profile.data``) with defaults filled in, plus a few typed accessors. ``Profile.sha256`` hashes the canonical JSON of that data, so two files that say the same thing have
the same hash and a gain table can be tied to the exact chip description it was made for.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Union

import yaml

from .files import decode_utf8, read_limited, value_problem
from .profile_schema import SCHEMA, ProfileError, validate

__all__ = ["ProfileError", "Profile", "load_profile", "list_profiles", "profile_dirs", "SCHEMA"]


class Profile:
    """A validated device profile.

    Attributes
    ----------
    data: the full validated content, defaults filled in.
    source: the file it came from (or ``"<dict>"``).
    """

    def __init__(self, data: dict, source: str = "<dict>"):
        self.source = source
        self.data = validate(data, source)

    # -- typed accessors ------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def model(self) -> str:
        return self.data["model"]

    @property
    def n_cores(self) -> int:
        return self.data["geometry"]["cores"]

    @property
    def neurons_per_core(self) -> int:
        return self.data["geometry"]["neurons_per_core"]

    @property
    def n_neurons(self) -> int:
        return self.n_cores * self.neurons_per_core

    @property
    def dt_ms(self) -> float:
        return self.data["dt_ms"]

    @property
    def speedup(self) -> float:
        return self.data["speedup"]

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @property
    def sha256(self) -> str:
        """SHA-256 of the canonical JSON of the validated content (sorted keys, defaults filled in)."""
        blob = json.dumps(self.data, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    def with_changes(self, changes: Mapping[str, Any]) -> "Profile":
        """A new profile with dotted-path overrides, e.g. ``{"mismatch.lognormal.eps_e.neuron": 0.3}``; validated."""
        d = copy.deepcopy(self.data)
        for path, value in changes.items():
            node = d
            keys = path.split(".")
            for k in keys[:-1]:
                node = node[k]
            node[keys[-1]] = value
        return Profile(d, source=f"{self.source} (modified)")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.data, sort_keys=False)

    def __repr__(self) -> str:
        return f"Profile({self.name!r}, model={self.model!r}, n_neurons={self.n_neurons}, source={self.source!r})"


def profile_dirs() -> list[Path]:
    """Where profiles are looked up by name: ``$EICAL_PROFILE_PATH`` (os.pathsep-separated), then the repository's
    ``device_profiles/`` next to the installed packages."""
    dirs = [Path(p) for p in os.environ.get("EICAL_PROFILE_PATH", "").split(os.pathsep) if p]
    dirs.append(Path(__file__).resolve().parent.parent / "device_profiles")
    return dirs


def list_profiles() -> dict[str, Path]:
    """Profile names found on the search path, first occurrence wins."""
    found: dict[str, Path] = {}
    for d in profile_dirs():
        if d.is_dir():
            for f in sorted(d.glob("*.yaml")):
                found.setdefault(f.stem, f)
    return found


# Loading files. A profile is a few KiB of YAML; anything far bigger, or YAML that expands into far more nodes than a
# profile has (an alias bomb), is refused before it can cost time or memory (docs/profiles.md, "Files").
PROFILE_MAX_BYTES = 256 * 1024
PROFILE_MAX_NODES = 10_000  # after alias expansion; the largest shipped profile has about 200
PROFILE_MAX_DEPTH = 32


class _LimitError(yaml.YAMLError):
    def __init__(self, problem: str, mark: Any):
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that counts what the document expands to while composing it, before any Python object
    is built. The expanded size is the number of nodes composed plus, for each alias, the size of the node it
    repeats; it only grows, so the document is refused as soon as it passes ``PROFILE_MAX_NODES`` (an alias bomb
    after a few dozen aliases, a long list after that many items), and also for nesting deeper than
    ``PROFILE_MAX_DEPTH`` or an alias to a node that contains it (a cycle). Aliases are otherwise allowed:
    sharing one block of mismatch levels between keys is fair use."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self._expanded = 0

    def _count(self, n: int, mark: Any) -> None:
        self._expanded += n
        if self._expanded > PROFILE_MAX_NODES:
            raise _LimitError(f"the document expands to more than {PROFILE_MAX_NODES} nodes (YAML aliases "
                              "repeating a block: an alias bomb?); a profile has a few hundred", mark)

    def compose_node(self, parent: Any, index: Any) -> Any:
        is_alias = self.check_event(yaml.AliasEvent)
        mark = self.peek_event().start_mark
        if not is_alias:
            self._count(1, mark)
        self._depth += 1
        if self._depth > PROFILE_MAX_DEPTH:
            raise _LimitError(f"nested deeper than {PROFILE_MAX_DEPTH} levels", mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if is_alias:
            self._count(self._size(node, mark), mark)
            return node
        if isinstance(node, yaml.SequenceNode):
            node._eical_size = 1 + sum(self._size(c, mark) for c in node.value)
        elif isinstance(node, yaml.MappingNode):
            node._eical_size = 1 + sum(self._size(k, mark) + self._size(v, mark) for k, v in node.value)
        else:
            node._eical_size = 1
        return node

    @staticmethod
    def _size(node: Any, mark: Any) -> int:
        size = getattr(node, "_eical_size", None)
        if size is None:  # still being composed: the alias is inside the node it names
            raise _LimitError("an alias refers to a node that contains it (a cycle)", mark)
        return size


def _yaml_problem(e: BaseException) -> str:
    """``" at line L, column C: problem"`` from a PyYAML error, on one line (their str() spans several)."""
    if isinstance(e, yaml.reader.ReaderError):
        if isinstance(e.character, int):
            return f" at position {e.position}: unacceptable character #x{e.character:04x}: {e.reason}"
        return f" at position {e.position}: {e.reason}"
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    parts = [t for t in (getattr(e, "context", None), getattr(e, "problem", None)) if t]
    return f"{where}: {', '.join(parts) or type(e).__name__}"


def load_profile(name_or_path: Union[str, os.PathLike, Profile]) -> Profile:
    """Load and validate a profile by name (``"bss2"``) or by path. Raises ProfileError with one clear line.

    Any file gives a Profile or one ProfileError line naming it, in bounded time and memory: at most
    ``PROFILE_MAX_BYTES`` are read, the text must be UTF-8, and YAML that would expand to more than
    ``PROFILE_MAX_NODES`` nodes or nest deeper than ``PROFILE_MAX_DEPTH`` is refused while it is parsed.
    """
    if isinstance(name_or_path, Profile):
        return name_or_path
    s = str(name_or_path)
    path = Path(s)
    if not (s.endswith((".yaml", ".yml")) or os.sep in s or _is_file(path)):
        known = list_profiles()
        if s not in known:
            raise ProfileError(f"{s}: no such profile; known profiles: {', '.join(sorted(known)) or 'none'}")
        path = known[s]
    what = "a YAML device profile"
    text = decode_utf8(path, read_limited(path, PROFILE_MAX_BYTES, what, ProfileError), what, ProfileError)
    try:
        data = yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader with limits
    except _LimitError as e:
        raise ProfileError(f"{path}: refused{_yaml_problem(e)}") from None
    except yaml.YAMLError as e:
        raise ProfileError(f"{path}: not valid YAML{_yaml_problem(e)}") from None
    except (ValueError, RecursionError) as e:  # e.g. an integer of more digits than Python converts
        raise ProfileError(f"{path}: not a usable YAML profile: {value_problem(e)}") from None
    if data is None:
        raise ProfileError(f"{path}: <top>: empty file; expected a mapping")
    return Profile(data, source=str(path))


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False
