"""Host and Origin: DNS rebinding and cross-site requests are refused (403), before the body."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from support.fakes import cheap_estimator
from support.web import multipart, png_bytes, running, send_head

from stream.core.errors import ConfigError
from stream.web import create_app
from stream.web.auth import FOREIGN_HOST, FOREIGN_ORIGIN, HostNames

PNG = png_bytes(np.full((16, 16, 3), 90, np.uint8))


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = create_app(tmp_path, cheap_estimator)  # the default: loopback, no token
    yield app
    app.extensions["depthstream"].close()


@pytest.mark.parametrize(("host", "allow", "method", "host_header", "origin", "refused"), [
    ("127.0.0.1", (), "GET", "localhost:8000", None, None),
    ("127.0.0.1", (), "GET", "127.0.0.1:8000", None, None),
    ("127.0.0.1", (), "GET", "[::1]:8000", None, None),
    ("127.0.0.1", (), "GET", "LocalHost.:8000", None, None),
    ("127.0.0.1", (), "GET", None, None, None),  # HTTP/1.0: no rebinding without a Host
    ("127.0.0.1", (), "GET", "attacker.example:8000", None, FOREIGN_HOST),  # DNS rebinding
    ("127.0.0.1", (), "GET", "localhost.attacker.example", None, FOREIGN_HOST),
    ("127.0.0.1", (), "GET", "192.168.1.5:8000", None, FOREIGN_HOST),
    ("192.168.1.5", (), "GET", "192.168.1.5:8000", None, None),  # the --host address
    ("0.0.0.0", (), "GET", "192.168.1.5:8000", None, None),  # every interface: any address
    ("0.0.0.0", (), "GET", "attacker.example", None, FOREIGN_HOST),
    ("127.0.0.1", ("Depth.Example.org",), "GET", "depth.example.org", None, None),
    ("127.0.0.1", ("*",), "GET", "anything.example", None, None),
    ("127.0.0.1", ("[fe80::1]",), "GET", "[fe80::1]:8000", None, None),
    ("127.0.0.1", (), "POST", "127.0.0.1:8000", "http://127.0.0.1:8000", None),
    ("127.0.0.1", (), "POST", "127.0.0.1:8000", None, None),  # a script: no Origin
    ("127.0.0.1", (), "POST", "127.0.0.1:8000", "http://attacker.example", FOREIGN_ORIGIN),
    ("127.0.0.1", (), "DELETE", "localhost:8000", "http://localhost:9999", FOREIGN_ORIGIN),
    ("127.0.0.1", (), "PUT", "localhost:8000", "null", FOREIGN_ORIGIN),  # sandboxed page
    ("127.0.0.1", (), "GET", "localhost:8000", "http://attacker.example", None),  # reads only
    ("127.0.0.1", ("proxy.example",), "POST", "127.0.0.1:8000", "https://proxy.example", None),
])
def test_host_names_and_origins(host: str, allow: tuple[str, ...], method: str,
                                host_header: str | None, origin: str | None,
                                refused: str | None) -> None:
    assert HostNames(host, allow).refusal(method, host_header, origin) == refused


def test_a_dns_rebinding_host_is_403_on_every_route(app: Flask) -> None:
    client = app.test_client()
    for url in ("/", "/api/info", "/static/app.js", "/api/jobs/" + "0" * 32):
        resp = client.get(url, base_url="http://attacker.example:8000")
        assert resp.status_code == 403, url
        assert resp.get_json() == {"error": FOREIGN_HOST, "status": 403}
    assert client.get("/api/info").status_code == 200  # Host: localhost


def test_a_cross_site_post_or_delete_is_403_and_changes_nothing(app: Flask) -> None:
    server = app.extensions["depthstream"]
    client = app.test_client()
    resp = client.post("/api/jobs", data={"file": (io.BytesIO(PNG), "a.png")},
                       content_type="multipart/form-data",
                       headers={"Origin": "http://attacker.example"})
    assert resp.status_code == 403
    assert resp.get_json()["error"] == FOREIGN_ORIGIN
    assert len(server.store) == 0
    same = client.post("/api/jobs", data={"file": (io.BytesIO(PNG), "a.png")},
                       content_type="multipart/form-data",
                       headers={"Origin": "http://localhost"})  # the page itself
    assert same.status_code == 202, same.get_json()
    job_id = same.get_json()["id"]
    resp = client.delete(f"/api/jobs/{job_id}", headers={"Origin": "http://evil.example"})
    assert resp.status_code == 403
    assert client.get(f"/api/jobs/{job_id}").get_json()["status"] != "cancelled"


def test_allow_host_adds_a_name(tmp_path: Path) -> None:
    app = create_app(tmp_path, cheap_estimator, allow_hosts=("depth.example.org",), start=False)
    client = app.test_client()
    assert client.get("/api/info", base_url="http://depth.example.org").status_code == 200
    assert client.get("/api/info", base_url="http://other.example.org").status_code == 403
    with pytest.raises(ConfigError, match="--allow-host takes a host name"):
        create_app(tmp_path, cheap_estimator, allow_hosts=("http://x.org:80/",), start=False)


def test_over_http_a_foreign_host_or_origin_is_refused_before_the_body(app: Flask) -> None:
    with running(app) as client:
        status, _, out = client.request("GET", "/api/info",
                                        headers={"Host": f"attacker.example:{client.port}"})
        assert status == 403 and json.loads(out)["error"] == FOREIGN_HOST
        # a 10 MB cross-site upload is answered on its headers; its body is never sent
        head, body = send_head(client.port, (
            b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://attacker.example\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\n"
            b"Expect: 100-continue\r\nContent-Length: 10000000\r\n\r\n"))
        assert head.startswith(b"HTTP/1.1 403"), head
        assert json.loads(body) == {"error": FOREIGN_ORIGIN, "status": 403}
        body, content_type = multipart(PNG)
        status, _, out = client.request("POST", "/api/jobs", body,
                                        {"Content-Type": content_type,
                                         "Origin": f"http://127.0.0.1:{client.port}"})
        assert status == 202, out


def test_the_wildcard_address_answers_to_this_machine_s_name() -> None:
    names = HostNames("0.0.0.0")
    machine = socket.gethostname().lower()
    assert names.refusal("GET", f"{machine}:8000", None) is None
    assert names.refusal("GET", "[fe80::1]:8000", None) is None
