"""Hypothesis strategies for every domain message, on the wire's quantisation grid.

Values are drawn as wire integers and scaled by the codec's own unit constants, so
decode(encode(x)) == x holds exactly when the codec is right.
"""

from __future__ import annotations

import enum
from typing import TypeVar

from hypothesis import strategies as st

from v2x.core import codec as c
from v2x.core import messages as m

E = TypeVar("E", bound=enum.IntEnum)

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
ids = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=16)


def grid(lo: int, hi: int, unit: float) -> st.SearchStrategy[float]:
    return st.integers(lo, hi).map(lambda k: k * unit)


def opt(s: st.SearchStrategy[float]) -> st.SearchStrategy[float | None]:
    return st.none() | s


def bitset(cls: type[E]) -> st.SearchStrategy[frozenset[E]]:
    return st.frozensets(st.sampled_from(list(cls)))


u8 = st.integers(0, 255)
u16 = st.integers(0, 65535)
time_ms = st.integers(0, 2**53)

geo = st.builds(
    m.GeoPoint,
    grid(-900_000_000, 900_000_000, c.LATLON_DEG),
    grid(-1_799_999_999, 1_800_000_000, c.LATLON_DEG),
    opt(grid(-4095, 61439, c.ELEVATION_M)),
)
iref = st.builds(m.IntersectionRef, u16, u16)
header = st.builds(
    m.Header,
    ids,
    st.sampled_from(list(m.SenderKind)),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**63 - 1),
    st.integers(0, 2**63 - 1),
)

bsm = st.builds(
    m.Bsm,
    position=geo,
    speed_mps=grid(0, 8190, c.SPEED_MPS),
    heading_deg=grid(0, 28799, c.HEADING_DEG),
    accel_mps2=grid(-2000, 2000, c.ACCEL_MPS2),
    accel_lat_mps2=grid(-2000, 2000, c.ACCEL_MPS2),
    yaw_rate_dps=grid(-32767, 32767, c.YAW_RATE_DPS),
    transmission=st.sampled_from(list(m.Transmission)),
    brake_applied=st.booleans(),
    width_m=grid(0, 1023, c.CM_M),
    length_m=grid(0, 4095, c.CM_M),
    height_m=opt(grid(1, 635, c.CM_M)),
    vehicle_class=st.sampled_from(list(m.VehicleClass)),
    events=bitset(m.VehicleEvent),
    emergency=st.none() | st.builds(m.EmergencyExt, st.booleans(), st.booleans(), st.booleans()),
    lights=bitset(m.ExteriorLight),
    accuracy=st.none() | st.builds(
        m.PositionalAccuracy, grid(0, c.ACCURACY_MAX, c.ACCURACY_M), grid(0, c.ACCURACY_MAX, c.ACCURACY_M),
        st.none() | grid(0, c.ORIENTATION_NA - 1, c.ORIENTATION_DEG),
    ),
)

connection = st.builds(
    m.Connection, u8, bitset(m.Maneuver), u8, st.none() | iref
)
lane = st.builds(
    m.MapLane,
    lane_id=u8,
    name=text,
    direction=st.sampled_from(list(m.LaneDirection)),
    approach_id=st.integers(0, 15),
    maneuvers=bitset(m.Maneuver),
    width_m=grid(0, 32767, c.CM_M),
    speed_limit_mps=grid(0, 8190, c.SPEED_MPS),
    nodes=st.lists(st.tuples(grid(-(2**31), 2**31 - 1, c.CM_M), grid(-(2**31), 2**31 - 1, c.CM_M)), max_size=4).map(tuple),
    connections=st.lists(connection, max_size=3).map(tuple),
)
map_data = st.builds(
    m.MapData,
    st.lists(
        st.builds(
            m.IntersectionGeometry,
            ref=iref,
            name=text,
            revision=st.integers(0, 127),
            ref_point=geo,
            lanes=st.lists(lane, max_size=4).map(tuple),
        ),
        max_size=2,
    ).map(tuple),
)

tenths = opt(grid(0, 36000, c.TENTH_S))
movement_event = st.builds(
    m.MovementEvent,
    st.sampled_from(list(m.LightState)),
    st.none() | st.builds(m.TimeChange, tenths, tenths, tenths, tenths, st.integers(0, 15)),
)
spat = st.builds(
    m.Spat,
    st.lists(
        st.builds(
            m.IntersectionState,
            ref=iref,
            name=text,
            revision=st.integers(0, 127),
            status=bitset(m.IntersectionStatus),
            timestamp_ms=time_ms,
            plan_id=u16,
            states=st.lists(
                st.builds(m.MovementState, st.integers(1, 255), st.lists(movement_event, max_size=3).map(tuple)),
                max_size=4,
            ).map(tuple),
        ),
        max_size=2,
    ).map(tuple),
)

