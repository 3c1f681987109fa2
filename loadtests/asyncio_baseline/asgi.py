"""ASGI entry point of the asyncio baseline: what uvicorn serves."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "loadtests.asyncio_baseline.settings")

application = get_asgi_application()
