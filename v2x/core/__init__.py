"""The domain core: messages in SI units, the one codec, scenarios, the road network, topics, metrics,
the traffic core and the signal model. No I/O, no asyncio, no sockets: it imports only itself."""
