"""emberd over HTTP: listing sandboxes, sessions and snapshots, page by page.

Ends with bounded property-based runs: schemathesis over the OpenAPI
document emberd serves (generated and deliberately invalid requests to the
list, get, update and create endpoints), then hypothesis over the two inputs
whose inner shape the schema does not describe (list cursors and network
policies). No request may get a 5xx, and every error keeps the error shape.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from ..conftest import Emberd
from .api_helpers import check_error_body, delete_quietly, pages, sandbox_names
from .test_api_lifecycle import api, create, session_id, stop, unique

pytestmark = pytest.mark.integration

__all__ = ["api"]  # the fixture, re-exported so pytest finds it here

# Creation order differs from name order, so the two sorts are told apart.
LETTERS = "dbgafce"


@pytest.fixture(scope="module")
def population(emberd: Emberd) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Seven sandboxes under one fresh name prefix, in creation order."""
    prefix = unique("ls")
    created: list[dict[str, Any]] = []
    try:
        with emberd.client() as client:
            for i, letter in enumerate(LETTERS):
                tags = {"suite": prefix, "parity": "odd" if i % 2 else "even", "idx": str(i)}
                if i == 0:
                    tags["url"] = "http://host:8080/x"  # a value with colons
                created.append(
                    create(client, name=f"{prefix}-{letter}", tags=tags, persistent=False)[
                        "sandbox"
                    ]
                )
        yield prefix, created
    finally:
        delete_quietly(emberd, *(s["name"] for s in created))


def _walk(api: httpx.Client, limit: int, **params: Any) -> list[str]:
    """Names over every page; each full page but the last has `limit` items."""
    found = pages(api, "/v2/sandboxes", "sandboxes", limit=limit, **params)
    for page in found[:-1]:
        assert len(page) == limit
    assert 0 < len(found[-1]) <= limit or len(found) == 1
    names = [s["name"] for page in found for s in page]
    assert len(names) == len(set(names)), f"a sandbox appears twice: {names}"
    return names


def test_paging_lists_every_sandbox_once_in_order(
    api: httpx.Client, population: tuple[str, list[dict[str, Any]]]
) -> None:
    prefix, created = population
    in_creation_order = [s["name"] for s in created]
    created_at = [s["createdAt"] for s in created]
    assert created_at == sorted(created_at) and len(set(created_at)) == len(created_at)

    newest_first = list(reversed(in_creation_order))
    by_name = sorted(in_creation_order)
    assert by_name != in_creation_order  # the letters make the orders differ

    for limit in (1, 2, 3):
        assert _walk(api, limit, namePrefix=prefix) == newest_first  # createdAt desc, default
        assert _walk(api, limit, namePrefix=prefix, sortBy="createdAt") == newest_first
        assert _walk(api, limit, namePrefix=prefix, sortOrder="desc") == newest_first
        assert _walk(api, limit, namePrefix=prefix, sortOrder="asc") == in_creation_order
        asc_by_name = _walk(api, limit, namePrefix=prefix, sortBy="name", sortOrder="asc")
        assert asc_by_name == by_name
        desc_by_name = _walk(api, limit, namePrefix=prefix, sortBy="name", sortOrder="desc")
        assert desc_by_name == list(reversed(by_name))

    # limit=2 over seven: 2, 2, 2, 1 and then no cursor.
    counts = [len(p) for p in pages(api, "/v2/sandboxes", "sandboxes", namePrefix=prefix, limit=2)]
    assert counts == [2, 2, 2, 1]
    # A page that is exactly full is the last one: no cursor to an empty page.
    exact = api.get("/v2/sandboxes", params={"namePrefix": prefix, "limit": 7}).json()
    assert exact["pagination"] == {"count": 7, "next": None}
    short = api.get("/v2/sandboxes", params={"namePrefix": prefix, "limit": 6}).json()
    assert short["pagination"]["count"] == 6 and short["pagination"]["next"] is not None

    # The listed objects are the sandboxes themselves.
    listed = {
        s["name"]: s
        for page in pages(api, "/v2/sandboxes", "sandboxes", namePrefix=prefix)
        for s in page
    }
    for sandbox in created:
        assert listed[sandbox["name"]]["tags"] == sandbox["tags"]
        assert listed[sandbox["name"]]["createdAt"] == sandbox["createdAt"]
    # The whole project's listing holds them too, once each.
    everything = sandbox_names(api)
    assert set(in_creation_order) <= set(everything)


