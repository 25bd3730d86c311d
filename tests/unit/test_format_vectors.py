#!/usr/bin/env python3
"""Rebuild docs/FORMAT.md's test vectors from the document alone.

Every vector is built from the inputs FORMAT.md states (keys, key name,
times, content type, payload, nonce), following its layout, key derivation,
MAC and AEAD sections, with Python's hashlib for BLAKE2b and the
ChaCha20/Poly1305 written out below. No code is shared with src/envelope.c
or libsodium. The test requires that:

- the derived subkeys equal FORMAT.md's table,
- every vector equals the hex FORMAT.md prints,
- the same hex is in tests/unit/test_envelope.c, which the C code must
  reproduce both ways,
- fuzz/corpus/envelope_decode_fuzzer/vectorN holds the same bytes.

So the vectors are not merely what src/envelope.c happens to write.
Usage: test_format_vectors.py SOURCE_DIR
"""
import hashlib
import re
import struct
import sys

M32 = 0xFFFFFFFF
SIGMA = (0x61707865, 0x3320646E, 0x79622D32, 0x6B206574)

K1 = bytes(range(0x00, 0x20))
K2 = bytes(range(0x80, 0xA0))
RKEY = b"cachet:v:user:42"
CREATED = 1700000000000
EXPIRES = 1700000060000
NONCE = bytes(range(0x40, 0x58))

# FORMAT.md "Test vectors": (keyring's active key or None, its id,
# encrypted, content_type, expires_ms, payload).
VECTORS = {
    1: (None, 0, False, 0, 0, b"hello, cachet"),
    2: (None, 0, False, 1, EXPIRES, b'{"id":42}'),
    3: (K1, 1, False, 0, 0, b"hello, cachet"),
    4: (K2, 2, False, 7, EXPIRES, b'{"id":42}'),
    5: (K1, 1, True, 0, 0, b"hello, cachet"),
    6: (K2, 2, True, 0x12345678, EXPIRES, b"secret"),
    7: (K1, 1, False, 0, 0, b""),
}


def rotl(v, c):
    return ((v << c) & M32) | (v >> (32 - c))


def rounds(s):
    def qr(a, b, c, d):
        s[a] = (s[a] + s[b]) & M32
        s[d] = rotl(s[d] ^ s[a], 16)
        s[c] = (s[c] + s[d]) & M32
        s[b] = rotl(s[b] ^ s[c], 12)
        s[a] = (s[a] + s[b]) & M32
        s[d] = rotl(s[d] ^ s[a], 8)
        s[c] = (s[c] + s[d]) & M32
        s[b] = rotl(s[b] ^ s[c], 7)

    for _ in range(10):
        qr(0, 4, 8, 12), qr(1, 5, 9, 13), qr(2, 6, 10, 14), qr(3, 7, 11, 15)
        qr(0, 5, 10, 15), qr(1, 6, 11, 12), qr(2, 7, 8, 13), qr(3, 4, 9, 14)


def chacha20_block(key, counter, nonce12):
    """RFC 8439 section 2.3: 32-bit counter, 96-bit nonce."""
    init = list(SIGMA) + list(struct.unpack("<8I", key)) + [counter]
    init += list(struct.unpack("<3I", nonce12))
    s = init[:]
    rounds(s)
    return struct.pack("<16I", *((a + b) & M32 for a, b in zip(s, init)))


def hchacha20(key, nonce16):
    s = list(SIGMA) + list(struct.unpack("<8I", key))
    s += list(struct.unpack("<4I", nonce16))
    rounds(s)
    return struct.pack("<8I", *(s[0:4] + s[12:16]))


def poly1305(key, msg):
    r = int.from_bytes(key[:16], "little") & 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF
    acc, p = 0, (1 << 130) - 5
    for i in range(0, len(msg), 16):
        acc = (acc + int.from_bytes(msg[i:i + 16] + b"\x01", "little")) * r % p
    acc = (acc + int.from_bytes(key[16:], "little")) & ((1 << 128) - 1)
    return acc.to_bytes(16, "little")


