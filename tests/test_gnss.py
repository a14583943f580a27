"""GNSS error (v2x/vehicle/gnss.py): each OBU's receiver class from the seed, a bias that varies slowly around
the receiver's sigma plus noise, and the accuracy each BSM states. Pure logic, no broker."""

from __future__ import annotations

import numpy as np

from v2x.core import messages as m
from v2x.core.geo import LocalFrame
from v2x.core.scenario import Gnss
from v2x.vehicle.gnss import GnssError

FRAME = LocalFrame(31.0, 121.0)


def _errors(gnss: Gnss, seed: int = 1, vehicles: int = 200, seconds: float = 60.0) -> tuple[np.ndarray, GnssError]:
    """Errors [m] (time, vehicle, east/north) of `vehicles` standing at the origin, fixes at 10 Hz."""
    model = GnssError(gnss, seed, FRAME)
    at = m.Bsm(position=m.GeoPoint(31.0, 121.0), speed_mps=0.0, heading_deg=0.0)
    out = []
    for k in range(round(seconds * 10)):
        said = model.apply([(vid, at) for vid in range(vehicles)], k / 10)
        out.append([FRAME.to_local(b.position.lat_deg, b.position.lon_deg) for _, b in said])
    return np.array(out), model


def test_standard_receivers_err_by_their_sigma_slowly_and_say_so() -> None:
    gnss = Gnss("standard")
    err, model = _errors(gnss)
    sigma = np.hypot(gnss.standard.sigma_m, gnss.standard.noise_m)
    assert 0.85 * sigma < err.std() < 1.15 * sigma  # over vehicles and time, per axis
    assert np.abs(np.diff(err, axis=0)).std() < 2 * gnss.standard.noise_m  # fix to fix: the noise, not the bias
    said = model.apply([(0, m.Bsm(position=m.GeoPoint(31.0, 121.0), speed_mps=0.0, heading_deg=0.0))], 60.0)[0][1]
    assert said.accuracy == m.PositionalAccuracy(sigma, sigma, 0.0)


def test_the_rtk_share_and_every_error_come_from_the_seed() -> None:
    gnss = Gnss("standard", rtk_share=0.3)
    err, model = _errors(gnss, vehicles=400, seconds=1.0)
    rtk = [vid for vid in range(400) if model.receiver_of(vid) == "rtk"]
    assert 0.25 < len(rtk) / 400 < 0.35
    assert np.abs(err[:, rtk]).max() < 0.2  # centimetres
    assert np.array_equal(err, _errors(gnss, vehicles=400, seconds=1.0)[0])
    assert not np.array_equal(err, _errors(gnss, seed=2, vehicles=400, seconds=1.0)[0])