def test_name_prefix_is_a_prefix_not_a_pattern(
    api: httpx.Client, population: tuple[str, list[dict[str, Any]]]
) -> None:
    prefix, _ = population
    one = f"{prefix}-{LETTERS[0]}"
    assert _walk(api, 10, namePrefix=one) == [one]
    assert _walk(api, 10, namePrefix=f"{prefix}-%") == []
    assert _walk(api, 10, namePrefix=f"{prefix}_") == []
    assert _walk(api, 10, namePrefix=prefix.upper() + "-zzz") == []


def test_tag_filters_are_anded(
    api: httpx.Client, population: tuple[str, list[dict[str, Any]]]
) -> None:
    prefix, created = population

    def names(*tags: str, **params: Any) -> list[str]:
        return _walk(api, params.pop("limit", 100), tags=list(tags), **params)

    in_creation_order = [s["name"] for s in created]
    assert names(f"suite:{prefix}", sortOrder="asc") == in_creation_order
    even = [n for i, n in enumerate(in_creation_order) if i % 2 == 0]
    assert names(f"suite:{prefix}", "parity:even", sortOrder="asc") == even
    assert names(f"suite:{prefix}", "parity:even", "idx:2") == [in_creation_order[2]]
    assert names(f"suite:{prefix}", "parity:odd", "idx:2") == []  # AND, not OR
    assert names(f"suite:{prefix}", "parity:odd", limit=1, sortOrder="asc") == [
        n for i, n in enumerate(in_creation_order) if i % 2 == 1
    ]
    assert names(f"suite:{prefix}", "url:http://host:8080/x") == [in_creation_order[0]]
    assert names(f"suite:{prefix}", "url:http://host") == []  # values match exactly
    assert names(f"suite:{prefix}-nope") == []
    assert names(f"suite:{prefix}", "missing-key:x") == []
    # Tag filters and the name prefix combine too.
    assert names(f"suite:{prefix}", namePrefix=f"{prefix}-{LETTERS[3]}") == [in_creation_order[3]]


def _ids(api: httpx.Client, path: str, key: str, **params: Any) -> list[str]:
    return [item["id"] for page in pages(api, path, key, **params) for item in page]


def test_sessions_and_snapshots_of_a_sandbox(emberd: Emberd, api: httpx.Client) -> None:
    first = create(api)
    name, sid1 = first["sandbox"]["name"], first["session"]["id"]
    try:
        snap1 = stop(api, sid1)["snapshot"]
        resumed = api.get(f"/v2/sandboxes/{name}", params={"resume": "true"}).json()
        sid2 = resumed["session"]["id"]
        assert resumed["resumed"] is True and sid2 != sid1

        sessions = "/v2/sandboxes/sessions"
        listed = api.get(sessions, params={"name": name}).json()
        assert [s["id"] for s in listed["sessions"]] == [sid2, sid1]  # newest first
        assert listed["pagination"] == {"count": 2, "next": None}
        assert {s["status"] for s in listed["sessions"]} == {"running", "stopped"}
        assert all(s["sandboxName"] == name for s in listed["sessions"])
        assert listed["sessions"][0]["sourceSnapshotId"] == snap1["id"]
        assert _ids(api, sessions, "sessions", name=name, sortOrder="asc") == [sid1, sid2]
        one = api.get(sessions, params={"name": name, "limit": 1}).json()
        assert [s["id"] for s in one["sessions"]] == [sid2]
        assert one["pagination"]["count"] == 1 and one["pagination"]["next"]
        two = api.get(
            sessions, params={"name": name, "limit": 1, "cursor": one["pagination"]["next"]}
        ).json()
        assert [s["id"] for s in two["sessions"]] == [sid1]
        assert two["pagination"] == {"count": 1, "next": None}
        assert _ids(api, sessions, "sessions", name=name, limit=1) == [sid2, sid1]
        # Without a name, the project's sessions include both.
        assert {sid1, sid2} <= set(_ids(api, sessions, "sessions", limit=100))

        snap2 = stop(api, sid2)["snapshot"]
        assert snap2["parentId"] == snap1["id"] and "parentId" not in snap1

        snapshots = "/v2/sandboxes/snapshots"
        assert _ids(api, snapshots, "snapshots", name=name) == [snap2["id"], snap1["id"]]
        assert _ids(api, snapshots, "snapshots", name=name, sortOrder="asc") == [
            snap1["id"],
            snap2["id"],
        ]
        assert _ids(api, snapshots, "snapshots", name=name, limit=1) == [snap2["id"], snap1["id"]]
        page = api.get(snapshots, params={"name": name}).json()
        assert page["pagination"] == {"count": 2, "next": None}
        assert all(s["sandboxName"] == name for s in page["snapshots"])
        assert [s["sourceSessionId"] for s in page["snapshots"]] == [sid2, sid1]

        # The tree of the newest snapshot is the chain snap1 -> snap2.
        tree = "/v2/sandboxes/snapshots/tree"
        rooted = api.get(tree, params={"snapshotId": snap2["id"], "sortOrder": "asc"}).json()
        chain = [node["snapshot"] for node in rooted["snapshots"]]
        assert [s["id"] for s in chain] == [snap1["id"], snap2["id"]]  # root first
        assert "parentId" not in chain[0]
        assert chain[1]["parentId"] == chain[0]["id"]
        assert rooted["anchor"]["snapshot"]["id"] == snap2["id"]
        assert rooted["pagination"]["count"] == 2
        assert all(node["siblings"] == [] for node in rooted["snapshots"])
        # Descending (the default) walks from the anchor to the root.
        for params in ({}, {"sortOrder": "desc"}):
            walked = api.get(tree, params={"snapshotId": snap2["id"], **params}).json()
            ids = [node["snapshot"]["id"] for node in walked["snapshots"]]
            assert ids == [snap2["id"], snap1["id"]]
            assert walked["snapshots"][0]["snapshot"]["parentId"] == ids[1]
        root_tree = api.get(tree, params={"snapshotId": snap1["id"]}).json()
        assert [node["snapshot"]["id"] for node in root_tree["snapshots"]] == [snap1["id"]]
        assert root_tree["anchor"]["snapshot"]["id"] == snap1["id"]
    finally:
        delete_quietly(emberd, name)


