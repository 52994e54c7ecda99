"""Streaming parser for MindConnect exchange bodies (docs/protocol.md §D).

The body of ``POST /api/mindconnect/v3/exchange`` is a ``multipart/mixed`` whose parts ("items") are each a
``multipart/related`` of exactly two parts: a meta part (``application/vnd.siemens.mindsphere.meta+json``)
and one payload part. Two levels only.

Lenient where the official clients differ (so southgate accepts what they really send):

* line breaks LF or CRLF, mixed within one body (Node writes bare LF, MCL and RFC 2046 CRLF);
* header names in any case, optional whitespace after the colon, folded header lines;
* boundary quoted or bare, Content-Type parameters in any order (MCL: ``;boundary=B;charset=utf-8``);
* blank lines before the first delimiter (MCL may start a body with CRLF), transport padding after a
  boundary, an optional trailing line break (or none, as MCL does) after the close delimiter.

Strict about the envelope, because a lax stand-in lets agent bugs reach the field: no text outside the
delimiters, each item exactly meta + payload, meta JSON with ``"type":"item"``, and the JSON payloads of the
standard item types structurally valid (§D, §E). Values are *not* checked against the data source
configuration here: the real service does that asynchronously (diagnostics, §F), the server does it too.

Exactly one line break (CRLF or LF) before a delimiter belongs to the delimiter, so binary payloads
round-trip. Node's time-series template therefore yields a JSON payload ending in ``"\\n\\n"`` (it writes
``JSON\\n\\n\\r\\n--mindspherepart--``), and its meta part ends in one ``"\\n"``; JSON ignores both. One
ambiguity is inherent in accepting bare LF: a part ending in CR followed by an LF delimiter reads as a CRLF
delimiter (the CR is lost). Composers that use CRLF, as agents should, never hit it.

Streaming: :class:`ExchangeParser` keeps only the unconsumed bytes of the current item, searches for a
delimiter only in new data plus an overlap of ``len(delimiter) - 1`` bytes (``bytes_scanned`` counts the
work, for tests) and refuses more than ``max_bytes`` in total with :class:`TooLarge` (the server answers 413).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .validation import (
    JSON_TYPES,
    KNOWN_VERSIONS,
    Invalid,
    JsonRefused,
    check_item_details,
    check_item_payload,
    loads_untrusted,
)

__all__ = [
    "MAX_BYTES",
    "META_CONTENT_TYPE",
    "ExchangeItem",
    "ExchangeParser",
    "MultipartError",
    "TooLarge",
    "parse_content_type",
    "parse_exchange",
]

MAX_BYTES = 10 * 1024 * 1024
META_CONTENT_TYPE = "application/vnd.siemens.mindsphere.meta+json"

_IDENTITY_ENCODINGS = ("7bit", "8bit", "binary")

_MAX_HEADER_BYTES = 16 * 1024  # one part's header section
_MAX_BLANK_BYTES = 1024  # line breaks tolerated where a delimiter is expected
_MAX_PADDING = 64  # spaces/tabs tolerated after a boundary ("transport padding")

_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_MEDIA_RE = re.compile(r"\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)/([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*")
_BARE_VALUE_RE = re.compile(r"[^;\s\"]+")
# RFC 2046 bchars; 1..70 characters, not ending in a space.
_BOUNDARY_RE = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]\Z")
_HEADER_NAME_RE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_BLANK_RE = re.compile(rb"(?:\r?\n)*")
_AFTER_CLOSE_RE = re.compile(rb"[ \t]*(?:\r?\n)*")


class MultipartError(ValueError):
    """A malformed exchange body; ``str(e)`` names what is wrong (the server sends it in the 400 body)."""


class TooLarge(MultipartError):
    """The body exceeds ``max_bytes``; the server answers 413 and stops reading."""


@dataclass
class ExchangeItem:
    """One multipart/related item of an exchange body."""

    meta: dict[str, Any]
    payload_type: str
    payload_version: str
    details: dict[str, Any]
    content_type: str
    payload: bytes
    # Decoded and structurally checked JSON for standardTimeSeries, businessEvent and
    # dataSourceConfiguration items; None for file and custom items.
    parsed: Any = None
    index: int = 0  # 1-based position in the body, as used in error messages


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type value into the lower-case media type and its parameters.

    Parameter names are lower-cased; values may be quoted (backslash escapes honoured) or bare.
    Raises MultipartError (without a location prefix) when the value is malformed.
    """
    m = _MEDIA_RE.match(value)
    if not m:
        raise MultipartError(f"malformed Content-Type {_clip(value)!r}")
    media = (f"{m.group(1)}/{m.group(2)}").lower()
    params: dict[str, str] = {}
    pos, n = m.end(), len(value)
    while pos < n:
        if value[pos] != ";":
            raise MultipartError(
                f"malformed Content-Type {_clip(value)!r}: expected ';' before {_clip(value[pos:])!r}"
            )
        pos = _skip_ws(value, pos + 1)
        if pos >= n or value[pos] == ";":
            continue  # tolerate a trailing or doubled ';'
        pm = _TOKEN_RE.match(value, pos)
        if not pm:
            raise MultipartError(
                f"malformed Content-Type {_clip(value)!r}: bad parameter {_clip(value[pos:])!r}"
            )
        name = pm.group(0).lower()
        pos = _skip_ws(value, pm.end())
        if pos >= n or value[pos] != "=":
            raise MultipartError(f"malformed Content-Type {_clip(value)!r}: parameter {name!r} has no value")
        pos = _skip_ws(value, pos + 1)
        if pos < n and value[pos] == '"':
            out: list[str] = []
            pos += 1
            while True:
                if pos >= n:
                    raise MultipartError(
                        f"malformed Content-Type {_clip(value)!r}: unterminated quoted {name!r}"
                    )
                c = value[pos]
                if c == '"':
                    pos += 1
                    break
                if c == "\\" and pos + 1 < n:
                    pos += 1
                    c = value[pos]
                out.append(c)
                pos += 1
            pval = "".join(out)
        else:
            vm = _BARE_VALUE_RE.match(value, pos)
            if not vm:
                raise MultipartError(
                    f"malformed Content-Type {_clip(value)!r}: parameter {name!r} has no value"
                )
            pval = vm.group(0)
            pos = vm.end()
        pos = _skip_ws(value, pos)
        if name in params:
            raise MultipartError(f"malformed Content-Type {_clip(value)!r}: duplicate parameter {name!r}")
        params[name] = pval
    return media, params


