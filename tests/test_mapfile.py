"""The mapping file: every problem named with its line, the rules applied to pushes, the commands."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from devkit import samples
from devkit.procs import BIN, ROOT
from shared.settings import Settings
from tests.helpers import to_env
from worker import mapfile
from worker.errors import InvalidPush
from worker.transform import map_event
from worker.validate import validate

GOOD = """\
version: 1
identities:
  - namespace: ECID
    value: attendee.clientId
    primary: true
    authenticatedState: ambiguous
  - namespace: Email
    value: lower(trim(attendee.email))
event:
  _id: sha256(concat(transmissionId, "-v2"))
fields:
  _{tenant}.transmissionId: transmissionId
  _{tenant}.registration.attendee.email: attendee.email
  _{tenant}.registration.session.minutes: {value: to_integer(session.length), type: integer}
  _{tenant}.registration.session.hours: {value: session.length, type: number}
  _{tenant}.registration.vip: {value: 'iif(attendee.registered == "Yes", true, false)', type: boolean}
  _{tenant}.registration.startDay: {value: 'date(sessiontime.startTime, "yyyy-MM-dd HH:mm:ss")', type: date}
  _{tenant}.registration.at: {value: 'date(sessiontime.startTime, "yyyy-MM-dd HH:mm:ss")', type: date-time}
  _{tenant}.survey.answer: "${Survey Answer}"
  _{tenant}.badge.color: {value: badge.color, required: true}
overrides:
  LeadCaptured:
    _{tenant}.survey.answer: null
    _{tenant}.lead.note: upper(lead.note)
tests:
  - push: {transmissionId: t1, eventType: X, timestamp: "2026-01-01T00:00:00Z", attendee: {clientId: C1}}
    invalid: true
