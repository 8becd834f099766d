"""Encoding names, incremental decoders and write() encoders (pure, no Trio)."""

from __future__ import annotations

import base64
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_netstream._encoding import encode, get_decoder, normalize

# --- normalize() --------------------------------------------------------------

CANONICAL = ["utf8", "ascii", "base64", "base64url", "hex", "latin1", "utf16le"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # Node's spellings
        ("utf8", "utf8"),
        ("utf-8", "utf8"),
        ("ascii", "ascii"),
        ("base64", "base64"),
        ("base64url", "base64url"),
        ("hex", "hex"),
        ("latin1", "latin1"),
        ("binary", "latin1"),
        ("utf16le", "utf16le"),
        ("utf-16le", "utf16le"),
        ("ucs2", "utf16le"),
        ("ucs-2", "utf16le"),
        # Node accepts any case
        ("UTF8", "utf8"),
        ("Utf-8", "utf8"),
        ("HEX", "hex"),
        ("Latin1", "latin1"),
        ("UCS2", "utf16le"),
        # Python's common aliases of the same codecs
        ("utf_8", "utf8"),
        ("UTF_8", "utf8"),
        ("u8", "utf8"),
        ("latin-1", "latin1"),
        ("latin_1", "latin1"),
        ("iso-8859-1", "latin1"),
        ("iso8859_1", "latin1"),
        ("utf-16-le", "utf16le"),
        ("utf_16_le", "utf16le"),
        ("us-ascii", "ascii"),
    ],
)
def test_normalize_accepts_node_and_python_names(name: str, expected: str) -> None:
    assert normalize(name) == expected


@pytest.mark.parametrize("name", CANONICAL)
def test_normalize_is_idempotent_on_canonical_names(name: str) -> None:
    assert normalize(normalize(name)) == name


@pytest.mark.parametrize(
    "name",
    ["", "nope", "utf-9", "utf16", "utf-16", "utf-32", "cp1252", "rot13", "base32", "zlib"],
)
def test_normalize_rejects_unknown_names(name: str) -> None:
    with pytest.raises(ValueError, match="encoding"):
        normalize(name)


@pytest.mark.parametrize("value", [None, b"utf8", 8, 1.5, ["utf8"], object()])
def test_normalize_rejects_non_str(value: object) -> None:
    with pytest.raises(TypeError):
        normalize(value)


@pytest.mark.parametrize("name", ["nope", "utf16", ""])
def test_get_decoder_and_encode_reject_unknown_names(name: str) -> None:
    with pytest.raises(ValueError):
        get_decoder(name)
    with pytest.raises(ValueError):
        encode("x", name)


# --- get_decoder(): chunk boundaries never change the result ------------------


def whole(data: bytes, encoding: str) -> str:
    """What decoding the entire byte stream at once gives (Node semantics)."""
    if encoding == "utf8":
        return data.decode("utf-8", "replace")
    if encoding == "utf16le":
        # Node's StringDecoder drops a lone trailing byte (half a code unit).
        return data[: len(data) - len(data) % 2].decode("utf-16-le", "surrogatepass")
    if encoding == "latin1":
        return data.decode("latin-1")
    if encoding == "ascii":
        return bytes(b & 0x7F for b in data).decode("ascii")
    if encoding == "hex":
        return data.hex()
    if encoding == "base64":
        return base64.b64encode(data).decode("ascii")
    if encoding == "base64url":
        # Node's base64url output carries no padding.
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
    raise AssertionError(encoding)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, last = [], 0
    for p in [*points, len(data)]:
        chunks.append(data[last:p])
        last = p
    return chunks


def feed(encoding: str, chunks: list[bytes]) -> str:
    decoder = get_decoder(encoding)
    out = [decoder.decode(chunk) for chunk in chunks]
    out.append(decoder.flush())
    for piece in out:
        assert isinstance(piece, str)
    return "".join(out)


# Byte strategies biased towards multi-byte UTF-8 / UTF-16 sequences and garbage.
_text_bytes = st.text().map(lambda s: s.encode("utf-8", "surrogatepass"))
_utf16_bytes = st.text().map(lambda s: s.encode("utf-16-le", "surrogatepass"))
stream_bytes = st.one_of(
    st.binary(max_size=200),
    _text_bytes,
    _utf16_bytes,
    st.lists(st.one_of(_text_bytes, st.binary(max_size=4)), max_size=8).map(b"".join),
)