def parse_exchange(content_type: str, body: bytes, max_bytes: int = MAX_BYTES) -> list[ExchangeItem]:
    """Parse a whole body at once (tests, small requests)."""
    parser = ExchangeParser(content_type, max_bytes)
    items = parser.feed(body)
    items += parser.finish()
    return items


# States of ExchangeParser.
_S_OUTER_FIRST = 0  # before the first '--B'
_S_ITEM_HEADERS = 1  # headers of an item (multipart/related)
_S_INNER_FIRST = 2  # before the item's first '--b'
_S_PART_HEADERS = 3  # headers of the meta (part 0) or payload (part 1) part
_S_PART_BODY = 4  # content of that part, up to the next delimiter
_S_AFTER_ITEM = 5  # after '--b--': line break, then '--B' or '--B--'
_S_END = 6  # after '--B--': only whitespace
_S_FAILED = 7

# Results of _tail().
_NO, _MORE, _YES = 0, 1, 2


def _tail(buf: bytearray, j: int) -> tuple[int, int, bool]:
    """Classify what follows '--boundary' at buf[j]: (status, end of delimiter, is close delimiter)."""
    n = len(buf)
    if j >= n:
        return _MORE, 0, False
    c = buf[j]
    if c == 0x2D:  # '-'
        if j + 1 >= n:
            return _MORE, 0, False
        if buf[j + 1] == 0x2D:
            return _YES, j + 2, True
        return _NO, 0, False
    k = j
    limit = j + _MAX_PADDING
    while k < n and k < limit and (buf[k] == 0x20 or buf[k] == 0x09):
        k += 1
    if k >= n:
        return (_MORE if k < limit else _NO), 0, False
    c = buf[k]
    if c == 0x0A:
        return _YES, k + 1, False
    if c == 0x0D:
        if k + 1 >= n:
            return _MORE, 0, False
        if buf[k + 1] == 0x0A:
            return _YES, k + 2, False
    return _NO, 0, False


