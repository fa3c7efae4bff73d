"""Outbound HTTP for activities, over wasi:http (Python's sockets do not
exist in the sandbox). Blocking, which is what an activity wants: it runs
to completion on its own instance.

    response = http.request("POST", url, headers={...}, body=b"...")
    if not response.ok: ...

Each resource is dropped (`with`) before its parent, as wasi:http asks: a
stream before its body, a body before it is finished.
"""

import base64
import json
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from componentize_py_types import Err
from wit_world.imports import outgoing_handler, streams
from wit_world.imports import wasi_http_types as wasi

_METHODS = {
    "GET": wasi.Method_Get,
    "HEAD": wasi.Method_Head,
    "POST": wasi.Method_Post,
    "PUT": wasi.Method_Put,
    "DELETE": wasi.Method_Delete,
    "OPTIONS": wasi.Method_Options,
    "PATCH": wasi.Method_Patch,
}
_BODILESS = {"GET", "HEAD", "DELETE", "OPTIONS"}
# blocking-write-and-flush takes at most 4096 bytes a call.
_WRITE_CHUNK = 4096


class HttpError(Exception):
    """The request could not be made or its answer not read."""


class Response:
    def __init__(self, status: int, headers: List[Tuple[str, str]], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def header(self, name: str) -> Optional[str]:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self):
        return json.loads(self.body)


def basic_auth(user: str, password: str) -> str:
    """An Authorization header's value for HTTP basic auth."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return f"Basic {token}"


def _target(url: str):
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "http":
        wasi_scheme = wasi.Scheme_Http()
    elif scheme == "https":
        wasi_scheme = wasi.Scheme_Https()
    elif not scheme:
        raise HttpError(f"URL {url} has no scheme")
    else:
        raise HttpError(f"URL scheme {scheme} is not supported")
    if not parts.netloc:
        raise HttpError(f"URL {url} has no host")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return wasi_scheme, parts.netloc, path


def request(
    method: str,
    url: str,
    headers: Optional[Dict[str, str]] = None,
    body: bytes = b"",
) -> Response:
    """Sends a request and reads the whole response. `body` is sent with a
    Content-Length (many servers refuse a chunked request body)."""
    method = method.upper()
    if isinstance(body, str):
        body = body.encode()
    scheme, authority, path = _target(url)
    fields = [(name, str(value).encode()) for name, value in (headers or {}).items()]
    given_length = any(name.lower() == "content-length" for name, _ in fields)
    if not given_length and not (method in _BODILESS and not body):
        fields.append(("Content-Length", str(len(body)).encode()))
    try:
        outgoing_headers = wasi.Fields.from_list(fields)
    except Err as error:
        raise HttpError(f"invalid request header: {error.value}") from None
    outgoing = wasi.OutgoingRequest(outgoing_headers)
    checks = [
        (lambda: outgoing.set_method(_METHODS[method]() if method in _METHODS else wasi.Method_Other(method)), "method"),
        (lambda: outgoing.set_scheme(scheme), "scheme"),
        (lambda: outgoing.set_authority(authority), "host"),
        (lambda: outgoing.set_path_with_query(path), "path"),
    ]
    for setter, what in checks:
        try:
            setter()
        except Err:
            raise HttpError(f"invalid {what} in URL {url}") from None

    request_body = outgoing.body()
    try:
        pending = outgoing_handler.handle(outgoing, None)
    except Err as error:
        raise HttpError(f"HTTP request to {url} failed: {error.value}") from None
    with request_body.write() as stream:
        for start in range(0, len(body), _WRITE_CHUNK):
            try:
                stream.blocking_write_and_flush(body[start : start + _WRITE_CHUNK])
            except Err as error:
                raise HttpError(f"writing the request body failed: {error.value}") from None
    wasi.OutgoingBody.finish(request_body, None)

    with pending:
        with pending.subscribe() as ready:
            ready.block()
        answer = pending.get()
    if answer is None or isinstance(answer, Err):
        raise HttpError(f"HTTP response from {url} not ready")
    if isinstance(answer.value, Err):
        raise HttpError(f"HTTP request to {url} failed: {answer.value.value}")
    with answer.value.value as response:
        status = response.status()
        with response.headers() as fields:
            headers_in = [(k, v.decode("latin-1")) for k, v in fields.entries()]
        with response.consume() as incoming:
            data = _read_all(incoming)
    return Response(status, headers_in, data)


def _read_all(incoming) -> bytes:
    chunks = []
    with incoming.stream() as stream:
        while True:
            try:
                chunks.append(stream.blocking_read(64 * 1024))
            except Err as error:
                if isinstance(error.value, streams.StreamError_Closed):
                    break
                raise HttpError(f"reading the response failed: {error.value}") from None
    return b"".join(chunks)


def get(url: str, headers: Optional[Dict[str, str]] = None) -> Response:
    return request("GET", url, headers)


def post(url: str, headers: Optional[Dict[str, str]] = None, body: bytes = b"") -> Response:
    return request("POST", url, headers, body)
