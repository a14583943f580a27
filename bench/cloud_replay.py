"""The cloud's own CPU per vehicle-second on a recorded run: `python -m bench.replay --tier cloud` (bench/replay.py).

    python -m bench.cloud_replay x14.mcap --against /tmp/base
"""

from __future__ import annotations

import sys

from bench.replay import main, measure

__all__ = ["main", "measure"]

if __name__ == "__main__":
    sys.exit(main(tier="cloud"))
