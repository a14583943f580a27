"""Vehicle-road-cloud V2X simulator: the vehicle tier, messages, codec, transport and tools.

`roadside` and `cloud` build on this package; it imports neither.
"""

__version__ = "0.1.0"
