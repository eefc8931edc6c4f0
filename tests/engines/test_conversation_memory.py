"""A conversation that remembers (issue 21), on the real embedded responder (SmolLM2-135M through llama.cpp)
fed by the real /voice conversation memory: the user's name and a number from turn 1 and 3 reach the model
at turn 8, an earlier question is recalled when asked about, and replies to English stay English."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import pytest_asyncio

from gateway.engines.base import ChatMessage, ConversationRequest, ModelState
from gateway.engines.embedded.chat_prompt import GATEWAY_DEFAULT, PromptDesign, build_messages
from gateway.engines.embedded.llm import LlamaResponder
from gateway.sessions.voice.config import DEFAULT_INSTRUCTIONS
from gateway.sessions.voice.history import ConversationHistory
from gateway.text.facts import EARLIER_HEADING, extract, split_earlier

pytestmark = pytest.mark.timeout(300)
MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")

SCRIPT = [
    "Hi, my name is Sam.",
    "What is the capital of France?",
    "My favourite number is 42.",
    "What is my name?",
    "How many legs does a spider have?",
    "What is two plus three?",
    "Which city did I ask you about?",
    "What is my name and what is my favourite number?",
]
TURN_S = 30.0  # a bound for one 60-token reply on a loaded 2-core machine; about 1 s when quiet
ENGLISH = {
    "the",
    "a",
    "is",
    "are",
    "i",
    "i'm",
    "you",
    "it",
    "of",
    "to",
    "and",
    "in",
    "my",
    "your",
    "what",
    "hello",
}


def english(text: str) -> bool:
    found = re.findall(r"[a-z']+", text.lower())
    return (
        bool(found)
        and (len(found) <= 2 or sum(w in ENGLISH for w in found) / len(found) >= 0.12)
        and not re.search(r"[àâçéèêëîïôûùüœäöß]", text.lower())
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def llm() -> AsyncIterator[LlamaResponder]:
    executor = ThreadPoolExecutor(max_workers=1)
    responder = LlamaResponder(executor)  # the defaults a gateway runs with
    await asyncio.wait_for(responder.start(), 120)
    assert responder.state is ModelState.READY, responder.models()
    yield responder
    await responder.aclose()
    executor.shutdown()


async def reply(llm: LlamaResponder, history: list[ChatMessage]) -> str:
    async def collect() -> str:
        request = ConversationRequest(history=history, max_tokens=60)
        return "".join([e.text async for e in llm.respond(request) if e.kind == "text"])

    return (await asyncio.wait_for(collect(), TURN_S)).strip()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def conversation(llm: LlamaResponder) -> list[tuple[list[ChatMessage], str]]:
    """The script spoken turn by turn through the session memory: (what the session sent, the reply)."""
    history = ConversationHistory(max_turns=0, max_tokens=1024)
    turns = []
    for text in SCRIPT:
        history.add("user", text)
        sent = history.messages(DEFAULT_INSTRUCTIONS)
        answer = await reply(llm, sent)
        history.add("assistant", answer)
        turns.append((sent, answer))
    return turns


@MODULE_LOOP
async def test_turn_8_prompt_carries_the_name_and_the_number(
    llm: LlamaResponder, conversation: list[tuple[list[ChatMessage], str]]
) -> None:
    sent, _ = conversation[7]
    prompt = llm._fit(sent, 60)  # the messages the model is given, as _generate builds them
    question = prompt[-1]
    assert question["role"] == "user" and question["content"].endswith(SCRIPT[7])
    assert "My name is Sam." in question["content"]
    assert "42" in question["content"]
    # The gateway's default instructions (which made the model play "a language learning assistant") are
    # replaced by a prompt naming the reply language; the replies of six turns ago are not copied in.
    assert prompt[0]["role"] == "system" and "English" in prompt[0]["content"]
    assert "spoken aloud" not in prompt[0]["content"] and GATEWAY_DEFAULT == DEFAULT_INSTRUCTIONS
    assert len(prompt) < len(sent)


@MODULE_LOOP
async def test_earlier_question_is_noted_only_when_asked_about(
    llm: LlamaResponder, conversation: list[tuple[list[ChatMessage], str]]
) -> None:
    asked = llm._fit(conversation[6][0], 60)[-1]["content"]
    assert '"What is the capital of France?"' in asked
    plain = llm._fit(conversation[5][0], 60)[-1]["content"]
    assert "capital of France" not in plain


@MODULE_LOOP
async def test_name_and_number_are_recalled_at_turn_8(
    conversation: list[tuple[list[ChatMessage], str]],
) -> None:
    answer = conversation[7][1].lower()
    assert "sam" in answer and ("42" in answer or "forty-two" in answer), answer
    assert "sam" in conversation[3][1].lower(), conversation[3][1]


@MODULE_LOOP
async def test_replies_to_english_stay_english(conversation: list[tuple[list[ChatMessage], str]]) -> None:
    answers = [answer for _, answer in conversation]
    assert all(answers), answers
    assert [a for a in answers if not english(a)] == []
    assert not any("language learning" in a.lower() for a in answers), answers


def test_history_keeps_the_users_words_beyond_its_window() -> None:
    history = ConversationHistory(max_turns=0, max_tokens=120)  # about 480 characters
    history.add("user", "Hi, my name is Sam.")
    history.add("assistant", "Hello Sam!")
    history.add("user", "My favourite number is 42.")
    history.add("assistant", "That is a fine number.")
    for n in range(8):
        history.add(
            "user", f"Tell me something interesting about the sea, part {'ABCDEFGH'[n]}, in some detail."
        )
        history.add("assistant", "Here is a rather long answer that fills the memory window quickly. " * 2)
    system, *turns = history.messages("Be brief.")
    assert all(m.content != "Hi, my name is Sam." for m in turns)  # the turn left the window...
    assert system.content.startswith("Be brief.") and EARLIER_HEADING in system.content
    facts = extract(split_earlier(system.content)[1])
    assert facts.name == "Sam" and "My favourite number is 42." in facts.statements  # ...its facts did not
    assert "Here is a rather long answer" not in system.content
    history.clear()
    assert history.messages("Be brief.")[0].content == "Be brief."


def test_facts_from_the_users_words() -> None:
    facts = extract(["I'm Fine, thanks.", "Hello, I'm Priya.", "I have 3 cats.", "Why is the sky blue?"])
    assert facts.name == "Priya"
    assert facts.statements == ["Hello, I'm Priya.", "I have 3 cats."]
    assert facts.questions == ["Why is the sky blue?"]
    note = facts.note("How many cats do I have?")
    assert note.startswith("My name is Priya.") and '"I have 3 cats."' in note and "sky" not in note
    assert "sky" in facts.note("What did I ask you before?")
    assert extract(["What is the time?"]).note("And the date?") == ""
    lena = extract(["My name is Lena and I live in Berlin."]).note("Where do I live?")
    assert lena == 'My name is Lena. I said: "My name is Lena and I live in Berlin."'
    assert extract(["I'm Sam."]).note("Who am I?") == "My name is Sam."


@MODULE_LOOP
async def test_a_tool_result_after_the_question_stays_with_it(llm: LlamaResponder) -> None:
    history = [
        ChatMessage("system", DEFAULT_INSTRUCTIONS),
        ChatMessage("user", "Hi, my name is Sam."),
        ChatMessage("assistant", "Hello Sam!"),
        ChatMessage("user", "What is the weather in my city?"),
        ChatMessage("assistant", "[called get_weather({})]"),
        ChatMessage("system", 'The function returned: {"sky": "clear"}'),
    ]
    prompt = llm._fit(history, 60)
    assert [m["role"] for m in prompt] == ["system", "user", "assistant", "system"]
    assert prompt[1]["content"] == "(My name is Sam.)\nWhat is the weather in my city?"

    def count(text: str) -> int:
        return len(llm._llm.tokenize(text.encode(), add_bos=False))

    # A model of your own gets earlier exchanges word for word (EMBEDDED_LLM_RECENT_TURNS).
    wider = build_messages(history, 1000, count, "en", PromptDesign(recent_exchanges=1))
    assert [m["content"] for m in wider[1:3]] == ["Hi, my name is Sam.", "Hello Sam!"]
    assert len(build_messages(history, 40, count, "en", PromptDesign(recent_exchanges=1))) < len(wider)


@MODULE_LOOP
async def test_a_realtime_conversation_past_its_window_still_knows_the_name(llm: LlamaResponder) -> None:
    """The Realtime API's item store as the memory (gateway/sessions/realtime/session.py ItemHistory): the
    name given in the first item, long out of a 60-token window, reaches the real model and is answered."""
    from gateway.sessions.realtime.items import ContentPart, Item, ItemStore
    from gateway.sessions.realtime.session import ItemHistory

    store = ItemStore()
    said = [
        "Hi, my name is Sam.",
        *(f"Tell me about the sea, part {p}." for p in "ABCDE"),
        "What is my name?",
    ]
    for n, text in enumerate(said):
        if n:
            filler = "The sea is wide and deep, and it covers most of the planet. " * 2
            store.add(Item(f"a{n}", "assistant", [ContentPart("output_text", text=filler)]))
        store.add(Item(f"u{n}", "user", [ContentPart("input_text", text=text)]))
    sent = ItemHistory(store, max_tokens=60).messages(DEFAULT_INSTRUCTIONS)
    assert all("Sam" not in m.content for m in sent[1:])  # the first item is out of the window
    assert "sam" in (await reply(llm, sent)).lower()
