"""The HTTP face: decisions, approvals, audit queries, metrics and a small dashboard.

One Starlette app (``build_app``) served by uvicorn (``shieldwall serve``). It talks only
to a :class:`~shieldwall.Shieldwall` and its sessions. Every route but ``/healthz``
needs a bearer token from ``server.tokens`` (stored as SHA-256), each carrying scopes:
``decide`` (agents' frameworks), ``approve`` (people), ``audit`` (auditors).
"""
