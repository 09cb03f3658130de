"""The OpenClaw gateway as the scheduler sees it: one pooled async HTTP client.

``client`` holds :class:`~scheduler.gateway.client.GatewayClient` (agent turns through
``POST /v1/chat/completions``, gateway tools through ``POST /tools/invoke``, ``GET /health``),
token resolution, session-key canonicalisation and the error classes the engine uses to decide
whether a failed call defers the job (gateway down or busy) or fails the run.

``rpc`` holds :class:`~scheduler.gateway.rpc.GatewayRpc`, the client of the gateway's WebSocket
RPC control plane (sub-agent turns, session steering and abort, session lists, system events),
on the same host and port, with the same token.
"""
