"""Scenario files: every bundled one is valid and round-trips; bad ones fail with FILE:LINE: path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from v2x.core import scenario
from v2x.core.errors import ScenarioError

BUNDLED = scenario.bundled()
FOUR_WAY = scenario.bundled_dir() / "four_way.toml"


def test_the_five_bundled_scenarios_exist() -> None:
    assert {p.stem for p in BUNDLED} >= {"four_way", "t_junction", "corridor", "hazard", "emergency"}


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.stem)
def test_bundled_scenario_is_valid_and_round_trips(path: Path) -> None:
    s = scenario.load(path)
    assert s.name == path.stem
    assert s.description
    assert "\n" not in s.description
    assert scenario.parse(scenario.dumps(s), "dumped") == s


def _problems(text: str) -> list[str]:
    with pytest.raises(ScenarioError) as info:
        scenario.parse(text, "s.toml")
    return info.value.problems


def _edit(old: str, new: str, count: int = 1) -> str:
    text = FOUR_WAY.read_text()
    assert old in text, old
    return text.replace(old, new, count)


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_misspelt_key_names_file_line_and_field() -> None:
    text = _edit("  lane_width_m = 3.5", "  lane_widht_m = 3.5")
    [p] = _problems(text)
    assert p.startswith(f"s.toml:{_line_of(text, 'lane_widht_m')}: intersections[0].approaches[0].lane_widht_m: unknown key")
    assert 'did you mean "lane_width_m"?' in p


def test_negative_lane_count() -> None:
    text = _edit("  lanes = 2               # lane 0", "  lanes = -2              # lane 0")
    [p] = _problems(text)
    assert p == f"s.toml:{_line_of(text, 'lanes = -2')}: intersections[0].approaches[0].lanes: -2 is out of range (expected an integer >= 1)"


def test_wrong_type() -> None:
    text = _edit("vph = 500.0", 'vph = "heavy"')
    [p] = _problems(text)
    assert p == f's.toml:{_line_of(text, "heavy")}: demand[0].vph: "heavy" is not a number (expected a number)'


def test_integer_field_rejects_a_float_and_a_bool() -> None:
    assert "is not an integer" in _problems(_edit("seed = 1 ", "seed = 1.5 "))[0]
    assert "true is not an integer" in _problems(_edit("seed = 1 ", "seed = true "))[0]


def test_out_of_range_value_in_inline_table() -> None:
    text = _edit("turns = { left = 0.15, through = 0.7, right = 0.15 }", "turns = { left = 1.5, through = 0.7, right = 0.15 }")
    problems = _problems(text)
    line = _line_of(text, "left = 1.5")
    assert f"s.toml:{line}: demand[0].turns.left: 1.5 is out of range (expected a share 0..1)" in problems
    assert any(p.startswith(f"s.toml:{line}: demand[0].turns: shares sum to 2.35") for p in problems)


def test_unknown_choice_suggests_the_nearest() -> None:
    text = _edit('policy = "fixed"', 'policy = "adaptiv"')
    [p] = _problems(text)
    assert "control.policy" in p
    assert 'did you mean "adaptive"?' in p


def test_dangling_rsu_intersection() -> None:
    text = _edit('id = "RSU-J1"\nintersection = "J1"', 'id = "RSU-J1"\nintersection = "J7"')
    [p] = _problems(text)
    assert p.startswith(f's.toml:{_line_of(text, "J7")}: rsus[0].intersection: "J7" is not an intersection')
    assert "expected one of ['J1']" in p


def test_malformed_movement_in_a_phase() -> None:
    text = _edit('movements = ["north.through"', 'movements = ["north.straight"')
    first, unserved = _problems(text)
    assert first.startswith(f"s.toml:{_line_of(text, 'north.straight')}: intersections[0].signal.phases[0].movements[0]:")
    assert '"north.straight" is not a movement' in first
    assert 'no phase gives green to "north.through"' in unserved


def test_phase_movement_on_a_missing_leg() -> None:
    text = (scenario.bundled_dir() / "t_junction.toml").read_text().replace('"south.left", "south.right"', '"south.left", "south.right", "north.through"')
    [p] = _problems(text)
    assert "intersections[0].signal.phases[1].movements[2]" in p
    assert "this intersection has no north approach" in p


def test_missing_required_key_points_at_its_table() -> None:
    text = _edit('id = "RSU-J1"\n', "")
    [p] = _problems(text)
    assert p == f's.toml:{_line_of(text, "[[rsus]]")}: rsus[0]: missing key "id" (expected a string)'


def test_every_problem_is_reported_at_once() -> None:
    text = _edit("  lane_width_m = 3.5", "  lane_width_m = 9.5", 4)
    assert len(_problems(text)) == 4


def test_phase_times_must_add_up_to_the_cycle() -> None:
    [p] = _problems(_edit("cycle_s = 70.0", "cycle_s = 75.0"))
    assert "intersections[0].signal.cycle_s: 75 differs from the phases' total 70 s" in p


def test_unserved_movement_is_rejected() -> None:
    text = _edit('"north.left", ', "")
    [p] = _problems(text)
    assert 'no phase gives green to "north.left"' in p


def test_corridor_roads_must_face_each_other() -> None:
    text = (scenario.bundled_dir() / "corridor.toml").read_text().replace('ends = ["J1.east", "J2.west"]', 'ends = ["J1.west", "J2.east"]')
    problems = _problems(text)
    assert any("do not face each other" in p for p in problems)


def test_syntax_error_has_a_line() -> None:
    [p] = _problems('name = "x"\n\n[origin\n')
    assert p.startswith("s.toml:3: (syntax):")


def test_locator_handles_multiline_arrays_and_strings() -> None:
    from v2x.core.schema import Locator

    text = 'a = """x\n[not.a.table]\n"""\n[t]\nb = [\n  1,\n  { c = "]#", d = 2 },\n]\n[[u]]\n[[u]]\ne = 1 # c\n'
    loc = Locator(text)
    assert loc.lines[("t", "b", 1, "d")] == 7
    assert loc.lines[("u", 1, "e")] == 11
    assert ("not",) not in loc.lines


@pytest.mark.integration
def test_cli_validate_exit_codes(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "v2x", "validate", *map(str, BUNDLED)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(_edit("  lanes = 2               # lane 0", "  lanes = -1              # lane 0"))
    res = subprocess.run([sys.executable, "-m", "v2x", "validate", str(bad)], capture_output=True, text=True)
    assert res.returncode == 2
    assert f"{bad}:" in res.stderr
    assert "intersections[0].approaches[0].lanes" in res.stderr
    missing = subprocess.run([sys.executable, "-m", "v2x", "validate", str(tmp_path / "nope.toml")], capture_output=True, text=True)
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr


@pytest.mark.integration
def test_cli_lists_scenarios() -> None:
    res = subprocess.run([sys.executable, "-m", "v2x", "scenarios"], capture_output=True, text=True, check=True)
    for p in BUNDLED:
        assert p.stem in res.stdout


def test_bad_gnss_settings_name_file_line_and_field() -> None:
    text = FOUR_WAY.read_text() + (
        '\n[fleet.gnss]\nreceiver = "gps"\nrtk_share = 1.5\n\n[fleet.gnss.standard]\nsigma_m = -2.0\ntau_s = 300.0\nnoise_m = 0.3\n'
    )
    assert _problems(text) == [
        f's.toml:{_line_of(text, "receiver = ")}: fleet.gnss.receiver: "gps" is not allowed (expected one of "off", "standard", "rtk")',
        f"s.toml:{_line_of(text, 'rtk_share = ')}: fleet.gnss.rtk_share: 1.5 is out of range (expected a number <= 1)",
        f"s.toml:{_line_of(text, 'sigma_m = ')}: fleet.gnss.standard.sigma_m: -2 is out of range (expected a number >= 0)",
    ]
    ok = scenario.parse(FOUR_WAY.read_text() + '\n[fleet.gnss]\nreceiver = "standard"\nrtk_share = 0.25\n', "s.toml")
    assert (ok.fleet.gnss.receiver, ok.fleet.gnss.rtk_share) == ("standard", 0.25)
    assert scenario.parse(scenario.dumps(ok), "dumped") == ok
