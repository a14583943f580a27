"""Watching a run: the scene built from messages, the Pygame renderer and window (`v2x viz`), recording and
replay (MCAP), `v2x tap`. Plain subscribers: what they show came over the wire. The only home of pygame."""
