"""ASGI entry point for uvicorn (``service.main:app``); configuration from the environment.

A configuration that cannot serve ends the process here with one line, before uvicorn would
print a traceback for it.
"""

from service.app import create_app
from service.settings import settings_for_serving

app = create_app(settings_for_serving())
