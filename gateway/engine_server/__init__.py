"""`voice-gateway engine-server`: the embedded CPU engines behind vLLM-Omni's API (see app.py)."""