@pytest.mark.parametrize("encoding", CANONICAL)
@given(data=stream_bytes, cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_decoder_chunking_equals_whole_stream_decoding(
    encoding: str, data: bytes, cuts: list[int]
) -> None:
    assert feed(encoding, split(data, cuts)) == whole(data, encoding)


@pytest.mark.parametrize("encoding", CANONICAL)
@given(data=stream_bytes)
def test_decoder_one_byte_chunks_equal_whole_stream_decoding(encoding: str, data: bytes) -> None:
    chunks = [data[i : i + 1] for i in range(len(data))]
    assert feed(encoding, chunks) == whole(data, encoding)


@pytest.mark.parametrize("encoding", CANONICAL)
def test_decoder_empty_stream_and_empty_chunks(encoding: str) -> None:
    decoder = get_decoder(encoding)
    assert decoder.decode(b"") == ""
    assert decoder.decode(b"") == ""
    assert decoder.flush() == ""
    assert decoder.pending() == b""


@pytest.mark.parametrize(
    ("name", "codec"),
    [
        ("utf-8", "utf-8"),
        ("UTF8", "utf-8"),
        ("binary", "latin-1"),
        ("latin-1", "latin-1"),
        ("ucs2", "utf-16-le"),
        ("utf_16_le", "utf-16-le"),
    ],
)
def test_get_decoder_accepts_aliases(name: str, codec: str) -> None:
    data = "héllo".encode(codec)
    assert feed(name, [data[:2], data[2:]]) == "héllo"


def test_utf8_many_multibyte_characters_one_byte_chunks() -> None:
    data = ("あ" * 40_960).encode("utf-8")
    assert len(data) == 3 * 40_960
    text = feed("utf8", [data[i : i + 1] for i in range(len(data))])
    assert len(text) == 40_960
    assert text == "あ" * 40_960


def test_utf8_many_multibyte_characters_random_chunks() -> None:
    data = ("あ" * 40_960).encode("utf-8")
    rng = random.Random(1234)
    chunks, pos = [], 0
    while pos < len(data):
        size = rng.randint(1, 4096)
        chunks.append(data[pos : pos + size])
        pos += size
    decoder = get_decoder("utf8")
    pieces = [decoder.decode(chunk) for chunk in chunks]
    # No piece ever contains a broken character.
    assert all("\ufffd" not in piece for piece in pieces)
    text = "".join(pieces) + decoder.flush()
    assert len(text) == 40_960
    assert text == "あ" * 40_960


def test_latin1_every_byte_value_round_trips() -> None:
    data = bytes(range(256))
    text = feed("latin1", [data[:100], data[100:]])
    assert len(text) == 256
    assert [ord(c) for c in text] == list(range(256))
    assert encode(text, "latin1") == data


def test_binary_is_latin1() -> None:
    data = bytes(range(256))
    assert feed("binary", [data]) == feed("latin1", [data])


def test_ascii_decoding_masks_the_high_bit() -> None:
    # Node's 'ascii' decoder drops the high bit: 0xE9 -> 0x69 'i', 0xFF -> 0x7F.
    assert feed("ascii", [b"caf\xe9", b"\xff\x80"]) == "cafi\x7f\x00"
    assert feed("ascii", [bytes(range(256))]) == "".join(chr(b & 0x7F) for b in range(256))


@pytest.mark.parametrize(
    "tail",
    [
        b"\xe3",  # 1 of 3 bytes of 'あ'
        b"\xe3\x81",  # 2 of 3 bytes
        b"\xf0\x9f\x98",  # 3 of 4 bytes of an emoji
    ],
)
def test_utf8_truncated_tail_becomes_replacement_at_flush(tail: bytes) -> None:
    decoder = get_decoder("utf8")
    assert decoder.decode(b"ok" + tail) == "ok"
    assert decoder.pending() == tail
    assert decoder.flush() == "\ufffd"
    assert decoder.pending() == b""


@pytest.mark.parametrize(
    "data",
    [
        b"\xff",
        b"\xc0\xaf",  # overlong
        b"\xed\xa0\x80",  # encoded surrogate
        b"\xf5\x80\x80\x80",  # beyond U+10FFFF
        b"\x80\x80\x80",  # lone continuation bytes
        b"a\xe3\x81b",  # truncated in the middle
        bytes(range(256)),
    ],
)
def test_utf8_invalid_input_never_raises(data: bytes) -> None:
    decoder = get_decoder("utf8")
    text = "".join(decoder.decode(data[i : i + 1]) for i in range(len(data))) + decoder.flush()
    assert "\ufffd" in text
    assert text == data.decode("utf-8", "replace")


@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 400), max_size=10))
def test_utf8_random_bytes_never_raise(data: bytes, cuts: list[int]) -> None:
    feed("utf8", split(data, cuts))


def test_utf8_split_character_is_held_then_completed() -> None:
    decoder = get_decoder("utf8")
    assert decoder.decode(b"a\xe3") == "a"
    assert decoder.pending() == b"\xe3"
    assert decoder.decode(b"\x81") == ""
    assert decoder.pending() == b"\xe3\x81"
    assert decoder.decode(b"\x82b") == "あb"
    assert decoder.pending() == b""
    assert decoder.flush() == ""


def test_utf16le_split_code_unit_and_surrogate_pair() -> None:
    data = "a😀".encode("utf-16-le")  # 2 + 4 bytes
    decoder = get_decoder("utf16le")
    assert decoder.decode(data[:1]) == ""
    assert decoder.pending() == data[:1]
    assert decoder.decode(data[1:4]) == "a"
    assert decoder.decode(data[4:]) == "😀"
    assert decoder.pending() == b""
    assert decoder.flush() == ""


