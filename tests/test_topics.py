"""Geo-addressed topics."""

from __future__ import annotations

import math
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from v2x.core import topics
from v2x.core.messages import MessageType


def test_quadkey_matches_the_bing_maps_example() -> None:
    # Bing Maps Tile System documentation: tile (3, 5) at level 3 has quadkey "213".
    assert topics._key_of(3, 5, 3) == "213"


@given(st.floats(-85.0, 85.0), st.floats(-180.0, 179.999), st.integers(1, 20))
def test_a_point_lies_in_its_tile(lat: float, lon: float, zoom: int) -> None:
    key = topics.quadkey(lat, lon, zoom)
    assert len(key) == zoom
    s, w, n, e = topics.tile_bounds(key)
    assert s - 1e-9 <= lat <= n + 1e-9
    assert w - 1e-9 <= lon <= e + 1e-9


@given(st.floats(-85.0, 85.0), st.floats(-180.0, 179.999), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_every_point_inside_a_tile_s_inner_box_has_the_tile_s_quadkey(lat: float, lon: float, fy: float, fx: float) -> None:
    """A fleet works a vehicle's tile out again only when its BSM leaves `tile_inside` of its tile: every point
    strictly inside that box (its corners and edges nudged the least float inward, or anywhere between) must have
    the tile's quadkey, and the box must leave out no more than a few centimetres of the tile."""
    key = topics.quadkey(lat, lon)
    s, w, n, e = topics.tile_inside(key)
    south, west, north, east = topics.tile_bounds(key)
    for inward in (s - south, north - n, w - west, east - e):
        assert 0 < inward < 2e-7
    lats = [math.nextafter(s, math.inf), math.nextafter(n, -math.inf), s + fy * (n - s)]
    lons = [math.nextafter(w, math.inf), math.nextafter(e, -math.inf), w + fx * (e - w)]
    for y in lats:
        for x in lons:
            if s < y < n and w < x < e:
                assert topics.quadkey(y, x) == key, (y, x)


def test_zoom_17_tile_is_about_260_m_at_wuxi() -> None:
    s, _w, n, _e = topics.tile_bounds(topics.quadkey(31.4912, 120.3119))
    assert 230 < (n - s) * 111_320 < 290


def test_neighbours_surround_the_tile() -> None:
    key = topics.quadkey(31.4912, 120.3119)
    around = topics.neighbours(key)
    assert len(around) == 9
    assert key in around
    assert len(set(around)) == 9


def test_one_wildcard_covers_an_area() -> None:
    t = topics.Topics("x/v2x/v1")
    key = topics.quadkey(31.4912, 120.3119)
    assert t.bsm(key, "veh-1") == f"x/v2x/v1/bsm/{'/'.join(key)}/veh-1"
    assert t.area("bsm", key[:10]) == f"x/v2x/v1/bsm/{'/'.join(key[:10])}/#"
    assert t.spat_area(key[:10]).startswith("x/v2x/v1/spat/+/")


def test_every_message_type_has_a_topic() -> None:
    assert {s.mtype for s in topics.SPECS} == set(MessageType)


def test_the_protocol_page_carries_the_topic_table() -> None:
    page = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text()
    assert topics.markdown_table() in page, (
        "regenerate the topic table in docs/protocol.md with `python -m v2x.core.topics`"
    )
