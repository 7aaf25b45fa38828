"""Prompt sets: the built-in ones shipped in ``prompt_sets/`` and uploaded JSONL or CSV files.

JSONL: one object a line, ``{"prompt": "...", "system": "..."}`` (``system`` optional; blank lines
are skipped). CSV: a header row with a ``prompt`` column and an optional ``system`` column. Every
problem is reported with its line number, so a 500-line file is fixed in one go.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

BUILTIN_DIR = Path(__file__).resolve().parent / "prompt_sets"
MAX_PROMPTS = 10_000
MAX_ERRORS_SHOWN = 10


class PromptSetError(ValueError):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class Prompt:
    prompt: str
    system: str = ""

    @property
    def sha256(self) -> str:
        return prompt_sha256(self.prompt, self.system)


@dataclass(frozen=True)
class PromptSet:
    name: str
    prompts: tuple[Prompt, ...]


def prompt_sha256(prompt: str, system: str = "") -> str:
    """The SHA-256 of the system prompt and the prompt, NUL-separated (so the split counts)."""
    return hashlib.sha256(f"{system}\0{prompt}".encode()).hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.jsonl"))


def builtin_load(name: str) -> PromptSet:
    if name not in builtin_names():
        raise PromptSetError([f"No built-in prompt set is called {name!r}."])
    return parse_jsonl((BUILTIN_DIR / f"{name}.jsonl").read_text(), name=name)


def _finish(name: str, prompts: list[Prompt], errors: list[str]) -> PromptSet:
    if errors:
        more = len(errors) - MAX_ERRORS_SHOWN
        shown = errors[:MAX_ERRORS_SHOWN] + ([f"… and {more} more."] if more > 0 else [])
        raise PromptSetError(shown)
    if not prompts:
        raise PromptSetError(["The file holds no prompts."])
    if len(prompts) > MAX_PROMPTS:
        raise PromptSetError([f"At most {MAX_PROMPTS} prompts, not {len(prompts)}."])
    return PromptSet(name=name, prompts=tuple(prompts))


def parse_jsonl(content: str, *, name: str) -> PromptSet:
    prompts: list[Prompt] = []
    errors: list[str] = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            errors.append(f"Line {number}: not valid JSON ({exc.args[0].split(':')[0]}).")
            continue
        if not isinstance(row, dict):
            errors.append(f'Line {number}: expected an object like {{"prompt": "..."}}.')
            continue
        prompt, system = row.get("prompt"), row.get("system") or ""
        if not isinstance(prompt, str) or not prompt.strip():
            errors.append(f'Line {number}: "prompt" is missing or empty.')
            continue
        if not isinstance(system, str):
            errors.append(f'Line {number}: "system" must be a string.')
            continue
        prompts.append(Prompt(prompt=prompt, system=system))
    return _finish(name, prompts, errors)


def parse_csv(content: str, *, name: str) -> PromptSet:
    reader = csv.DictReader(io.StringIO(content))
    fields = [f.strip().lower() for f in reader.fieldnames or []]
    if "prompt" not in fields:
        raise PromptSetError(["Line 1: the header has no prompt column."])
    reader.fieldnames = fields
    prompts: list[Prompt] = []
    errors: list[str] = []
    for row in reader:
        number = reader.line_num
        prompt = (row.get("prompt") or "").strip()
        if not prompt:
            errors.append(f"Line {number}: the prompt is empty.")
            continue
        prompts.append(Prompt(prompt=prompt, system=(row.get("system") or "").strip()))
    return _finish(name, prompts, errors)


def parse_upload(content: bytes, *, filename: str) -> PromptSet:
    """A JSONL or CSV upload, by its extension."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PromptSetError(["The file is not UTF-8 text."]) from None
    lowered = filename.lower()
    if lowered.endswith(".csv"):
        return parse_csv(text, name=filename)
    if lowered.endswith((".jsonl", ".json", ".ndjson")):
        return parse_jsonl(text, name=filename)
    raise PromptSetError(["Upload a .jsonl or a .csv file."])


def load_path(path: Path) -> PromptSet:
    """A file on disk (the abtest command), or a built-in set's name."""
    if not path.exists() and str(path) in builtin_names():
        return builtin_load(str(path))
    return parse_upload(path.read_bytes(), filename=path.name)
