"""The synthetic text engine: deterministic, readable, token-sized pieces, honest token counts."""

from __future__ import annotations

import sys

import pytest

from kaitosim.engine import (
    SamplingParams,
    StopChecker,
    SyntheticEngine,
    TokenStream,
    chat_prompt_tokens,
    estimate_tokens,
    get_engine,
    split_pieces,
)


def drain(stream: TokenStream) -> list[str]:
    pieces: list[str] = []
    while (piece := stream.poll()) is not None:
        pieces.append(piece)
    assert stream.finished
    return pieces


def answer(prompt: str, **params: object) -> str:
    sampling = SamplingParams(max_tokens=400, **params)  # type: ignore[arg-type]
    messages = [{"role": "user", "content": prompt}]
    return "".join(
        drain(SyntheticEngine().generate(prompt, sampling, chat=True, messages=messages))
    )


def test_prompt_tokens_are_estimated_at_four_characters_per_token() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    assert estimate_tokens("x" * 400) == 100


def test_a_chat_adds_four_tokens_per_message_and_one_for_the_reply() -> None:
    messages = [{"role": "system", "content": "x" * 40}, {"role": "user", "content": "y" * 8}]
    assert chat_prompt_tokens(messages) == (10 + 4) + (2 + 4) + 1


def test_pieces_rejoin_to_the_original_text_and_average_a_few_characters() -> None:
    text = "Continuous batching keeps GPU utilisation high.\n\nIt matters for 2048-token prompts!"
    pieces = split_pieces(text)
    assert "".join(pieces) == text
    assert 3.0 <= len(text) / len(pieces) <= 6.0
    assert all(len(p) <= 7 for p in pieces)


def test_the_same_prompt_and_seed_give_the_same_text() -> None:
    prompt = "Explain how KAITO serves models on AKS."
    assert answer(prompt, temperature=0.8, seed=7) == answer(prompt, temperature=0.8, seed=7)
    assert answer(prompt, temperature=0.8, seed=7) != answer(prompt, temperature=0.8, seed=8)


def test_greedy_decoding_ignores_the_seed_like_vllm() -> None:
    prompt = "What limits throughput of vLLM?"
    assert answer(prompt, temperature=0.0, seed=1) == answer(prompt, temperature=0.0, seed=2)


def test_sampling_without_a_seed_varies_between_requests() -> None:
    prompt = "Describe autoscaling for inference endpoints."
    outputs = {answer(prompt, temperature=1.0) for _ in range(5)}
    assert len(outputs) > 1


def test_answers_are_readable_sentences_about_the_prompt() -> None:
    text = answer("Explain the trade-offs of KAITO on AKS for a bank.", temperature=0)
    assert "KAITO" in text or "AKS" in text
    assert text.rstrip().endswith(".")
    sentences = [s for s in text.replace("\n", " ").split(". ") if s]
    assert len(sentences) >= 3
    assert all(s[0].isupper() or s[0].isdigit() for s in (x.strip() for x in sentences) if s)


def test_brief_requests_get_short_answers_and_detailed_ones_long_answers() -> None:
    short = answer("Briefly, what is a GPU?", temperature=0)
    long = answer("Explain in detail how GPU memory bandwidth limits decoding.", temperature=0)
    assert len(split_pieces(short)) < 60 < len(split_pieces(long))


def test_say_exactly_is_obeyed_as_kaito_probes_expect() -> None:
    assert answer("Say exactly: ok", temperature=0) == "ok"


def test_code_requests_get_a_code_block() -> None:
    text = answer("Write a Python function that deduplicates invoices", temperature=0)
    assert "```python" in text
    assert "def deduplicates_invoices(" in text or "def " in text


def test_stop_checker_holds_back_a_possible_stop_prefix_then_cuts_before_it() -> None:
    checker = StopChecker(["END"])
    first, matched = checker.feed("hello E")
    assert (first, matched) == ("hello", None)  # " E" could start "END": held back
    second, matched = checker.feed("N")
    assert matched is None
    third, matched = checker.feed("D and more")
    assert matched == "END"
    assert first + second + third == "hello "


def test_stop_checker_can_include_the_stop_string() -> None:
    checker = StopChecker(["."], include_stop=True)
    assert checker.feed("One. Two.") == ("One.", ".")


def test_asking_for_an_unknown_engine_fails_loudly() -> None:
    with pytest.raises(RuntimeError, match="unknown KAITOSIM_ENGINE"):
        get_engine("gpt-neo")


def test_smollm2_without_llama_cpp_fails_instead_of_falling_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if llama-cpp-python were absent
    with pytest.raises(RuntimeError, match="llama-cpp-python"):
        get_engine("smollm2")


def test_the_default_engine_is_synthetic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAITOSIM_ENGINE", raising=False)
    assert get_engine().name == "synthetic"


def test_smollm2_answers_for_real_and_greedy_is_repeatable() -> None:
    engine = get_engine("smollm2")
    messages = [{"role": "user", "content": "What is the capital of France? Answer briefly."}]
    params = SamplingParams(max_tokens=24, temperature=0)
    first = "".join(drain_blocking(engine.generate("", params, chat=True, messages=messages)))
    second = "".join(drain_blocking(engine.generate("", params, chat=True, messages=messages)))
    assert "Paris" in first
    assert first == second
    assert engine.prompt_tokens("hello world") >= 2


def drain_blocking(stream: TokenStream, timeout: float = 60.0) -> list[str]:
    import time

    pieces: list[str] = []
    deadline = time.monotonic() + timeout
    while not stream.finished and time.monotonic() < deadline:
        piece = stream.poll()
        if piece is None:
            time.sleep(0.01)
        else:
            pieces.append(piece)
    assert stream.finished
    return pieces
