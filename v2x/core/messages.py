"""Domain messages: what the simulator's tiers say to each other, in SI units.

These are plain frozen dataclasses, free of protobuf. `v2x.core.codec` converts them to and
from the wire format (`proto/v2x/v1/v2x.proto`), quantising to the standards' units.
Enum values equal the wire values, so the mapping is the identity on integers
(a test checks the names and values against the .proto).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# ---------------------------------------------------------------------------
# Enums (values as on the wire)
# ---------------------------------------------------------------------------


class SenderKind(enum.IntEnum):
    UNSPECIFIED = 0
    VEHICLE = 1
    RSU = 2
    CLOUD = 3


class VehicleClass(enum.IntEnum):
    UNSPECIFIED = 0
    PASSENGER_CAR = 10
    TRUCK = 20
    BUS = 40
    EMERGENCY = 60


class Transmission(enum.IntEnum):
    NEUTRAL = 0
    PARK = 1
    FORWARD = 2
    REVERSE = 3
    UNAVAILABLE = 7


class VehicleEvent(enum.IntEnum):
    """Bit numbers of J2735 VehicleEventFlags."""

    HAZARD_LIGHTS = 0
    STOP_LINE_VIOLATION = 1
    ABS_ACTIVATED = 2
    TRACTION_CONTROL_LOSS = 3
    STABILITY_CONTROL_ACTIVATED = 4
    HAZARDOUS_MATERIALS = 5
    HARD_BRAKING = 7
    LIGHTS_CHANGED = 8
    WIPERS_CHANGED = 9
    FLAT_TIRE = 10
    DISABLED_VEHICLE = 11
    AIR_BAG_DEPLOYMENT = 12


class ExteriorLight(enum.IntEnum):
    """Bit numbers of J2735 ExteriorLights."""

    LOW_BEAM = 0
    HIGH_BEAM = 1
    LEFT_TURN_SIGNAL = 2
    RIGHT_TURN_SIGNAL = 3
    HAZARD_SIGNAL = 4
    AUTOMATIC_LIGHT_CONTROL = 5
    DAYTIME_RUNNING = 6
    FOG = 7
    PARKING = 8


class Maneuver(enum.IntEnum):
    """Bit numbers of J2735 AllowedManeuvers."""

    STRAIGHT = 0
    LEFT = 1
    RIGHT = 2
    U_TURN = 3


class LaneDirection(enum.IntEnum):
    UNSPECIFIED = 0
    INGRESS = 1
    EGRESS = 2


class LightState(enum.IntEnum):
    """CSAE LightState (J2735 MovementPhaseState in the .proto comments)."""

    UNAVAILABLE = 0
    DARK = 1
    FLASHING_RED = 2
    RED = 3
    FLASHING_GREEN = 4
    PERMISSIVE_GREEN = 5
    PROTECTED_GREEN = 6
    YELLOW = 7
    FLASHING_YELLOW = 8


class IntersectionStatus(enum.IntEnum):
    """Bit numbers of J2735 IntersectionStatusObject."""

    MANUAL_CONTROL = 0
    STOPPED_STATE = 1
    FAILURE_FLASH = 2
    PREEMPT_OR_PRIORITY = 3
    SIGNAL_PRIORITY_ACTIVE = 4
    FIXED_TIME = 5
    TRAFFIC_DEPENDENT = 6
    STANDBY = 7
    FAILURE_MODE = 8
    OFF = 9


class HazardKind(enum.IntEnum):
    UNSPECIFIED = 0
    STALLED_VEHICLE = 1
    ROAD_WORKS = 2
    ACCIDENT = 3
    OBSTACLE = 4
    HARD_BRAKING = 5
    EMERGENCY_VEHICLE = 6


class EventSource(enum.IntEnum):
    UNKNOWN = 0
    POLICE = 1
    GOVERNMENT = 2
    METEOROLOGICAL = 3
    INTERNET = 4
    DETECTION = 5


class EventStatus(enum.IntEnum):
    UNSPECIFIED = 0
    ACTIVE = 1
    ENDED = 2


class ParticipantType(enum.IntEnum):
    UNKNOWN = 0
    MOTOR = 1
    NON_MOTOR = 2
    PEDESTRIAN = 3
    RSU = 4


class SourceType(enum.IntEnum):
    UNKNOWN = 0
    SELF_INFO = 1
    V2X = 2
    VIDEO = 3
    MICROWAVE_RADAR = 4
    LOOP = 5
    LIDAR = 6
    INTEGRATED = 7


class ControlMode(enum.IntEnum):
    UNSPECIFIED = 0
    FIXED_TIME = 1
    ACTUATED = 2


class AdvisoryKind(enum.IntEnum):
    UNSPECIFIED = 0
    SPEED = 1
    YIELD_EMERGENCY = 2
    HAZARD = 3
    LANE_CHANGE = 4


class VehicleRole(enum.IntEnum):
    BASIC = 0
    EMERGENCY = 6
    TRANSIT = 16


class RequestType(enum.IntEnum):
    RESERVED = 0
    REQUEST = 1
    UPDATE = 2
    CANCELLATION = 3


class PriorityState(enum.IntEnum):
    UNKNOWN = 0
    REQUESTED = 1
    PROCESSING = 2
    WATCH_OTHER_TRAFFIC = 3
    GRANTED = 4
    REJECTED = 5
    MAX_PRESENCE = 6
    RESERVICE_LOCKED = 7


class PriorityAction(enum.IntEnum):
    NONE = 0
    EARLY_GREEN = 1
    GREEN_EXTENSION = 2


class ServiceState(enum.IntEnum):
    UNSPECIFIED = 0
    ONLINE = 1
    OFFLINE = 2


STOPPED = "stopped"  # the detail of a service's offline status on a clean shutdown
LOST = "connection lost"  # the detail of a service's offline status in its Last Will, published by the broker


# ---------------------------------------------------------------------------
# Shared types
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GeoPoint:
    """A WGS-84 position."""

    lat_deg: float
    lon_deg: float
    elevation_m: float | None = None  # None: unavailable


@dataclass(frozen=True, slots=True)
class PositionalAccuracy:
    """J2735 PositionalAccuracy: the horizontal error ellipse of a GNSS position, at one standard deviation."""

    semi_major_m: float  # [m] 0..12.7 (larger is sent as 12.7: "12.7 m or more")
    semi_minor_m: float  # [m] 0..12.7, at most semi_major_m
    orientation_deg: float | None = None  # [deg] the semi-major axis from true north, clockwise; None: unavailable


@dataclass(frozen=True, slots=True)
class IntersectionRef:
    """J2735 IntersectionReferenceID."""

    region: int
    id: int


@dataclass(frozen=True, slots=True)
class Header:
    sender_id: str
    sender_kind: SenderKind
    seq: int  # per sender and stream (message type and topic), wraps at 2**32
    gen_time_us: int  # [us] since the Unix epoch, UTC
    sim_time_ms: int  # [ms] since the scenario start


# ---------------------------------------------------------------------------
# Bodies
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EmergencyExt:
    siren_in_use: bool = False
    lights_in_use: bool = False
    responding: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Bsm:
    """Basic Safety Message: one vehicle's state."""

    position: GeoPoint
    speed_mps: float  # [m/s]
    heading_deg: float  # [deg] clockwise from true north, 0 <= h < 360
    accel_mps2: float = 0.0  # [m/s^2] longitudinal
    accel_lat_mps2: float = 0.0  # [m/s^2] lateral
    yaw_rate_dps: float = 0.0  # [deg/s]
    transmission: Transmission = Transmission.FORWARD
    brake_applied: bool = False
    width_m: float = 1.8  # [m]
    length_m: float = 4.5  # [m]
    height_m: float | None = None  # [m], None: unavailable
    vehicle_class: VehicleClass = VehicleClass.PASSENGER_CAR
    events: frozenset[VehicleEvent] = frozenset()
    emergency: EmergencyExt | None = None
    lights: frozenset[ExteriorLight] = frozenset()  # exterior lights on: turn signals, hazard signal
    accuracy: PositionalAccuracy | None = None  # how accurate `position` is (GNSS); None: not stated


