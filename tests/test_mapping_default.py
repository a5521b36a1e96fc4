"""The shipped default mapping file is exactly the built-in XDM event, for both identity namespaces.

Every push of the corpus, and pushes hypothesis draws (nested or flat-dotted, ids as numbers,
padded mixed-case emails, lengths as strings, unknown fields), map through the default file to
the same ExperienceEvent the hand-written table produces, field by field and in the same order.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devkit import samples
from shared.push import PUSH_FIELDS
from shared.settings import Settings
from worker import mapfile
from worker.errors import InvalidPush
from worker.transform import map_event, to_xdm
from worker.validate import validate

XDM = Settings(aep_tenant_id="acme", aep_schema_id="https://ns.adobe.com/acme/schemas/s1")
HASHED = dataclasses.replace(XDM, identity_namespace="Email_LC_SHA256")
MAPPINGS = {
    namespace: mapfile.default(namespace).resolve("acme") for namespace in ("Email", "Email_LC_SHA256")
}


def both(raw: dict[str, Any], settings_: Settings) -> tuple[Any, Any]:
    """The event from the hand-written table and from the default file (or the error each raised)."""
    outcomes = []
    for make in (
        lambda push: to_xdm(push, settings_),
        lambda push: map_event(push, raw, MAPPINGS[settings_.identity_namespace]),
    ):
        try:
            outcomes.append(make(validate(raw)))
        except InvalidPush as exc:
            outcomes.append(("invalid", sorted(exc.detail)))
    return outcomes[0], outcomes[1]


def assert_same(raw: dict[str, Any], settings_: Settings) -> None:
    """Same fields, same values, same order (json.dumps keeps the order)."""
    table, mapped = both(raw, settings_)
    assert json.dumps(mapped) == json.dumps(table), (table, mapped)


CORPUS = [
    samples.summit(),
    samples.push(),
    samples.summit(attendee__email="  MiXeD.Case@Example.COM "),
    samples.summit(session__length="90", exhibitor__exhibitorId=1680309557),
    samples.summit(lead=None, exhibitor=None, session=None, sessiontime=None),
    samples.summit(session__title="", lead__note=None),
    samples.summit(timestamp="2023-04-01T02:41:57.123456+02:00"),
    {
        "transmissionId": "t1",
        "eventType": "X",
        "timestamp": "2023-04-01T00:00:00Z",
        "attendee.email": "a@b.co",
    },
    {**samples.summit(attendee=None), "attendee.email": "flat@example.com", "session.length": 45},
    samples.summit(surveyAnswer="yes", attendee__badgeColor="red"),
]


@pytest.mark.parametrize("namespace_settings", [XDM, HASHED], ids=["Email", "Email_LC_SHA256"])
@pytest.mark.parametrize("raw", CORPUS)
def test_the_corpus_maps_to_the_same_event(raw: dict[str, Any], namespace_settings: Settings) -> None:
    assert_same(raw, namespace_settings)


def test_the_hashed_default_never_writes_the_plain_email() -> None:
    event = map_event(validate(samples.summit()), samples.summit(), MAPPINGS["Email_LC_SHA256"])
    assert "user@company.com" not in json.dumps(event).lower()


text_values = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=30
)
id_values = text_values | st.integers(min_value=0, max_value=10**12)
emails = st.builds(
    lambda local, domain, pad_l, pad_r: f"{' ' * pad_l}{local}@{domain}.Com{' ' * pad_r}",
    st.from_regex(r"[A-Za-z0-9._%+-]{1,12}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9-]{1,12}", fullmatch=True),
    st.integers(0, 2),
    st.integers(0, 2),
)
lengths = st.integers(min_value=0, max_value=100_000) | st.integers(0, 999).map(str)
OPTIONAL = sorted(
    path for path in PUSH_FIELDS if path not in ("transmissionId", "eventType", "timestamp", "attendee.email")
)


@st.composite
def pushes(draw: st.DrawFn) -> dict[str, Any]:
    """A valid push with a random selection of fields, each nested or flat-dotted."""
    raw: dict[str, Any] = {
        "transmissionId": draw(id_values),
        "eventType": draw(st.sampled_from(["SessionScheduled", "LeadCaptured", "Registered"])),
        "timestamp": draw(
            st.sampled_from(["2023-04-01T00:41:57.000Z", "2023-04-01 02:41:57+02:00", "2023-04-01T00:41:57Z"])
        ),
    }
    chosen = {"attendee.email": draw(emails)}
    for path in draw(st.lists(st.sampled_from(OPTIONAL), unique=True, max_size=len(OPTIONAL))):
        chosen[path] = draw(lengths if path == "session.length" else id_values)
    for path, value in chosen.items():
        if draw(st.booleans()):
            raw[path] = value
        else:
            group, name = path.split(".", 1)
            raw.setdefault(group, {})[name] = value
    if draw(st.booleans()):
        raw["unknownField"] = draw(text_values)
    return raw


@settings(max_examples=300, deadline=None)
@given(raw=pushes(), hashed=st.booleans())
def test_drawn_pushes_map_to_the_same_event(raw: dict[str, Any], hashed: bool) -> None:
    assert_same(raw, HASHED if hashed else XDM)


def test_the_defaults_inline_tests_pass() -> None:
    for mapping in MAPPINGS.values():
        for case in mapping.tests:
            push = validate(case.push) if not case.invalid else None
            if case.invalid:
                with pytest.raises(InvalidPush):
                    map_event(validate(case.push), case.push, mapping)
                continue
            assert push is not None
            expect = json.loads(json.dumps(case.expect).replace("_{tenant}", "_acme"))
            assert map_event(push, case.push, mapping) == expect