"""


def mapping_of(text: str, tenant: str = "acme") -> mapfile.Mapping:
    """The compiled mapping of ``text``, its tenant resolved."""
    return mapfile.loads(textwrap.dedent(text), "m.yaml").resolve(tenant)


def problems_of(text: str) -> list[str]:
    """The FILE:LINE lines ``check`` would print for ``text``."""
    with pytest.raises(mapfile.MappingError) as caught:
        mapfile.loads(textwrap.dedent(text), "m.yaml")
    return caught.value.lines()


def event(mapping: mapfile.Mapping, raw: dict[str, Any]) -> dict[str, Any]:
    """The xdmEntity of ``raw`` by ``mapping``, through validation as ingest does it."""
    return map_event(validate(raw, require_email=mapping.needs_email), raw, mapping)


PUSH = {
    **samples.summit(attendee__email=None, attendee__clientId="ECID-1", session__length="90"),
    "Survey Answer": "Yes, twice",
    "badge": {"color": "red"},
}


def test_a_mapping_places_converts_and_identifies_as_written() -> None:
    got = event(mapping_of(GOOD), PUSH)
    assert got["identityMap"] == {
        "ECID": [{"id": "ECID-1", "primary": True, "authenticatedState": "ambiguous"}]
    }
    assert got["_id"] == mapfile.expressions.FUNCTIONS["sha256"].call("1680309557133001YHhz-v2")
    assert got["_acme"] == {
        "transmissionId": "1680309557133001YHhz",
        "registration": {
            "session": {"minutes": 90, "hours": 90.0},
            "vip": True,
            "startDay": "2023-03-22",
            "at": "2023-03-22T10:00:00.000Z",
        },
        "survey": {"answer": "Yes, twice"},
        "badge": {"color": "red"},
    }


def test_an_optional_identity_that_comes_out_empty_is_left_out_and_the_email_is_not_required() -> None:
    got = event(mapping_of(GOOD), PUSH)
    assert "Email" not in got["identityMap"]
    assert "email" not in json.dumps(got["_acme"])


def test_an_override_adds_replaces_and_removes_fields_for_its_event_type() -> None:
    got = event(mapping_of(GOOD), {**PUSH, "eventType": "LeadCaptured"})
    assert "survey" not in got["_acme"]
    assert got["_acme"]["lead"] == {"note": "WANTS A DEMO OF THE OPS DASHBOARD."}
    assert "lead" not in event(mapping_of(GOOD), PUSH)["_acme"]


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        ({"badge": None}, "badge.color", "the mapping requires XDM field _acme.badge.color"),
        ({"attendee": {"clientId": ""}}, "attendee.clientId", "primary identity (ECID)"),
        (
            {"badge": {"color": {"deep": 1}}},
            "badge.color",
            "Cannot be converted for XDM field _acme.badge.color",
        ),
        ({"sessiontime": {"startTime": "March 22"}}, "sessiontime.startTime", "_acme.registration.startDay"),
    ],
)
def test_a_push_the_mapping_cannot_use_is_invalid_naming_destination_and_source(
    change: dict[str, Any], where: str, message: str
) -> None:
    raw = {**PUSH, **change}
    if "sessiontime" in change:
        raw = {**PUSH, "sessiontime": {**PUSH["sessiontime"], **change["sessiontime"]}}
    if "attendee" in change:
        raw = {**PUSH, "attendee": {**PUSH["attendee"], **change["attendee"]}}
    with pytest.raises(InvalidPush) as caught:
        event(mapping_of(GOOD), raw)
    assert where in caught.value.detail
    assert any(message in text for text in caught.value.detail[where]), caught.value.detail


def test_the_content_hash_names_the_file_and_changes_with_it() -> None:
    assert mapping_of(GOOD).digest == mapping_of(GOOD).digest
    assert mapping_of(GOOD).digest != mapping_of(GOOD + "# a comment\n").digest


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: 1\nidentities: [\n", ["m.yaml:3: not valid YAML or JSON"]),
        ("", ["m.yaml:1: the file is empty"]),
        (
            GOOD.replace("value: attendee.clientId", "value: frob(attendee.clientId)"),
            ["m.yaml:4: unknown function 'frob'"],
        ),
        (
            GOOD.replace("_{tenant}.survey.answer:", "_{tenant}.transmissionId:", 1),
            [
                "m.yaml:19: fields._{tenant}.transmissionId is written twice",
                "m.yaml:23: overrides.LeadCaptured removes '_{tenant}.survey.answer',"
                " which fields does not write",
            ],
        ),
        (
            GOOD.replace("_{tenant}.badge.color:", "_{tenant}.registration.vip.why:"),
            ["m.yaml:16: _{tenant}.registration.vip is a parent of _{tenant}.registration.vip.why"],
        ),
        (
            GOOD.replace("    primary: true\n", ""),
            ["m.yaml:2: exactly one identity must have primary: true (found 0)"],
        ),
        (
            GOOD.replace(
                "    value: lower(trim(attendee.email))", "    value: attendee.email\n    primary: true"
            ),
            ["m.yaml:2: exactly one identity must have primary: true (found 2)"],
        ),
        (GOOD.replace("type: number", "type: decimal"), ["m.yaml:15: type 'decimal'"]),
        (
            GOOD.replace("  _{tenant}.transmissionId:", "  transmission:"),
            ["m.yaml:12: destination 'transmission'"],
        ),
        (GOOD.replace("version: 1", "version: 2"), ["m.yaml:1: version must be 1"]),
        (
            GOOD.replace("    _{tenant}.survey.answer: null", "    _{tenant}.nope: null"),
            ["m.yaml:23: overrides"],
        ),
        (GOOD.replace("event:\n", "event:\n  identityMap: x\n"), ["m.yaml:10: event may set only"]),
        (GOOD + "extra: 1\n", ["m.yaml:28: unknown key 'extra'"]),
    ],
)
def test_check_names_each_problem_with_its_line(text: str, expected: list[str]) -> None:
    lines = problems_of(text)
    assert len(lines) == len(expected), lines
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith(start), lines


def test_check_reports_every_problem_at_once() -> None:
    text = (
        GOOD.replace("frob", "x").replace("type: number", "type: decimal").replace("version: 1", "version: 3")
    )
    text = text.replace("value: badge.color", "value: frob(badge.color)")
    assert len(problems_of(text)) == 3


def rainbridge(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the ``rainbridge`` command as an operator would."""
    return subprocess.run(
        [str(BIN / "rainbridge"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
        check=False,
    )


def test_the_commands_check_try_test_and_default(tmp_path: Path, settings: Settings) -> None:
    env = to_env(settings)
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    result = rainbridge("mapping", "check", str(good), env=env)
    assert result.returncode == 0 and f"{good}: OK (mapping {mapfile.load(good).digest}" in result.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        GOOD.replace("type: number", "type: decimal").replace("frob", "x").replace("upper(", "uper(")
    )
    result = rainbridge("mapping", "check", str(bad), env=env)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{bad}:15: type 'decimal' of _{{tenant}}.registration.session.hours is not one of"
        " string, integer, number, boolean, date-time, date",
        f"{bad}:24: unknown function 'uper' (column 1 of 'uper(lead.note)')",
    ]
    result = rainbridge("mapping", "try", str(good), "-", "--tenant", "acme", env=env, stdin=json.dumps(PUSH))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["_acme"]["badge"] == {"color": "red"}
    result = rainbridge("mapping", "try", str(good), "-", env=env, stdin=json.dumps({**PUSH, "badge": None}))
    assert result.returncode == 1 and result.stdout.startswith('invalid_payload: {"badge.color"')
    assert rainbridge("mapping", "test", str(good), env=env).stdout.strip() == "1 of 1 tests passed"
    result = rainbridge("mapping", "default", env=env)
    assert result.stdout == (ROOT / "worker" / "mappings" / "default-Email.yaml").read_text()