@dataclass(frozen=True, slots=True)
class Connection:
    """Where an ingress lane leads and which signal group controls the movement."""

    lane_id: int  # egress lane
    maneuver: frozenset[Maneuver]
    signal_group: int  # 1..255, 0 = uncontrolled
    remote_intersection: IntersectionRef | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MapLane:
    lane_id: int
    name: str
    direction: LaneDirection
    approach_id: int
    maneuvers: frozenset[Maneuver]
    width_m: float  # [m]
    speed_limit_mps: float  # [m/s]
    nodes: tuple[tuple[float, float], ...]  # [m] (east, north) offsets from the reference point
    connections: tuple[Connection, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class IntersectionGeometry:
    ref: IntersectionRef
    name: str
    revision: int
    ref_point: GeoPoint
    lanes: tuple[MapLane, ...]


@dataclass(frozen=True, slots=True)
class MapData:
    intersections: tuple[IntersectionGeometry, ...]


@dataclass(frozen=True, slots=True)
class TimeChange:
    """Times of one signal state in [s] counted from the SPaT timestamp; None: unavailable."""

    start_s: float | None = 0.0
    min_end_s: float | None = None
    max_end_s: float | None = None
    likely_end_s: float | None = None
    confidence: int = 0  # J2735 TimeIntervalConfidence 0..15


@dataclass(frozen=True, slots=True)
class MovementEvent:
    state: LightState
    timing: TimeChange | None = None


@dataclass(frozen=True, slots=True)
class MovementState:
    signal_group: int
    events: tuple[MovementEvent, ...]  # the first is the current state


@dataclass(frozen=True, slots=True, kw_only=True)
class IntersectionState:
    ref: IntersectionRef
    name: str
    revision: int
    status: frozenset[IntersectionStatus]
    timestamp_ms: int  # [ms] UTC since the epoch, what the timing counts from
    plan_id: int
    states: tuple[MovementState, ...]


@dataclass(frozen=True, slots=True)
class Spat:
    intersections: tuple[IntersectionState, ...]


@dataclass(frozen=True, slots=True)
class LaneRef:
    intersection: IntersectionRef
    lane_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RoadTrafficEvent:
    event_id: int  # 0..255
    kind: HazardKind
    source: EventSource
    status: EventStatus
    position: GeoPoint
    radius_m: float  # [m]
    lanes: tuple[LaneRef, ...] = ()  # empty: every lane in the zone
    priority: int = 0  # 0..7, 7 highest
    start_time_ms: int = 0  # [ms] UTC since the epoch
    end_time_ms: int | None = None  # [ms] UTC since the epoch; None: until cleared
    description: str = ""


@dataclass(frozen=True, slots=True)
class Rsi:
    ref_pos: GeoPoint
    events: tuple[RoadTrafficEvent, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Participant:
    type: ParticipantType
    ptc_id: int
    source: SourceType
    vehicle_id: str
    position: GeoPoint
    speed_mps: float  # [m/s]
    heading_deg: float  # [deg]
    width_m: float  # [m]
    length_m: float  # [m]
    lane_id: int = 0  # 0: unknown
    intersection: IntersectionRef | None = None


@dataclass(frozen=True, slots=True)
class Rsm:
    ref_pos: GeoPoint
    participants: tuple[Participant, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PhasePlan:
    phase_id: int
    signal_groups: tuple[int, ...]
    green_s: float  # [s]
    yellow_s: float  # [s]
    all_red_s: float  # [s]
    min_green_s: float  # [s]
    max_green_s: float  # [s]


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalPlan:
    intersection: IntersectionRef
    plan_id: int
    mode: ControlMode
    cycle_s: float  # [s]
    offset_s: float  # [s] from sim time 0
    phases: tuple[PhasePlan, ...]
    not_before_ms: int | None = None  # [ms] UTC; None: at the next safe boundary
    reason: str = ""
    valid_until_ms: int | None = None  # [ms] UTC: not to be applied after (a signed plan is fresh until then); None: no end


@dataclass(frozen=True, slots=True, kw_only=True)
class Advisory:
    target_id: str  # empty: every vehicle on the topic's tiles
    kind: AdvisoryKind
    advised_speed_mps: float | None = None  # [m/s]
    valid_until_ms: int = 0  # [ms] UTC
    event_id: int = 0
    intersection: IntersectionRef | None = None
    text: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PriorityRequest:
    request_id: int
    intersection: IntersectionRef
    type: RequestType
    role: VehicleRole
    in_lane_id: int
    out_lane_id: int = 0
    eta_s: float = 0.0  # [s] from the header time to the stop line
    position: GeoPoint | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PriorityStatus:
    requester_id: str
    request_id: int
    intersection: IntersectionRef
    state: PriorityState
    action: PriorityAction = PriorityAction.NONE
    signal_group: int = 0


@dataclass(frozen=True, slots=True)
class Status:
    state: ServiceState
    version: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class CheckedSpat:
    """A SPaT of one intersection read by a receiver that only relays it (`codec.skim`): every value checked as
    `codec.decode` checks it, but of the intersection only what the relay and the trust rules read: its name, its id
    and its timestamp [ms UTC]. Never encoded: its bytes are relayed as they came."""

    name: str
    id: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class CheckedRsm:
    """An RSM read by a receiver that only counts it (`codec.skim`): every value checked as `codec.decode` checks it,
    its participants not built; how many it has."""

    participants: int


Body = (
    Bsm | MapData | Spat | Rsi | Rsm | SignalPlan | Advisory | PriorityRequest | PriorityStatus | Status | CheckedSpat
    | CheckedRsm
)


@dataclass(frozen=True, slots=True)
class Frame:
    """One MQTT payload: a header and one body."""

    header: Header
    body: Body


class MessageType(enum.Enum):
    """Message type names as used in topics, reports and logs."""

    BSM = "bsm"
    MAP = "map"
    SPAT = "spat"
    RSI = "rsi"
    RSM = "rsm"
    SIGNAL_PLAN = "plan"
    ADVISORY = "advisory"
    PRIORITY_REQUEST = "prq"
    PRIORITY_STATUS = "prs"
    STATUS = "status"


BODY_TYPES: dict[type, MessageType] = {
    Bsm: MessageType.BSM,
    MapData: MessageType.MAP,
    Spat: MessageType.SPAT,
    Rsi: MessageType.RSI,
    Rsm: MessageType.RSM,
    SignalPlan: MessageType.SIGNAL_PLAN,
    Advisory: MessageType.ADVISORY,
    PriorityRequest: MessageType.PRIORITY_REQUEST,
    PriorityStatus: MessageType.PRIORITY_STATUS,
    Status: MessageType.STATUS,
    CheckedSpat: MessageType.SPAT,
    CheckedRsm: MessageType.RSM,
}


def message_type(body: Body) -> MessageType:
    """The message type of a body."""
    return BODY_TYPES[type(body)]


TYPE_NAMES: dict[type, str] = {cls: t.value for cls, t in BODY_TYPES.items()}


def type_name(body: Body) -> str:
    """The message type's name (`message_type(body).value`), for the per-message paths: an enum's value is a
    property, several times dearer than this lookup."""
    return TYPE_NAMES[type(body)]