def xchacha20poly1305_encrypt(key, nonce24, ad, msg):
    """crypto_aead_xchacha20poly1305_ietf: HChaCha20 subkey, then the IETF
    ChaCha20-Poly1305 of RFC 8439 section 2.8. Returns (ciphertext, tag)."""
    sub = hchacha20(key, nonce24[:16])
    n12 = bytes(4) + nonce24[16:]
    stream = b"".join(chacha20_block(sub, 1 + i, n12)
                      for i in range((len(msg) + 63) // 64))
    ct = bytes(a ^ b for a, b in zip(msg, stream))

    def pad16(b):
        return b + bytes(-len(b) % 16)

    data = pad16(ad) + pad16(ct) + struct.pack("<QQ", len(ad), len(ct))
    return ct, poly1305(chacha20_block(sub, 0, n12)[:32], data)


def subkey(master, subkey_id):
    """FORMAT.md "Keys": crypto_kdf_derive_from_key with ctx "cachetv1"."""
    return hashlib.blake2b(b"", digest_size=32, key=master,
                           salt=struct.pack("<Q", subkey_id) + bytes(8),
                           person=b"cachetv1" + bytes(8)).digest()


def build(master, key_id, encrypt, ctype, expires, payload):
    flags = 0x03 if encrypt else 0x01 if master else 0x00
    header = b"\xc4\xc7\xe5\x1a" + struct.pack(
        "<BBIqqII", 1, flags, key_id, CREATED, expires, ctype, len(payload))
    assert len(header) == 34
    if master is None:
        return header + payload
    if not encrypt:
        # FORMAT.md "MAC'd envelopes": salt || personal = header[4..34) ||
        # "em", message = rkey || payload.
        param = header[4:34] + b"em"
        tag = hashlib.blake2b(RKEY + payload, digest_size=32,
                              key=subkey(master, 1), salt=param[:16],
                              person=param[16:]).digest()
        return header + payload + tag
    # FORMAT.md "Encrypted envelopes".
    hdr = header + NONCE
    ad = struct.pack("<I", len(RKEY)) + RKEY + header
    ct, tag = xchacha20poly1305_encrypt(subkey(master, 2), NONCE, ad, payload)
    return hdr + ct + tag


def format_md_vectors(text):
    """{n: bytes} from the fenced hex block after each "**Vn:" line."""
    out, current, block = {}, None, None
    for line in text.splitlines():
        m = re.match(r"\*\*V(\d+):", line)
        if m:
            current = int(m.group(1))
        elif line.startswith("```") and current is not None:
            if block is None:
                block = []
            else:
                out[current] = bytes.fromhex("".join(block))
                current, block = None, None
        elif block is not None:
            block.append(line.strip())
    return out


def format_md_subkeys(text):
    """{(master, subkey_id): bytes} from the derived-subkey table."""
    out = {}
    for name, master in (("K1", K1), ("K2", K2)):
        m = re.search(r"^\| %s \| `([0-9a-f]{64})` \| `([0-9a-f]{64})` \|"
                      % name, text, re.M)
        if m is None:
            raise SystemExit("FORMAT.md: no subkey row for " + name)
        out[(master, 1)] = bytes.fromhex(m.group(1))
        out[(master, 2)] = bytes.fromhex(m.group(2))
    return out


def test_c_vectors(text):
    """{n: bytes} from the VECTORS table of tests/unit/test_envelope.c."""
    m = re.search(r"static const vector VECTORS\[\] = \{(.*?)\n\};", text,
                  re.S)
    if m is None:
        raise SystemExit("test_envelope.c: no VECTORS table")
    out = {}
    for entry in m.group(1).split('{"V')[1:]:
        n = int(re.match(r"\d+", entry).group(0))
        # The hex is the string literals that stand alone on their lines.
        lines = re.findall(r'^\s*"([0-9a-f]+)"\}?,?$', entry, re.M)
        out[n] = bytes.fromhex("".join(lines))
    return out


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: test_format_vectors.py SOURCE_DIR")
    src = sys.argv[1]
    with open(src + "/docs/FORMAT.md", encoding="utf-8") as f:
        doc = f.read()
    with open(src + "/tests/unit/test_envelope.c", encoding="utf-8") as f:
        ctest = f.read()
    failures = []

    for (master, i), want in format_md_subkeys(doc).items():
        if subkey(master, i) != want:
            failures.append("FORMAT.md subkey %d of K%d" %
                            (i, 1 if master == K1 else 2))

    doc_vec, c_vec = format_md_vectors(doc), test_c_vectors(ctest)
    for n, inputs in sorted(VECTORS.items()):
        got = build(*inputs)
        if doc_vec.get(n) != got:
            failures.append("V%d: FORMAT.md differs; this document gives\n%s" %
                            (n, got.hex()))
        if c_vec.get(n) != got:
            failures.append("V%d: tests/unit/test_envelope.c differs" % n)
        path = "%s/fuzz/corpus/envelope_decode_fuzzer/vector%d" % (src, n)
        with open(path, "rb") as f:
            if f.read() != got:
                failures.append("V%d: %s differs" % (n, path))
    if set(doc_vec) != set(VECTORS) or set(c_vec) != set(VECTORS):
        failures.append("vector sets differ: FORMAT.md %s, test_envelope.c %s"
                        % (sorted(doc_vec), sorted(c_vec)))

    for msg in failures:
        print("FAIL " + msg)
    if failures:
        return 1
    print("ok: %d vectors and 4 subkeys rebuilt from FORMAT.md" % len(VECTORS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