class ExchangeParser:
    """Incremental parser: ``feed()`` chunks as they arrive, ``finish()`` at the end of the body.

    ``feed`` returns the items completed by that chunk (any chunking gives the same items). The first
    MultipartError is final: later calls raise it again. Items are returned before the rest of the body is
    checked, so a server must not commit them until ``finish()`` returned.
    """

    def __init__(self, content_type: str, max_bytes: int = MAX_BYTES) -> None:
        try:
            media, params = parse_content_type(content_type or "")
        except MultipartError as e:
            raise MultipartError(f"request Content-Type: {e}") from None
        if media != "multipart/mixed":
            raise MultipartError(f"request Content-Type is {_clip(content_type)!r}, expected multipart/mixed")
        boundary = params.get("boundary")
        if boundary is None:
            raise MultipartError("request Content-Type multipart/mixed has no boundary parameter")
        self._outer = _boundary_bytes(boundary, "request Content-Type")
        self._outer_pat = b"\n--" + self._outer
        self.max_bytes = max_bytes
        self.bytes_in = 0
        self.bytes_scanned = 0  # bytes examined by delimiter searches (linear in bytes_in; tested)
        self._buf = bytearray()
        self._state = _S_OUTER_FIRST
        self._error: MultipartError | None = None
        self._finished = False
        self._done: list[ExchangeItem] = []
        self._item_no = 0
        # Current item.
        self._inner = b""
        self._inner_pat = b""
        self._part = 0
        self._hscan = 0
        self._hbytes = 0
        self._headers: list[tuple[str, str]] = []
        self._scan_inner = 0
        self._scan_outer = 0
        self._meta: dict[str, Any] = {}
        self._ptype = ""
        self._pversion = ""
        self._details: dict[str, Any] = {}
        self._content_type = ""

    # -- public -----------------------------------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> list[ExchangeItem]:
        if self._error is not None:
            raise self._error
        if self._finished:
            raise MultipartError("feed() after finish()")
        self.bytes_in += len(data)
        try:
            if self.bytes_in > self.max_bytes:
                raise TooLarge(f"request body larger than {self.max_bytes} bytes")
            self._buf += data
            self._run()
        except MultipartError as e:
            self._fail(e)
            raise
        done, self._done = self._done, []
        return done

    def finish(self) -> list[ExchangeItem]:
        if self._error is not None:
            raise self._error
        if self._finished:
            return []
        self._finished = True
        if self._state != _S_END:
            err = MultipartError(self._truncated_message())
            self._fail(err)
            raise err
        done, self._done = self._done, []
        return done

    # -- machinery --------------------------------------------------------------------------------------

    def _fail(self, err: MultipartError) -> None:
        self._error = err
        self._state = _S_FAILED
        self._buf = bytearray()
        self._done = []
        self._meta = {}

    def _where(self) -> str:
        if self._state in (_S_PART_HEADERS, _S_PART_BODY):
            return f"item {self._item_no}: {'meta' if self._part == 0 else 'payload'} part"
        if self._state in (_S_ITEM_HEADERS, _S_INNER_FIRST, _S_AFTER_ITEM):
            return f"item {self._item_no}"
        return "body"

    def _err(self, msg: str) -> MultipartError:
        return MultipartError(f"{self._where()}: {msg}")

    def _truncated_message(self) -> str:
        if self._state == _S_OUTER_FIRST and self.bytes_in == 0:
            return "body: empty"
        outer, inner = self._outer.decode("latin-1"), self._inner.decode("latin-1")
        if self._state == _S_PART_BODY:
            what = f"no delimiter '--{inner}' after the content"
        elif self._state in (_S_ITEM_HEADERS, _S_PART_HEADERS):
            what = "header section not terminated by a blank line"
        elif self._state == _S_INNER_FIRST:
            what = f"no delimiter '--{inner}' after the headers"
        elif self._state == _S_OUTER_FIRST:
            what = f"no delimiter '--{outer}'"
        else:
            what = f"no close delimiter '--{outer}--'"
        return f"{self._where()}: truncated: {what}"

    def _run(self) -> None:
        while True:
            s = self._state
            if s == _S_PART_BODY:
                progressed = self._part_body()
            elif s == _S_PART_HEADERS or s == _S_ITEM_HEADERS:
                progressed = self._header_section()
            elif s == _S_OUTER_FIRST:
                progressed = self._expect_delimiter(self._outer, _BLANK_RE, False)
            elif s == _S_INNER_FIRST:
                progressed = self._expect_delimiter(self._inner, _BLANK_RE, False)
            elif s == _S_AFTER_ITEM:
                progressed = self._expect_delimiter(self._outer, _AFTER_CLOSE_RE, True)
            elif s == _S_END:
                if self._buf.strip(b" \t\r\n"):
                    outer = self._outer.decode("latin-1")
                    extra = _show(self._buf.lstrip(b" \t\r\n"))
                    raise self._err(f"data after the close delimiter '--{outer}--': {extra}")
                self._buf.clear()
                progressed = False
            else:  # pragma: no cover - _S_FAILED never runs
                progressed = False
            if not progressed:
                return

    def _expect_delimiter(self, boundary: bytes, blank: re.Pattern[bytes], need_break: bool) -> bool:
        """A delimiter line must come next, after nothing but blank lines (and padding after '--b--')."""
        buf = self._buf
        n = len(buf)
        m = blank.match(buf)
        p = m.end() if m else 0
        if p > _MAX_BLANK_BYTES:
            raise self._err(f"more than {_MAX_BLANK_BYTES} bytes of blank lines before a delimiter")
        if p >= n or (buf[p] == 0x0D and p + 1 == n):
            return False
        name = boundary.decode("latin-1")
        if need_break and b"\n" not in buf[:p]:
            inner = self._inner.decode("latin-1")
            raise self._err(f"data after the close delimiter '--{inner}--': {_show(buf[p:])}")
        dash = b"--" + boundary
        have = bytes(buf[p : p + len(dash)])
        if have != dash[: len(have)]:
            if self._state == _S_AFTER_ITEM:
                raise self._err(f"expected '--{name}' or '--{name}--' after the item, got {_show(buf[p:])}")
            what = "at the start of the body" if self._state == _S_OUTER_FIRST else "after the headers"
            raise self._err(f"expected the delimiter '--{name}' {what}, got {_show(buf[p:])}")
        if len(have) < len(dash):
            return False
        status, end, close = _tail(buf, p + len(dash))
        if status == _MORE:
            return False
        if status == _NO:
            raise self._err(f"malformed delimiter line {_show(buf[p:])} (boundary {name!r})")
        del buf[:end]
        if self._state == _S_INNER_FIRST:
            if close:
                raise self._err("multipart/related has no parts (expected a meta part and a payload part)")
            self._start_part(0)
        elif close:
            if self._item_no == 0:
                raise MultipartError(f"body: no items (close delimiter '--{name}--' right away)")
            self._state = _S_END
        else:
            self._item_no += 1
            self._state = _S_ITEM_HEADERS
            self._reset_headers()
        return True

    def _reset_headers(self) -> None:
        self._hscan = 0
        self._hbytes = 0
        self._headers = []

    def _start_part(self, part: int) -> None:
        self._part = part
        self._state = _S_PART_HEADERS
        self._reset_headers()

    def _header_section(self) -> bool:
        buf = self._buf
        while True:
            i = buf.find(b"\n", self._hscan)
            if i < 0:
                self._hscan = len(buf)
                if self._hbytes + len(buf) > _MAX_HEADER_BYTES:
                    raise self._err(f"header section longer than {_MAX_HEADER_BYTES} bytes")
                return False
            self._hbytes += i + 1
            if self._hbytes > _MAX_HEADER_BYTES:
                raise self._err(f"header section longer than {_MAX_HEADER_BYTES} bytes")
            line = bytes(buf[:i])
            if line.endswith(b"\r"):
                line = line[:-1]
            self._hscan = 0
            if not line:
                # Keep the blank line's LF: a delimiter right after it ends an empty body.
                del buf[:i]
                self._headers_done()
                return True
            del buf[: i + 1]
            self._header_line(line)

    def _header_line(self, line: bytes) -> None:
        if line[:1] in (b" ", b"\t"):
            if not self._headers:
                raise self._err(f"malformed header line {_show(line)}")
            prev_name, prev_value = self._headers[-1]
            self._headers[-1] = (prev_name, prev_value + " " + line.strip().decode("latin-1"))
            return
        name, colon, value = line.partition(b":")
        name = name.rstrip(b" \t")
        if not colon or not _HEADER_NAME_RE.match(name):
            raise self._err(f"malformed header line {_show(line)}")
        lname = name.decode("ascii").lower()
        if lname in ("content-type", "content-transfer-encoding") and any(
            h == lname for h, _ in self._headers
        ):
            raise self._err(f"duplicate {name.decode('ascii')} header")
        self._headers.append((lname, value.strip(b" \t").decode("latin-1")))

    def _content_type_of(self, what: str) -> tuple[str, str, dict[str, str]]:
        headers = dict(self._headers)
        cte = headers.get("content-transfer-encoding")
        if cte is not None and cte.strip().lower() not in _IDENTITY_ENCODINGS:
            raise self._err(
                f"Content-Transfer-Encoding {_clip(cte)!r} not supported (send the bytes as they are)"
            )
        raw = headers.get("content-type")
        if raw is None:
            raise self._err(f"no Content-Type header (expected {what})")
        try:
            media, params = parse_content_type(raw)
        except MultipartError as e:
            raise self._err(str(e)) from None
        return raw, media, params

    def _headers_done(self) -> None:
        if self._state == _S_ITEM_HEADERS:
            raw, media, params = self._content_type_of("multipart/related")
            if media != "multipart/related":
                raise self._err(
                    f"Content-Type {_clip(raw)!r}, expected multipart/related "
                    "(an item is a meta part and a payload part)"
                )
            boundary = params.get("boundary")
            if boundary is None:
                raise self._err("multipart/related has no boundary parameter")
            self._inner = _boundary_bytes(boundary, f"item {self._item_no}")
            if self._inner == self._outer:
                raise self._err(f"the item's boundary equals the outer boundary {boundary!r}")
            self._inner_pat = b"\n--" + self._inner
            self._state = _S_INNER_FIRST
            return
        if self._part == 0:
            raw, media, _ = self._content_type_of(META_CONTENT_TYPE)
            if media != META_CONTENT_TYPE:
                raise self._err(f"Content-Type {_clip(raw)!r}, expected {META_CONTENT_TYPE}")
        else:
            raw, media, _ = self._content_type_of("the payload's type")
            if media.startswith("multipart/"):
                raise self._err(
                    f"Content-Type {_clip(raw)!r}: nested multipart is not allowed (two levels only)"
                )
            if self._ptype in JSON_TYPES and media != "application/json":
                raise self._err(
                    f"Content-Type {_clip(raw)!r} for a {self._ptype} item, expected application/json"
                )
        self._content_type = raw
        self._state = _S_PART_BODY
        self._scan_inner = 0
        self._scan_outer = 0

    def _find(self, pat: bytes, start: int) -> tuple[int, int, int, bool]:
        """Next delimiter line with pattern ``\\n--boundary`` from ``start``.

        Returns (status, position or resume index, end, close): _YES with the LF's index, _MORE with the
        candidate's index (more data needed to decide), _NO with the index to resume from next time.
        """
        buf = self._buf
        n = len(buf)
        while True:
            i = buf.find(pat, start)
            if i < 0:
                self.bytes_scanned += n - start
                return _NO, max(start, n - len(pat) + 1), 0, False
            self.bytes_scanned += i + len(pat) - start
            status, end, close = _tail(buf, i + len(pat))
            if status != _NO:
                return status, i, end, close
            start = i + 1  # '--boundaryX': content that merely starts like a delimiter

    def _part_body(self) -> bool:
        si, pi, ei, ci = self._find(self._inner_pat, self._scan_inner)
        so, po, _, _ = self._find(self._outer_pat, self._scan_outer)
        self._scan_inner = pi
        self._scan_outer = po
        if so != _NO and (si == _NO or po < pi):
            if so == _MORE:
                return False
            inner, outer = self._inner.decode("latin-1"), self._outer.decode("latin-1")
            raise self._err(f"no delimiter '--{inner}' before the outer delimiter '--{outer}'")
        if si != _YES:
            return False
        buf = self._buf
        # buf[0] is the LF ending the header section; content is buf[1:cend].
        cend = pi - 1 if pi > 0 and buf[pi - 1] == 0x0D else pi
        with memoryview(buf) as mv:
            content = bytes(mv[1:cend]) if cend > 1 else b""
        del buf[:ei]
        if self._part == 0:
            if ci:
                raise self._err("no payload part after the meta part")
            self._meta_done(content)
            self._start_part(1)
        else:
            if not ci:
                raise MultipartError(
                    f"item {self._item_no}: more than two parts (expected a meta part and one payload part)"
                )
            self._payload_done(content)
            self._state = _S_AFTER_ITEM
        return True

    def _meta_done(self, content: bytes) -> None:
        meta = _decode_json(content, self._err)
        if not isinstance(meta, dict):
            raise self._err("not a JSON object")
        if meta.get("type") != "item":
            got = _clip(json.dumps(meta.get("type")))
            raise self._err(f'"type" must be "item", got {got}')
        payload = meta.get("payload")
        if not isinstance(payload, dict):
            raise self._err('"payload" must be an object')
        ptype = payload.get("type")
        if not isinstance(ptype, str) or not ptype:
            raise self._err('"payload.type" must be a non-empty string')
        pversion = payload.get("version")
        if not isinstance(pversion, str) or not pversion:
            raise self._err('"payload.version" must be a non-empty string')
        details = payload.get("details")
        if details is None:
            details = {}
        elif not isinstance(details, dict):
            raise self._err('"payload.details" must be an object')
        known = KNOWN_VERSIONS.get(ptype)
        if known is not None and pversion not in known:
            supported = ", ".join(known)
            raise self._err(f"{ptype} version {_clip(pversion)!r} not supported (supported: {supported})")
        try:
            check_item_details(ptype, details)
        except Invalid as e:
            raise self._err(str(e)) from None
        self._meta = meta
        self._ptype = ptype
        self._pversion = pversion
        self._details = details

    def _payload_done(self, content: bytes) -> None:
        parsed: Any = None
        if self._ptype in JSON_TYPES:
            label = f"item {self._item_no}: {self._ptype} payload"

            def err(msg: str) -> MultipartError:
                return MultipartError(f"{label}: {msg}")

            parsed = _decode_json(content, err)
            try:
                check_item_payload(self._ptype, self._pversion, parsed)
            except Invalid as e:
                raise err(str(e)) from None
        self._done.append(
            ExchangeItem(
                meta=self._meta,
                payload_type=self._ptype,
                payload_version=self._pversion,
                details=self._details,
                content_type=self._content_type,
                payload=content,
                parsed=parsed,
                index=self._item_no,
            )
        )
        self._meta = {}
        self._details = {}


# -- helpers ------------------------------------------------------------------------------------------------


def _skip_ws(s: str, pos: int) -> int:
    while pos < len(s) and s[pos] in " \t":
        pos += 1
    return pos


def _clip(s: str, limit: int = 60) -> str:
    return s if len(s) <= limit else s[:limit] + "..."


def _show(data: bytes | bytearray) -> str:
    """Short printable rendering of offending input for an error message."""
    return repr(bytes(data[:40])) + ("..." if len(data) > 40 else "")


def _boundary_bytes(boundary: str, where: str) -> bytes:
    if not _BOUNDARY_RE.match(boundary):
        raise MultipartError(
            f"{where}: boundary {_clip(boundary)!r} is not a valid RFC 2046 boundary "
            "(1-70 of A-Z a-z 0-9 '()+_,-./:=? and space, not ending in a space)"
        )
    return boundary.encode("ascii")


def _decode_json(content: bytes, err: Callable[[str], MultipartError]) -> Any:
    try:
        return loads_untrusted(content)
    except JsonRefused as e:
        raise err(f"not JSON ({e})" if e.utf8 else str(e)) from None
