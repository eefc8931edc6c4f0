"""vLLM-Omni 0.30 on a CPU: a platform plug-in and a dummy-weight loader for the gateway's tests."""
