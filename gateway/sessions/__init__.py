"""WebSocket session state machines: protocol-independent cores and their thin protocol adapters."""
