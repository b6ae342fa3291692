"""A schema fuzz run (schemathesis) against the live server: every operation of the OpenAPI
document, a bounded number of generated requests each. 0 server errors, 0 responses that break
the document (status, content type, schema), 0 operations whose references do not resolve.

(Driven by hand, not by schemathesis' pytest plugin: one test that reports every failure.)"""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import CHECKS, FailureGroup

from hostile.conftest import Live

# What "0 5xx, 0 schema violations" means. Left out: positive_data_acceptance (a schema-valid
# body can still be unusable audio: 422 is right) and the stateful checks.
CHECKED = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "unsupported_method",
    "allow_header_conformance",
)

pytestmark = pytest.mark.integration

EXAMPLES = 8  # per operation: the whole run stays well under a minute


def test_every_operation_answers_within_its_schema(live: Live) -> None:
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    checks = CHECKS.get_by_names(list(CHECKED))  # registered once an OpenAPI schema is loaded
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        try:
            operation = result.ok()
        except Exception as exc:  # an operation schemathesis cannot even build: a broken document
            failures.append(f"unusable operation: {exc}")
            continue
        operations += 1
        _fuzz(operation, live.url, checks, failures)
    assert operations >= 15, f"only {operations} operations in the document"
    assert not failures, "\n".join(failures[:20])


def _fuzz(operation: schemathesis.APIOperation, base_url: str, checks: list, failures: list[str]) -> None:
    @hypothesis.given(case=operation.as_strategy())
    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    def run(case: schemathesis.Case) -> None:
        try:
            case.call_and_validate(base_url=base_url, timeout=30, checks=checks)
        except (Exception, FailureGroup) as exc:  # FailureGroup: every failed check
            failures.append(f"{operation.label}: {type(exc).__name__}: {str(exc)[:600]}")

    run()