def test_utf16le_lone_trailing_byte_is_dropped_as_node_does() -> None:
    decoder = get_decoder("utf16le")
    assert decoder.decode("ab".encode("utf-16-le") + b"\x63") == "ab"
    assert decoder.pending() == b"\x63"
    assert decoder.flush() == ""
    # Half a surrogate pair plus one byte: the lone surrogate comes out, as in Node.
    decoder = get_decoder("utf16le")
    assert decoder.decode("😀".encode("utf-16-le")[:3]) == ""
    assert decoder.flush() == "\ud83d"


@pytest.mark.parametrize(
    ("encoding", "fed", "out", "held", "flushed"),
    [
        ("base64", b"hell", "aGVs", b"l", "bA=="),
        ("base64", b"he", "", b"he", "aGU="),
        ("base64", b"hel", "aGVs", b"", ""),
        ("base64url", b"\xfb\xff", "", b"\xfb\xff", "-_8"),
        ("base64url", b"\xfb\xff\xbf\xfb", "-_-_", b"\xfb", "-w"),
        ("hex", b"\x00\xab", "00ab", b"", ""),
        ("latin1", b"\xe9", "é", b"", ""),
        ("ascii", b"\xe9", "i", b"", ""),
    ],
)
def test_pending_returns_held_bytes(
    encoding: str, fed: bytes, out: str, held: bytes, flushed: str
) -> None:
    decoder = get_decoder(encoding)
    assert decoder.decode(fed) == out
    assert decoder.pending() == held
    assert decoder.flush() == flushed
    assert decoder.pending() == b""


def test_base64_padding_only_at_the_end() -> None:
    decoder = get_decoder("base64")
    pieces = [decoder.decode(b"a"), decoder.decode(b"bcd"), decoder.decode(b"e")]
    assert pieces == ["", "YWJj", ""]
    assert all("=" not in piece for piece in pieces)
    assert decoder.flush() == "ZGU="
    assert "".join(pieces) + "ZGU=" == base64.b64encode(b"abcde").decode()


# --- encode(): strings given to write() ---------------------------------------


@pytest.mark.parametrize(
    ("text", "encoding", "expected"),
    [
        ("hello", "utf8", b"hello"),
        ("héllo あ😀", "utf8", "héllo あ😀".encode()),
        ("héllo", "utf-8", "héllo".encode()),
        ("", "utf8", b""),
        ("hello", "ascii", b"hello"),
        ("\x00\x7f", "ascii", b"\x00\x7f"),
        ("é\xff\x00", "latin1", b"\xe9\xff\x00"),
        ("é", "binary", b"\xe9"),
        ("aé😀", "utf16le", "aé😀".encode("utf-16-le")),
        ("a", "ucs2", b"a\x00"),
        ("aGVsbG8=", "base64", b"hello"),
        ("aGVsbG8gd29ybGQ=", "base64", b"hello world"),
        ("", "base64", b""),
        ("-_-_", "base64url", b"\xfb\xff\xbf"),
        ("aGVsbG8", "base64url", b"hello"),
        ("deadBEEF", "hex", b"\xde\xad\xbe\xef"),
        ("00ff", "hex", b"\x00\xff"),
        ("", "hex", b""),
    ],
)
def test_encode(text: str, encoding: str, expected: bytes) -> None:
    result = encode(text, encoding)
    assert type(result) is bytes
    assert result == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Node's base64 decoder accepts missing padding and the URL-safe alphabet.
        ("aGVsbG8", b"hello"),
        ("aGU", b"he"),
        ("-_-_", b"\xfb\xff\xbf"),
        ("aGVs\nbG8=", b"hello"),
    ],
)
def test_encode_base64_is_as_lenient_as_node(text: str, expected: bytes) -> None:
    assert encode(text, "base64") == expected


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("zz", "hex"),
        ("0g", "hex"),
        ("abc", "hex"),  # odd length
        ("é", "ascii"),
        ("あ", "latin1"),
        ("😀", "binary"),
    ],
)
def test_encode_rejects_bad_hex_and_unencodable_text(text: str, encoding: str) -> None:
    with pytest.raises(ValueError):
        encode(text, encoding)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\ud800", b"\xef\xbf\xbd"),  # lone high surrogate
        ("a\udc00b", b"a\xef\xbf\xbdb"),  # lone low surrogate
        ("\ud83d\ude00", "😀".encode()),  # a pair written as two code units pairs up
        ("\udc00\ud800", b"\xef\xbf\xbd\xef\xbf\xbd"),  # wrong order: two lone halves
    ],
)
def test_encode_utf8_lone_surrogates_become_replacement(text: str, expected: bytes) -> None:
    assert encode(text, "utf8") == expected


@given(st.text())
def test_encode_then_decode_utf8_round_trips(text: str) -> None:
    assert feed("utf8", [encode(text, "utf8")]) == text


@given(st.binary(max_size=200))
def test_hex_and_base64_encode_invert_the_decoders(data: bytes) -> None:
    assert encode(feed("hex", [data]), "hex") == data
    assert encode(feed("base64", [data]), "base64") == data
    assert encode(feed("base64url", [data]), "base64url") == data
