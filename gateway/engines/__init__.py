"""Engines: one protocol per capability (base.py); `embedded` (CPU, in-process) and `vllm_omni` (HTTP)."""
