"""Local metres <-> WGS-84 around a scenario origin.

A local tangent plane (x east, y north) with the WGS-84 ellipsoid's radii of curvature at
the origin. Over the few kilometres of a scenario the error is below a centimetre per
hundred metres, the same order as the 1e-7 degree (about 1 cm) of the wire format.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from v2x.core.messages import GeoPoint

_A = 6_378_137.0  # [m] WGS-84 semi-major axis
_F = 1 / 298.257223563  # WGS-84 flattening
_E2 = _F * (2 - _F)

FloatArray = npt.NDArray[np.float64]


class LocalFrame:
    """Converts between local (x east, y north) metres and WGS-84 degrees."""

    def __init__(self, lat0_deg: float, lon0_deg: float, elevation0_m: float = 0.0) -> None:
        self.lat0_deg = lat0_deg
        self.lon0_deg = lon0_deg
        self.elevation0_m = elevation0_m
        phi = math.radians(lat0_deg)
        w = math.sqrt(1 - _E2 * math.sin(phi) ** 2)
        meridional = _A * (1 - _E2) / w**3  # [m] radius of curvature north-south
        normal = _A / w  # [m] radius of curvature east-west
        self._m_per_deg_lat = math.radians(1) * meridional
        self._m_per_deg_lon = math.radians(1) * normal * math.cos(phi)

    def to_geo(self, x_m: float, y_m: float) -> GeoPoint:
        return GeoPoint(
            self.lat0_deg + y_m / self._m_per_deg_lat,
            self.lon0_deg + x_m / self._m_per_deg_lon,
            self.elevation0_m,
        )

    def to_geo_arrays(self, x_m: FloatArray, y_m: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Vectorised: (lat_deg, lon_deg) arrays."""
        return self.lat0_deg + y_m / self._m_per_deg_lat, self.lon0_deg + x_m / self._m_per_deg_lon

    def to_local(self, lat_deg: float, lon_deg: float) -> tuple[float, float]:
        return (lon_deg - self.lon0_deg) * self._m_per_deg_lon, (lat_deg - self.lat0_deg) * self._m_per_deg_lat

    @property
    def m_per_deg(self) -> tuple[float, float]:
        """Metres per degree of latitude and of longitude: `to_local` is (lon - lon0) * the second, (lat - lat0) * the
        first (compiled code that works it out gives the same floats)."""
        return self._m_per_deg_lat, self._m_per_deg_lon


def heading_deg(dx: float, dy: float) -> float:
    """Compass heading [deg, clockwise from north] of a direction (dx east, dy north)."""
    return math.degrees(math.atan2(dx, dy)) % 360.0