rsi = st.builds(
    m.Rsi,
    geo,
    st.lists(
        st.builds(
            m.RoadTrafficEvent,
            event_id=u8,
            kind=st.sampled_from(list(m.HazardKind)),
            source=st.sampled_from(list(m.EventSource)),
            status=st.sampled_from(list(m.EventStatus)),
            position=geo,
            radius_m=grid(0, 100_000, c.DM_M),
            lanes=st.lists(st.builds(m.LaneRef, iref, u8), max_size=3).map(tuple),
            priority=st.integers(0, 7),
            start_time_ms=time_ms,
            end_time_ms=st.none() | st.integers(1, 2**53),
            description=text,
        ),
        max_size=3,
    ).map(tuple),
)

rsm = st.builds(
    m.Rsm,
    geo,
    st.lists(
        st.builds(
            m.Participant,
            type=st.sampled_from(list(m.ParticipantType)),
            ptc_id=u16,
            source=st.sampled_from(list(m.SourceType)),
            vehicle_id=text,
            position=geo,
            speed_mps=grid(0, 8190, c.SPEED_MPS),
            heading_deg=grid(0, 28799, c.HEADING_DEG),
            width_m=grid(0, 1023, c.CM_M),
            length_m=grid(0, 4095, c.CM_M),
            lane_id=u8,
            intersection=st.none() | iref,
        ),
        max_size=4,
    ).map(tuple),
)

deci16 = grid(0, 65535, c.TENTH_S)
signal_plan = st.builds(
    m.SignalPlan,
    intersection=iref,
    plan_id=u16,
    mode=st.sampled_from(list(m.ControlMode)),
    cycle_s=deci16,
    offset_s=deci16,
    phases=st.lists(
        st.builds(
            m.PhasePlan,
            phase_id=u8,
            signal_groups=st.lists(st.integers(1, 255), max_size=6).map(tuple),
            green_s=deci16,
            yellow_s=deci16,
            all_red_s=deci16,
            min_green_s=deci16,
            max_green_s=deci16,
        ),
        max_size=4,
    ).map(tuple),
    not_before_ms=st.none() | st.integers(1, 2**53),
    reason=text,
)

advisory = st.builds(
    m.Advisory,
    target_id=text,
    kind=st.sampled_from(list(m.AdvisoryKind)),
    advised_speed_mps=opt(grid(0, 8190, c.SPEED_MPS)),
    valid_until_ms=time_ms,
    event_id=u8,
    intersection=st.none() | iref,
    text=text,
)

priority_request = st.builds(
    m.PriorityRequest,
    request_id=u8,
    intersection=iref,
    type=st.sampled_from(list(m.RequestType)),
    role=st.sampled_from(list(m.VehicleRole)),
    in_lane_id=u8,
    out_lane_id=u8,
    eta_s=grid(0, 36000, c.TENTH_S),
    position=st.none() | geo,
)

priority_status = st.builds(
    m.PriorityStatus,
    requester_id=text,
    request_id=u8,
    intersection=iref,
    state=st.sampled_from(list(m.PriorityState)),
    action=st.sampled_from(list(m.PriorityAction)),
    signal_group=u8,
)

status = st.builds(m.Status, st.sampled_from(list(m.ServiceState)), text, text)

BODIES: dict[m.MessageType, st.SearchStrategy[m.Body]] = {
    m.MessageType.BSM: bsm,
    m.MessageType.MAP: map_data,
    m.MessageType.SPAT: spat,
    m.MessageType.RSI: rsi,
    m.MessageType.RSM: rsm,
    m.MessageType.SIGNAL_PLAN: signal_plan,
    m.MessageType.ADVISORY: advisory,
    m.MessageType.PRIORITY_REQUEST: priority_request,
    m.MessageType.PRIORITY_STATUS: priority_status,
    m.MessageType.STATUS: status,
}


def frames(body: st.SearchStrategy[m.Body]) -> st.SearchStrategy[m.Frame]:
    return st.builds(m.Frame, header, body)


any_frame = frames(st.one_of(*BODIES.values()))