def test_sessions_of_a_missing_sandbox(api: httpx.Client) -> None:
    response = api.get("/v2/sandboxes/sessions", params={"name": "no-such-sandbox-here"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "sandbox_not_found"


# -- a bounded property-based run over the OpenAPI document ---------------------------

POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
FUZZED: list[tuple[str, str, tuple[GenerationMode, ...]]] = [
    ("GET", "/v2/sandboxes", (POSITIVE, NEGATIVE)),
    ("GET", "/v2/sandboxes/sessions", (POSITIVE, NEGATIVE)),
    ("GET", "/v2/sandboxes/snapshots", (POSITIVE, NEGATIVE)),
    ("GET", "/v2/sandboxes/snapshots/tree", (POSITIVE, NEGATIVE)),
    ("GET", "/v2/sandboxes/snapshots/{snapshot_id}", (POSITIVE,)),
    ("GET", "/v2/sandboxes/{name}", (POSITIVE, NEGATIVE)),
    ("PATCH", "/v2/sandboxes/{name}", (POSITIVE, NEGATIVE)),
    # Schema-invalid requests only. Some still create a sandbox, rightly or not (an
    # unknown query parameter is ignored; pydantic's lax mode takes `"vcpus": true`
    # as 1): those are deleted at once, the run only asserts the absence of 5xx.
    ("POST", "/v2/sandboxes", (NEGATIVE,)),
]
EXAMPLES = 40


def test_generated_requests_never_get_a_server_error(emberd: Emberd) -> None:
    schema = schemathesis.openapi.from_url(f"{emberd.url}/openapi.json")
    auth = {"authorization": f"Bearer {emberd.token}"}
    scope = {"teamId": emberd.team_id, "projectId": emberd.project_id}
    target = unique("fuzz")
    with emberd.client() as client:
        before = set(sandbox_names(client))
        stop(client, create(client, name=target, persistent=False)["session"]["id"])
    failures: list[str] = []
    try:
        for method, path, modes in FUZZED:
            operation = schema[path][method]
            fixed = {"name": target} if method == "PATCH" else {}
            for mode in modes:
                strategy = operation.as_strategy(generation_mode=mode, path_parameters=fixed)

                @settings(
                    max_examples=EXAMPLES,
                    deadline=None,
                    database=None,
                    phases=[Phase.explicit, Phase.generate, Phase.shrink],
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=strategy)
                def check(case: Any) -> None:
                    # The scope parameters are checked before the body: keep them right
                    # so that generated bodies and queries reach validation.
                    response = case.call(
                        base_url=emberd.url, headers=auth, params=scope, timeout=60
                    )
                    case.validate_response(response, checks=[not_a_server_error])
                    if response.status_code >= 400:
                        check_error_body(response)
                    elif case.method.upper() == "POST":
                        delete_quietly(emberd, response.json()["sandbox"]["name"])

                try:
                    check()
                # Schemathesis reports check failures as a BaseExceptionGroup.
                except (Exception, BaseExceptionGroup) as exc:  # collect all, then fail
                    failures.append(f"{method} {path} ({mode.value}): {exc}")
    finally:
        leaked: set[str] = set()
        try:
            with emberd.client() as client:
                leaked = set(sandbox_names(client)) - before - {target}
        finally:
            delete_quietly(emberd, target, *leaked)
    assert not failures, "\n\n".join(failures)


# Targeted properties: the schema says only "string" and "object" for these, so the
# run above rarely reaches their inner structure.

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_json = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _encode(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


_cursors = (
    st.text(max_size=40)
    | st.builds(_encode, st.tuples(_json_scalars | st.floats(), _json_scalars).map(list))
    | st.builds(_encode, _json)
)
_property_settings = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def test_any_cursor_is_a_page_or_invalid_cursor(emberd: Emberd) -> None:
    with emberd.client() as client:

        @_property_settings
        @given(
            path=st.sampled_from(
                ["/v2/sandboxes", "/v2/sandboxes/sessions", "/v2/sandboxes/snapshots"]
            ),
            cursor=_cursors,
            sort_by=st.sampled_from([None, "createdAt", "name", "statusUpdatedAt"]),
        )
        # Shapes worth trying every time, beside the generated ones.
        @example(path="/v2/sandboxes", cursor=_encode([True, "x"]), sort_by=None)
        @example(path="/v2/sandboxes/sessions", cursor=_encode([2**70, "x"]), sort_by=None)
        @example(path="/v2/sandboxes", cursor=_encode(["b", "x"]), sort_by="name")
        def check(path: str, cursor: str, sort_by: str | None) -> None:
            params = {"cursor": cursor, "limit": 5}
            if sort_by and path == "/v2/sandboxes":
                params["sortBy"] = sort_by
            try:
                response = client.get(path, params=params)
            except httpx.TransportError:
                # A server error closes the connection; ask once more to see the answer.
                response = client.get(path, params=params)
            assert response.status_code < 500, (path, params, response.text)
            if response.status_code != 200:
                assert response.status_code == 400, (path, params, response.text)
                check_error_body(response)
                assert response.json()["error"]["code"] == "invalid_cursor", response.text

        check()


# A rule's known keys get values of any shape, and lists of near-miss objects.
_rule_values = _json | st.lists(
    _json | st.dictionaries(st.sampled_from(["headers", "set"]), _json, max_size=2), max_size=3
)
_rules = st.dictionaries(
    st.sampled_from(["transform", "match", "forwardURL"]) | st.text(max_size=6),
    _rule_values,
    max_size=3,
)
_policies = (
    st.fixed_dictionaries(
        {
            "allow": st.dictionaries(
                st.sampled_from(["example.com", "*.example.org"]) | st.text(max_size=10),
                st.lists(_rules, max_size=2),
                max_size=2,
            )
            | st.lists(st.text(max_size=10), max_size=2)
            | _json
        },
        optional={
            "mode": st.sampled_from(["allow-all", "deny-all", "custom"]) | _json,
            "subnets": st.fixed_dictionaries(
                {}, optional={"allow": st.lists(st.text(max_size=12)), "deny": _json}
            )
            | _json,
        },
    )
    | st.sampled_from(["allow-all", "deny-all"])
    | _json
)


def test_any_network_policy_is_stored_or_rejected_never_a_500(
    emberd: Emberd, api: httpx.Client
) -> None:
    """A policy the server takes must also be one it can show afterwards."""
    name = create(api, persistent=False)["sandbox"]["name"]
    stop(api, session_id(api, name))
    try:

        @_property_settings
        @given(policy=_policies)
        @example(policy={"allow": {"example.com": [{"transform": "x"}]}})
        @example(policy={"allow": {"example.com": [{"transform": [{"headers": 5}]}]}})
        @example(policy={"allow": {"example.com": [{"match": {"path": 5}, "forwardURL": 1}]}})
        def check(policy: Any) -> None:
            with emberd.client() as client:  # fresh: a 500 may close the connection
                # Start from a known policy, so no example inherits an earlier one's.
                reset = client.patch(f"/v2/sandboxes/{name}", json={"networkPolicy": "allow-all"})
                assert reset.status_code == 200, reset.text
                response = client.patch(f"/v2/sandboxes/{name}", json={"networkPolicy": policy})
                assert response.status_code < 500, (policy, response.text)
                if response.status_code != 200:
                    assert response.status_code == 400, (policy, response.text)
                    check_error_body(response)
                shown = client.get(f"/v2/sandboxes/{name}")
                assert shown.status_code == 200, (policy, shown.text)
                listed = client.get("/v2/sandboxes", params={"namePrefix": name})
                assert listed.status_code == 200, (policy, listed.text)

        check()
    finally:
        delete_quietly(emberd, name)
