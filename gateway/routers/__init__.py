"""One router per API surface; thin: parse, validate, call."""
