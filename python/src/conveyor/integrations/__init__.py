"""Integrations with web frameworks, each an optional extra: ``starlette`` (FastAPI and
Starlette); they use the apps' public API only."""
