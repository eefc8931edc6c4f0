"""Text normalization for speech, with a map back to the original characters."""

from gateway.text.normalize import normalize, spoken_words
from gateway.text.offsets import NormalizedText, Segment, SpokenWord

__all__ = ["NormalizedText", "Segment", "SpokenWord", "normalize", "spoken_words"]
