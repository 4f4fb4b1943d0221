"""A Django Channels app for tests/test_websocket_asgi.py, configured in this module (no
project on disk): an echo consumer at ``/ws/echo/`` and a group chat at ``/ws/room/`` on
Channels' in-memory channel layer (one worker process: the group lives in its memory)."""

from __future__ import annotations

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="not-a-secret-test-only",
    ALLOWED_HOSTS=["*"],
    INSTALLED_APPS=["channels"],
    CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
    ROOT_URLCONF=__name__,
    USE_TZ=True,
)
django.setup()

from channels.generic.websocket import (  # noqa: E402 (after the settings)
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.urls import path  # noqa: E402

urlpatterns: list[object] = []


class Echo(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        offered = self.scope["subprotocols"]
        await self.accept(subprotocol="echo.v1" if "echo.v1" in offered else None)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None
                      ) -> None:
        if text_data == "bye":
            await self.close(code=4001)
        elif text_data is not None:
            await self.send(text_data=text_data)
        else:
            await self.send(bytes_data=bytes_data)


class Room(AsyncJsonWebsocketConsumer):
    group = "room"

    async def connect(self) -> None:
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: dict[str, str], **kwargs: object) -> None:
        await self.channel_layer.group_send(self.group, {"type": "chat.message", **content})

    async def chat_message(self, event: dict[str, str]) -> None:
        await self.send_json({"who": event["who"], "text": event["text"]})


application = ProtocolTypeRouter({
    "http": get_asgi_application(),
    "websocket": URLRouter([
        path("ws/echo/", Echo.as_asgi()),
        path("ws/room/", Room.as_asgi()),
    ]),
})
