"""The OpenAI Realtime API (`WS /v1/realtime`): a protocol adapter over the `/voice` conversation core."""
