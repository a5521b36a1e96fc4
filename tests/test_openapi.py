"""The OpenAPI document at /openapi.json matches the receiver: its routes, and its answers.

schemathesis generates requests from the document (valid and invalid ones) and checks each answer
against it: no 5xx, only documented statuses, content types, headers and bodies. Each generated
request is sent twice: as generated (whatever credentials schemathesis made up) and with the real
token and inlet id, so the 2xx answers are checked as well as the refusals.
"""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from receiver.openapi import OPENAPI_VERSION, document
from shared.settings import Settings
from tests.helpers import INLET, TOKEN

#: Flask adds these to every rule by itself; the document describes the methods the code defines.
IMPLICIT_METHODS = {"HEAD", "OPTIONS"}
#: Every operation in the document, known without an app: the document is built from settings alone.
OPERATIONS = sorted(
    (method.upper(), path)
    for path, operations in document(Settings())["paths"].items()
    for method in operations
)
EXAMPLES = hypothesis.settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def generated(mode: GenerationMode) -> list[tuple[str, str]]:
    """The operations ``mode`` can generate for: negative data needs a parameter or a body to break."""
    if mode == GenerationMode.POSITIVE:
        return OPERATIONS
    paths = document(Settings())["paths"]
    return [(m, p) for m, p in OPERATIONS if {"parameters", "requestBody"} & set(paths[p][m.lower()])]


CASES = [(method, path, mode) for mode in GenerationMode for method, path in generated(mode)]
#: What is checked once the test has put real credentials in: the request is no longer as generated,
#: so the checks that judge it by how it was generated (negative data must fail) no longer apply.
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[f"{m} {p} {mode}" for m, p, mode in CASES])
def test_every_answer_conforms_to_the_document(
    app: Flask, method: str, path: str, mode: GenerationMode
) -> None:
    # schemathesis's own pytest integration cannot take the app from a fixture under this pytest,
    # so its strategy is driven here, with the app the fixtures built (and its private Redis).
    operation = schemathesis.openapi.from_wsgi("/openapi.json", app)[path][method]

    @EXAMPLES
    @given(case=operation.as_strategy(mode))
    def answers_conform(case: Case) -> None:
        # As generated: made-up credentials and inlet ids must be refused as documented.
        case.call_and_validate()
        # With the real ones, so the 2xx answers are checked too; given as explicit auth, which
        # makes schemathesis also probe that the same request without them, or with others, fails.
        if "inletId" in (case.path_parameters or {}):
            case.path_parameters = {**(case.path_parameters or {}), "inletId": INLET}
        auth = {"Authorization": f"Bearer {TOKEN}"} if path == "/v1/pushes" else None
        if mode == GenerationMode.POSITIVE:
            case.call_and_validate(headers=auth)
        else:
            case.call_and_validate(headers=auth, checks=CONFORMANCE)

    answers_conform()


def test_the_document_lists_exactly_the_routes_of_the_app(app: Flask) -> None:
    document = app.test_client().get("/openapi.json").json
    assert document["openapi"] == OPENAPI_VERSION
    documented = {
        (path, method.upper()) for path, operations in document["paths"].items() for method in operations
    }
    routed = {
        (rule.rule.replace("<inlet_id>", "{inletId}"), method)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in (rule.methods or set()) - IMPLICIT_METHODS
    }
    assert documented == routed


def test_the_document_is_served_without_auth_and_states_this_apps_limits(app: Flask) -> None:
    settings = app.extensions["rainbridge"].settings
    resp = app.test_client().get("/openapi.json")
    assert resp.status_code == 200
    assert resp.mimetype == "application/json"
    pushes = resp.json["paths"]["/v1/pushes"]["post"]
    one_of = pushes["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert one_of[1]["maxItems"] == settings.receiver_max_pushes
    assert str(settings.receiver_max_bytes) in pushes["description"]
    assert set(pushes["responses"]) == {"202", "400", "401", "413", "415", "503"}
    assert {"bearerAuth", "basicAuth"} == set(resp.json["components"]["securitySchemes"])
