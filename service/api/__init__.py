"""HTTP API: thin FastAPI routes over the translation engine."""

from service.api.app import create_app

__all__ = ["create_app"]
