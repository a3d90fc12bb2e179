"""ASGI entry point for uvicorn (``service.main:app``); configuration from the environment."""

from service.app import create_app

app = create_app()
