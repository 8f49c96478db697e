"""The web server's token: every route of the app's URL map, the cookie, the early check."""

from __future__ import annotations

import hmac
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from support.fakes import cheap_estimator
from support.web import multipart, png_bytes, running, send_head

from stream.core.errors import ConfigError, SourceError
from stream.web import create_app
from stream.web.auth import cookie_name, is_loopback, request_has_token, token_matches
from stream.web.serve import _choose_token

TOKEN = "s3cret-Token-for-tests"
PLACEHOLDERS = {"job_id": "0" * 32, "name": "result.png", "filename": "app.js"}


def _no_camera() -> object:
    raise SourceError("no camera in this test")


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = create_app(tmp_path, cheap_estimator, token=TOKEN, live_source=_no_camera)
    yield app
    app.extensions["depthstream"].close()


def every_route(app: Flask) -> list[tuple[str, str]]:
    """(method, URL) for every rule and method of the app's URL map."""
    routes = []
    for rule in app.url_map.iter_rules():
        url = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: PLACEHOLDERS[m.group(1)], rule.rule)
        routes += [(method, url) for method in sorted(rule.methods)]
    return routes


def test_every_route_needs_the_token(app: Flask) -> None:
    routes = every_route(app)
    # the walk covers the whole API (a route added later is walked too)
    urls = {url for _, url in routes}
    assert {"/", "/api/info", "/api/jobs", f"/api/jobs/{'0' * 32}", "/live",
            "/live/stream.mjpg", "/api/live", f"/results/{'0' * 32}/result.png",
            "/static/app.js"} <= urls
    assert ("DELETE", f"/api/jobs/{'0' * 32}") in routes
    client = app.test_client()
    for method, url in routes:
        for headers in ({}, {"Authorization": "Bearer wrong-token-000"},
                        {"Authorization": f"Basic {TOKEN}"},
                        {"Cookie": f"{cookie_name('localhost')}=wrong-token-000"}):
            resp = client.open(url, method=method, headers=headers)
            assert resp.status_code == 401, (method, url, headers)
            if method != "HEAD":
                assert resp.is_json and "token" in resp.get_json()["error"], (method, url)
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        resp = client.open(url, method=method, headers={"Authorization": f"Bearer {TOKEN}"})
        assert resp.status_code != 401, (method, url)


def test_unknown_routes_say_nothing_without_the_token(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/no/such/page").status_code == 401
    assert client.get("/no/such/page", headers={"Authorization": f"Bearer {TOKEN}"}
                      ).status_code == 404


def test_opening_the_printed_address_sets_a_cookie(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/?token=not-the-token").status_code == 401
    resp = client.get(f"/?token={TOKEN}")
    assert resp.status_code == 303
    assert resp.headers["Location"] == "/"  # the token leaves the address bar
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith(f"{cookie_name('localhost')}={TOKEN};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    # from now on the browser's cookie is enough, on every route
    assert client.get("/").status_code == 200
    assert client.get("/api/info").get_json()["max_image_mp"] == 40
    resp = client.post("/api/jobs", data={"file": (io.BytesIO(b"x"), "a.png")},
                       content_type="multipart/form-data")
    assert resp.status_code == 400  # past the token: the file itself is refused
    # other query arguments survive the redirect; a path cannot redirect elsewhere
    resp = client.get(f"/live?layout=side&token={TOKEN}")
    assert resp.headers["Location"] == "/live?layout=side"
    resp = client.get("/", environ_overrides={"PATH_INFO": "//evil.example/",
                                              "QUERY_STRING": f"token={TOKEN}"})
    assert resp.headers["Location"] == "/evil.example/"  # a path here, not another host


def test_token_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    assert token_matches(TOKEN, TOKEN)
    assert not token_matches(TOKEN[:-1], TOKEN)
    assert not token_matches(TOKEN + "x", TOKEN)
    assert not token_matches("", TOKEN) and not token_matches(None, TOKEN)
    assert not token_matches("\udcff", TOKEN)  # not UTF-8: no crash
    assert len(calls) == 4  # every non-empty candidate went through compare_digest


@pytest.mark.parametrize(("authorization", "cookie", "host", "expected"), [
    (f"Bearer {TOKEN}", None, "h:8000", True),
    (f"bearer  {TOKEN} ", None, "h:8000", True),
    (f"Bearer {TOKEN}x", None, "h:8000", False),
    (None, f"depthstream_8000={TOKEN}", "h:8000", True),
    (None, f"depthstream_8001={TOKEN}", "h:8000", False),  # another server's cookie
    (None, f"a=b; depthstream_80={TOKEN}", "h", True),
    (None, f"depthstream_80={TOKEN}", "[::1]", True),
    (None, 'depthstream_80="unterminated', "h", False),
    (None, None, "h", False),
])
def test_request_has_token(authorization: str | None, cookie: str | None, host: str,
                           expected: bool) -> None:
    assert request_has_token(TOKEN, authorization, cookie, host) is expected


def test_a_token_is_made_up_off_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEPTHSTREAM_TOKEN", raising=False)
    assert _choose_token("127.0.0.1", None) == (None, False)
    assert _choose_token("::1", None) == (None, False)
    assert _choose_token("localhost", None) == (None, False)
    token, made_up = _choose_token("0.0.0.0", None)
    assert made_up and len(token) >= 32
    assert _choose_token("0.0.0.0", None)[0] != token  # a new one each start
    assert _choose_token("192.168.1.5", "mine-12345") == ("mine-12345", False)
    monkeypatch.setenv("DEPTHSTREAM_TOKEN", "from-the-env-1")
    assert _choose_token("0.0.0.0", None) == ("from-the-env-1", False)
    assert _choose_token("127.0.0.1", None) == ("from-the-env-1", False)
    assert [is_loopback(h) for h in ("127.0.0.2", "[::1]", "0.0.0.0", "example.org")] == \
        [True, True, False, False]
    with pytest.raises(ConfigError, match="at least 8"):
        create_app(Path("/nonexistent"), cheap_estimator, token="short", start=False)


def test_a_body_without_the_token_is_refused_before_it_is_read(app: Flask) -> None:
    """Over waitress: the headers decide; the 10 MB body is never sent (100-continue)."""
    with running(app, token=TOKEN) as client:
        head, body = send_head(client.port, (
            b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\n"
            b"Expect: 100-continue\r\nContent-Length: 10000000\r\n\r\n"))
        assert head.startswith(b"HTTP/1.1 401"), head
        assert b"www-authenticate: bearer" in head.lower()
        assert json.loads(body)["status"] == 401
        # with the token, the same server takes the upload
        body, content_type = multipart(png_bytes(np.zeros((8, 8, 3), np.uint8)))
        status, _, out = client.request("POST", "/api/jobs", body,
                                        {"Content-Type": content_type})
        assert status == 202, out
