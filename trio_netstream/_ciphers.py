"""``get_cipher()``'s names: OpenSSL's name of a cipher suite and its IANA
(RFC) name, as Node's ``tlsSocket.getCipher()`` gives them.

Python's ``ssl`` gives only OpenSSL's name (``ECDHE-RSA-AES128-GCM-SHA256``);
the standard name (``TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256``) comes from
OpenSSL's own table, read once through the ``libssl`` that Python's ``_ssl``
module is linked with (``SSL_CIPHER_standard_name``). Where that library
cannot be reached (a Python with OpenSSL linked in statically), a TLS 1.3
name (already the standard one) is given as is and any other as ``None``.
"""

from __future__ import annotations

import ctypes
import ssl
from functools import cache

__all__ = ["cipher_info", "standard_names"]


@cache
def standard_names() -> dict[str, str]:
    """OpenSSL's name of every cipher suite it knows → its IANA name."""
    try:
        lib = ctypes.CDLL(ssl._ssl.__file__)  # type: ignore[attr-defined]  # the extension module
        method = lib.TLS_method
        new_ctx, free_ctx = lib.SSL_CTX_new, lib.SSL_CTX_free
        set_list, get_ciphers = lib.SSL_CTX_set_cipher_list, lib.SSL_CTX_get_ciphers
        count, value = lib.OPENSSL_sk_num, lib.OPENSSL_sk_value
        name, standard = lib.SSL_CIPHER_get_name, lib.SSL_CIPHER_standard_name
    except (OSError, AttributeError):
        return {}
    method.restype = new_ctx.restype = get_ciphers.restype = value.restype = ctypes.c_void_p
    new_ctx.argtypes = [ctypes.c_void_p]
    free_ctx.argtypes = [ctypes.c_void_p]
    set_list.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    get_ciphers.argtypes = [ctypes.c_void_p]
    count.argtypes = [ctypes.c_void_p]
    value.argtypes = [ctypes.c_void_p, ctypes.c_int]
    name.restype = standard.restype = ctypes.c_char_p
    name.argtypes = standard.argtypes = [ctypes.c_void_p]
    ctx = new_ctx(method())
    if not ctx:
        return {}
    try:
        set_list(ctx, b"ALL:COMPLEMENTOFALL")
        ciphers = get_ciphers(ctx)
        names: dict[str, str] = {}
        for index in range(count(ciphers)):
            cipher = value(ciphers, index)
            ours, theirs = name(cipher), standard(cipher)
            if ours and theirs:
                names[ours.decode()] = theirs.decode()
        return names
    finally:
        free_ctx(ctx)


def cipher_info(ssl_object: ssl.SSLObject) -> dict[str, str | None] | None:
    """``{"name", "standard_name", "version"}`` of the negotiated cipher
    suite (``version``: the protocol it was defined for, as OpenSSL and Node
    say, e.g. ``"TLSv1.2"``), or ``None`` before a handshake."""
    cipher = ssl_object.cipher()
    if cipher is None:
        return None
    name, version, _bits = cipher
    standard = standard_names().get(name)
    if standard is None and name.startswith("TLS_"):
        standard = name  # TLS 1.3 suites: OpenSSL uses the standard name
    return {"name": name, "standard_name": standard, "version": version}
