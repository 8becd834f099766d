"""Node's encoding names mapped onto incremental codecs.

Two directions:

* :func:`get_decoder` makes an incremental decoder for ``set_encoding``. Fed
  the received chunks one by one, the concatenation of its outputs (plus
  :meth:`Decoder.flush` at the end) equals decoding the whole byte stream at
  once: a character or a base64 group split across chunks is never broken.
  Received bytes never raise: invalid UTF-8 becomes U+FFFD.
* :func:`encode` turns ``write(str, encoding)`` into bytes. ``"base64"`` and
  ``"hex"`` decode the string, as in Node.

Accepted names are Node's (``utf8``, ``ascii``, ``base64``, ``base64url``,
``hex``, ``latin1``/``binary``, ``utf16le``/``ucs2``) and Python's common
aliases of the same codecs (``utf-8``, ``latin-1``, ``iso-8859-1``,
``utf-16-le``...). This module imports no Trio.
"""

from __future__ import annotations

import base64
import codecs
import re
from typing import Protocol

__all__ = ["Decoder", "encode", "get_decoder", "normalize"]

_NODE_NAMES = {
    "utf8": "utf8",
    "utf-8": "utf8",
    "ascii": "ascii",
    "base64": "base64",
    "base64url": "base64url",
    "hex": "hex",
    "latin1": "latin1",
    "binary": "latin1",
    "utf16le": "utf16le",
    "utf-16le": "utf16le",
    "ucs2": "utf16le",
    "ucs-2": "utf16le",
}
# Python codec names (after codecs.lookup) that map onto one of ours.
_PYTHON_NAMES = {
    "utf-8": "utf8",
    "ascii": "ascii",
    "iso8859-1": "latin1",
    "latin-1": "latin1",
    "utf-16-le": "utf16le",
}
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/_-]")
_URL_TO_STANDARD = str.maketrans("-_", "+/")
_SUPPORTED = "utf8, ascii, base64, base64url, hex, latin1 (binary), utf16le (ucs2)"


def normalize(encoding: object) -> str:
    """The canonical Node name for *encoding*.

    Raises:
        TypeError: *encoding* is not a string.
        ValueError: the encoding is not one a stream supports.
    """
    if not isinstance(encoding, str):
        raise TypeError(f"encoding must be a str, not {type(encoding).__name__}")
    key = encoding.lower()
    if key in _NODE_NAMES:
        return _NODE_NAMES[key]
    try:
        python_name = codecs.lookup(key).name
    except LookupError:
        python_name = ""
    if python_name in _PYTHON_NAMES:
        return _PYTHON_NAMES[python_name]
    raise ValueError(f"unknown encoding {encoding!r}; supported: {_SUPPORTED}")


class Decoder(Protocol):
    def decode(self, data: bytes) -> str:
        """Decode the next chunk; hold back an incomplete tail."""
        ...

    def flush(self) -> str:
        """What is still held, at the end of the stream (may be ``""``)."""
        ...

    def pending(self) -> bytes:
        """The raw bytes still held (used when the encoding changes)."""
        ...


class _CodecDecoder:
    """UTF-8 and UTF-16LE through the stdlib incremental decoders."""

    __slots__ = ("_decoder", "_odd_tail_dropped")

    def __init__(self, codec: str) -> None:
        utf16 = codec == "utf-16-le"
        # UTF-16LE: Node keeps lone surrogates as they are (JS strings hold them).
        errors = "surrogatepass" if utf16 else "replace"
        self._decoder = codecs.getincrementaldecoder(codec)(errors=errors)
        self._odd_tail_dropped = utf16

    def decode(self, data: bytes) -> str:
        return self._decoder.decode(data)

    def flush(self) -> str:
        held = self.pending()
        if self._odd_tail_dropped and len(held) % 2:
            # UTF-16LE: Node drops a lone trailing byte (half a code unit) at the end.
            self._decoder.reset()
            return self._decoder.decode(held[:-1], final=True)
        return self._decoder.decode(b"", final=True)

    def pending(self) -> bytes:
        return bytes(self._decoder.getstate()[0])


# Node's 'ascii' decoding drops the high bit of every byte; it never fails.
_ASCII_TABLE = bytes(b & 0x7F for b in range(256))


class _StatelessDecoder:
    """ascii, latin1 and hex: every byte decodes on its own."""

    __slots__ = ("_kind",)

    def __init__(self, kind: str) -> None:
        self._kind = kind

    def decode(self, data: bytes) -> str:
        if self._kind == "hex":
            return data.hex()
        if self._kind == "ascii":
            data = data.translate(_ASCII_TABLE)
        return data.decode("latin-1")

    def flush(self) -> str:
        return ""

    def pending(self) -> bytes:
        return b""


class _Base64Decoder:
    """base64 in groups of three bytes; the remainder is padded at the end."""

    __slots__ = ("_held", "_url")

    def __init__(self, url: bool) -> None:
        self._held = b""
        self._url = url

    def _encode(self, data: bytes) -> str:
        if self._url:
            # Node's base64url output has no padding.
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
        return base64.b64encode(data).decode("ascii")

    def decode(self, data: bytes) -> str:
        if self._held:
            data = self._held + data
        cut = len(data) - len(data) % 3
        self._held = data[cut:]
        return self._encode(data[:cut]) if cut else ""

    def flush(self) -> str:
        held, self._held = self._held, b""
        return self._encode(held) if held else ""

    def pending(self) -> bytes:
        return self._held


def get_decoder(encoding: str) -> Decoder:
    """An incremental decoder for *encoding* (any accepted name)."""
    kind = normalize(encoding)
    if kind == "utf8":
        return _CodecDecoder("utf-8")
    if kind == "utf16le":
        return _CodecDecoder("utf-16-le")
    if kind in ("base64", "base64url"):
        return _Base64Decoder(url=kind == "base64url")
    return _StatelessDecoder(kind)


def encode(data: str, encoding: str) -> bytes:
    """Encode a string given to ``write()``.

    Raises:
        ValueError: unknown encoding, a string the encoding cannot represent
            (``"ascii"`` / ``"latin1"`` with characters beyond their range), or
            invalid hex text. base64 is decoded as leniently as Node does.
    """
    kind = normalize(encoding)
    if kind == "utf8":
        try:
            return data.encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates: pair what pairs, the rest becomes U+FFFD (as Node).
            text = data.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
            return text.encode("utf-8")
    if kind == "utf16le":
        return data.encode("utf-16-le", "surrogatepass")
    if kind == "ascii":
        return data.encode("ascii")
    if kind == "latin1":
        return data.encode("latin-1")
    if kind == "hex":
        try:
            return bytes.fromhex(data)
        except ValueError as exc:
            raise ValueError(f"invalid hex string for write(): {exc}") from None
    # base64 and base64url, decoded as leniently as Node: either alphabet,
    # padding optional, whitespace and other characters skipped.
    text = _NOT_BASE64.sub("", data.split("=", 1)[0]).translate(_URL_TO_STANDARD)
    if len(text) % 4 == 1:
        text = text[:-1]  # a lone trailing character carries no whole byte
    return base64.b64decode(text + "=" * (-len(text) % 4))
