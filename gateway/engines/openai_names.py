"""OpenAI's voice names, which every OpenAI-compatible surface maps onto the engine's default voice, so SDK
defaults (e.g. `voice="alloy"`) work unchanged."""

OPENAI_VOICES = frozenset(
    (
        "alloy",
        "ash",
        "ballad",
        "coral",
        "echo",
        "fable",
        "nova",
        "onyx",
        "sage",
        "shimmer",
        "verse",
        "marin",
        "cedar",
    )
)
