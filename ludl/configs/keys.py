"""The keys of a job's config: which exist (from the schema), what each means (from the YAML comments).

`unknown_override_message` refuses a ``key=value`` or ``+key=value`` whose key the job's schema lacks, with a
"did you mean"; `format_job_help` prints every key with its default and its YAML comment (the one place a key is
explained).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any, get_type_hints

from ludl.configs.schema import JOB_SCHEMAS

__all__ = ["format_job_help", "override_key", "schema_keys", "unknown_override_message", "yaml_comments"]

_KEY_LINE = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_]\w*)\s*:(?P<rest>.*)$")
_DEFAULTS_LINE = re.compile(r"^\s*-\s*(?:override\s+)?(?P<group>[A-Za-z_][\w/]*)(?:@\S+)?\s*:\s*(?P<option>[\w.]+)")


def schema_keys(schema: type, prefix: str = "") -> tuple[list[str], list[str]]:
    """(dotted keys, dotted prefixes whose sub-keys are free) of a schema dataclass, in field order."""
    keys: list[str] = []
    free: list[str] = []
    hints = get_type_hints(schema)
    for entry in dataclasses.fields(schema):
        name = prefix + entry.name
        keys.append(name)
        hint = hints[entry.name]
        if dataclasses.is_dataclass(hint):
            sub_keys, sub_free = schema_keys(hint, name + ".")  # type: ignore[arg-type]
            keys += sub_keys
            free += sub_free
        elif hint is Any or getattr(hint, "__origin__", None) is dict:
            free.append(name)  # a config group (preset) or a free mapping (priors): checked where it is used
    return keys, free


def override_key(override: str) -> str | None:
    """The config key an override sets (``+a.b=1`` → ``a.b``); None for flags, Hydra's own keys and group paths."""
    if override.startswith("-") or ("=" not in override and not override.startswith("~")):
        return None  # -m, --cfg job …: Hydra's command-line flags and their values
    key = override.split("=", 1)[0].lstrip("+~").split("@", 1)[0].strip()
    if not key or key.startswith("hydra") or "/" in key:
        return None
    return key


def unknown_override_message(job: str, overrides: Iterable[str]) -> str | None:
    """One line naming the first override whose key the job lacks, a "did you mean" and the known keys; or None."""
    keys, free = schema_keys(JOB_SCHEMAS[job])
    # A group of the job's defaults list that packages its values elsewhere (``scenario=…``) is a key too.
    groups = yaml_comments(_read_config(f"{job}.yaml") or "")[1]
    for override in overrides:
        key = override_key(override)
        if key is None or key in keys or key in groups or any(key.startswith(p + ".") for p in free):
            continue
        guesses = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
        # `tia_mode=…` for `dosimetry.tia_mode=…`: the same last part under a group
        guesses += [k for k in keys if k.endswith("." + key) and k not in guesses]
        hint = f"did you mean {guesses[0]}? " if guesses else ""
        leaves = [k for k in keys if k not in free and not any(other.startswith(k + ".") for other in keys)]
        known = ", ".join([*leaves, *(p + ".*" for p in free)])
        return f"ludl {job}: unknown key {key!r} in {override!r}; {hint}known keys: {known} (see `ludl {job} --help`)"
    return None


def _read_config(relative: str) -> str | None:
    entry = resources.files("ludl.configs").joinpath(*relative.split("/"))
    return entry.read_text(encoding="utf-8") if entry.is_file() else None


def yaml_comments(text: str, prefix: str = "") -> tuple[dict[str, str], dict[str, str]]:
    """({dotted key: its comment}, {group: default option}) of a config file's text.

    A key's comment is the one after it on its line, else the comment lines right above it; a defaults-list entry
    ``- group: option  # comment`` gives the group's comment and default option.
    """
    comments: dict[str, str] = {}
    groups: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    block: list[str] = []
    in_defaults = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or not stripped:
            block = [*block, stripped.lstrip("# ").strip()] if stripped else []
            continue
        code, _, trailing = line.partition(" #")
        comment = trailing.strip() or " ".join(block)
        block = []
        entry = _DEFAULTS_LINE.match(code) if in_defaults else None
        if entry:
            groups[entry["group"]] = entry["option"]
            if comment:
                comments[prefix + entry["group"]] = comment
            continue
        match = _KEY_LINE.match(code)
        if not match:
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        in_defaults = indent == 0 and match["key"] == "defaults"
        if comment and not in_defaults:
            comments[prefix + ".".join(key for _, key in stack)] = comment
    return comments, groups


def _flatten(node: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(node, Mapping) and node:
        for key, value in node.items():
            yield from _flatten(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), node


def format_job_help(job: str, description: str, values: Mapping[str, Any]) -> str:
    """Every key of `job` with its default (from the composed `values`) and its comment, as help text."""
    primary = _read_config(f"{job}.yaml") or ""
    comments, groups = yaml_comments(primary)
    for group, option in groups.items():
        group_text = _read_config(f"{group}/{option}.yaml")
        if group_text is not None and not group.startswith("hydra"):
            comments.update(yaml_comments(group_text, prefix=group + ".")[0])
    header = []
    for line in primary.splitlines():  # the file's opening comment
        if not line.startswith("#"):
            break
        header.append(line.lstrip("# "))
    lines = [f"ludl {job} — {description}", "usage: ludl " + job + " [key=value ...]  (Hydra overrides; -m for sweeps)"]
    lines += ["", *header, "", "keys (default, meaning):"]
    rows: list[tuple[str, str, str]] = []
    for group, option in groups.items():
        if not group.startswith("hydra") and group in comments:
            rows.append((group, option, comments[group]))
    for key, value in _flatten(values):
        shown = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        shown = shown.replace("'", "")
        rows.append((key, shown, comments.get(key, "")))
    width = max(len(key) for key, _, _ in rows)
    value_width = min(28, max(len(value) for _, value, _ in rows))
    lines += [f"  {key:<{width}}  {value:<{value_width}}  {text}".rstrip() for key, value, text in rows]
    return "\n".join(lines)