def test_a_failing_inline_test_prints_a_field_by_field_diff(tmp_path: Path, settings: Settings) -> None:
    default = (ROOT / "worker" / "mappings" / "default-Email.yaml").read_text()
    changed = default.replace("transmissionId: t1\n", "transmissionId: t2\n        lead: {note: hi}\n")
    path = tmp_path / "m.yaml"
    path.write_text(changed)
    result = rainbridge("mapping", "test", str(path), "--tenant", "acme", env=to_env(settings))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].endswith(": test 1: the event differs")
    assert '  /_acme/lead: missing (expected {"note": "hi"})' in lines
    assert '  /_acme/transmissionId: expected "t2", got "t1"' in lines
    assert lines[-1] == "1 of 2 tests passed, 1 failed"


def test_a_worker_pointed_at_a_bad_mapping_stops_at_start_with_the_same_line(
    tmp_path: Path, settings: Settings
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("upper(", "uper("))
    env = {**to_env(settings), "MAPPING_FILE": str(path)}
    result = subprocess.run(
        [str(BIN / "celery"), "-A", "worker.app", "worker"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "MAPPING_FILE" in line]
    assert lines == [
        f"rainbridge: configuration error: MAPPING_FILE {path}:24:"
        " unknown function 'uper' (column 1 of 'uper(lead.note)')"
    ]
    check = rainbridge("check", env=env)
    assert f"FAIL  mapping {path}:24: unknown function 'uper'" in check.stdout


def test_the_readme_example_checks_and_its_tests_pass(tmp_path: Path, settings: Settings) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Your own mapping") :]
    example = section[
        section.index("```yaml\n") + len("```yaml\n") : section.index("```\n", section.index("```yaml"))
    ]
    path = tmp_path / "example.yaml"
    path.write_text(example)
    env = to_env(settings)
    assert rainbridge("mapping", "check", str(path), env=env).returncode == 0
    result = rainbridge("mapping", "test", str(path), env=env)
    assert result.stdout.strip() == "2 of 2 tests passed", result.stdout
