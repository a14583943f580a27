"""The embedded broker's process (`python -m v2x.net.embedded CONFIG.yaml`): amqtt, with one fix, logging warnings only.

The fix: on each CONNECT, amqtt 0.12 sends the new client every retained message that matches any topic filter any
client of the broker holds (`Broker._handle_client_session` calls `_publish_retained_messages_for_subscription` for
each of `self._subscriptions`, meant for the filters of a resumed session). A vehicle connecting in a run then got the
RSUs' and the cloud's retained statuses, which it never subscribed to (the fleet's "bad input (not_handled)" lines and
the lockstep barrier's `unexpected` deliveries). Here a client is sent a filter's retained messages only when its
session holds that filter: a new subscription, or a resumed session's own.

v2x.net.broker.EmbeddedBroker starts this with its output going to a file (docs/faults-security.md, issue #28).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from amqtt.broker import Broker
from amqtt.utils import read_yaml_config


class SubscribersOnlyBroker(Broker):  # type: ignore[misc]  # amqtt is untyped
    """amqtt's broker, sending a client the retained messages of the filters it holds, not of everyone's."""

    async def _publish_retained_messages_for_subscription(self, subscription: tuple[str, int], session: Any) -> None:
        holders = self._subscriptions.get(subscription[0], [])
        if any(held.client_id == session.client_id for held, _ in holders):
            await super()._publish_retained_messages_for_subscription(subscription, session)


async def serve(config: dict[str, Any]) -> None:
    """Serve until the process is ended (SIGTERM)."""
    broker = SubscribersOnlyBroker(config)
    await broker.start()
    await asyncio.Event().wait()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    config = read_yaml_config(argv[0])
    if config is None:
        print(f"amqtt: cannot read its configuration {argv[0]}", file=sys.stderr)
        return 1
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
