"""Scenario 7 of the reliability campaign: hostile image inputs against the real stack.

    from image_inputs import image_inputs; image_inputs(quick, keep) -> Result

The real stack (ps, is, svg under the supervisor, ephemeral ports, a temporary home). The script
builds a corpus of bad inputs with the standard library only, from valid sources of every format
the stack itself serves (JPEG, PNG, GIF, WebP, TIFF, and the sample SVG):

- truncated: every source cut at many offsets (the header bytes one by one, then sixteenths);
- corrupt: targeted header damage, plus random byte flips made afresh during the run (seeded);
- bomb: sizes declared in the header (every format), and small files that decode to up to
  MaxSourcePix pixels (a deflate bomb in PNG and TIFF, a JPEG whose scan is missing, zTXt and
  iCCP chunks that inflate to 1 GiB, a GIF frame larger than its screen);
- svg: external references (`file:`, paths, `http:` to a listener of ours that counts
  connections), XXE, entity expansion, parameter entities, huge sizes, pattern bombs, deep
  nesting, svgz, oversized and non-UTF-8 documents;
- traversal: `..` in every encoding, backslashes, absolute paths, NUL bytes, `defaultImage=`,
  raw request lines, and symbolic links out of `images/` (to a file, a directory, `/`, `/proc`).

A secret is planted outside `images/` (a text file with a random marker, and a PNG); the links
and the traversals aim at it. For 60 s (15 s with --quick) one thread sends these inputs (the
static corpus in a shuffled cycle, every other request a new random flip) while another sends a
valid request every 100 ms. Every answer is checked: the expected status for its input, a
one-line text message for errors, no home path in it, the secret never in a body. At the end:
restarts of ps, is and svg (goal 0: no input crashes a server), the valid requests' success rate
and latency, and the peak RSS of `is` (VmHWM) against the bound the code's limits give.
"""

import gzip
import http.client
import os
import random
import shutil
import socket
import struct
import threading
import time
import zlib

from common import Home, Result, components, free_ports, ms, pct, stack_config, timed_status

VALID_PATH = "/is/image/sample/photo?wid=120&fmt=jpeg&cache=off"
REQUEST_TIMEOUT = 35.0  # past is's 30 s deadline and ps's 35 s: a hang shows as a timeout

# From the code: catalog default MaxSourcePix (src/imaging/catalog.rs), the decoder's allocation
# budget per request, 8 bytes a pixel + 64 MiB (src/imaging/pipeline/decode.rs, alloc_budget),
# and the premultiplied copy fast_image_resize makes of the visible source region (at most the
# same 8 bytes a pixel) when the source has alpha (src/imaging/pipeline/compose.rs, resample).
MAX_SOURCE_PIX = 100_000_000
DECODER_BUDGET = MAX_SOURCE_PIX * 8 + (64 << 20)
RESAMPLE_COPY = MAX_SOURCE_PIX * 8
KEPT_FREE = 256 << 20  # M_TRIM_THRESHOLD in src/servers/image_server.rs: freed memory kept


# =========================================================================== file formats

def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width, height, color_type, idat, bit_depth=8, extra=b""):
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


def deflate_zeros(total, level=9, piece=1 << 20):
    """zlib stream of `total` zero bytes, without holding them."""
    co = zlib.compressobj(level)
    out = []
    zero = bytes(piece)
    left = total
    while left:
        n = min(left, piece)
        out.append(co.compress(zero if n == piece else bytes(n)))
        left -= n
    out.append(co.flush())
    return b"".join(out)


def png_zero_rows(width, height, channels, depth_bytes):
    """IDAT data of width x height zero pixels: one filter byte (0) and zeros per row."""
    row = 1 + width * channels * depth_bytes
    return deflate_zeros(row * height)


def tiff(width, height, strip, compression=1, samples=1, bits=8, photometric=1):
    """Little-endian TIFF with one strip after the IFD."""
    entries = [
        (256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, bits), (259, 3, 1, compression),
        (262, 3, 1, photometric), (273, 4, 1, 0), (277, 3, 1, samples), (278, 4, 1, height),
        (279, 4, 1, len(strip)),
    ]
    ifd_at = 8
    strip_at = ifd_at + 2 + 12 * len(entries) + 4
    out = b"II*\0" + struct.pack("<I", ifd_at) + struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        if tag == 273:
            value = strip_at
        packed = struct.pack("<H", value) + b"\0\0" if kind == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, count) + packed
    return out + struct.pack("<I", 0) + strip


def gif_header(width, height):
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00"


def gif_frame_larger_than_screen():
    # Screen 8x8, no global table; a frame descriptor of 65535x65535 with a local table, LZW data.
    out = gif_header(8, 8)
    out += b"\x2c" + struct.pack("<HHHH", 0, 0, 65535, 65535) + b"\x80" + b"\x00\x00\x00\xff\xff\xff"
    out += b"\x02" + b"\x02\x4c\x01\x00" + b"\x3b"
    return out


def webp_vp8x(width, height):
    body = b"VP8X" + struct.pack("<I", 10) + b"\x10\0\0\0" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def webp_vp8l(width, height):
    bits = (width - 1) | ((height - 1) << 14) | (1 << 28)
    data = b"\x2f" + struct.pack("<I", bits) + b"\0" * 8
    body = b"VP8L" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def webp_vp8(width, height):
    data = b"\x10\x02\x00" + b"\x9d\x01\x2a" + struct.pack("<HH", width, height) + b"\0" * 10
    body = b"VP8 " + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def jpeg_with_size(jpeg, width, height):
    """`jpeg` with the size in its first frame header replaced (the scan left as it is)."""
    b = bytearray(jpeg)
    i = 2
    while i + 4 < len(b):
        if b[i] != 0xFF:
            i += 1
            continue
        marker = b[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        length = struct.unpack(">H", b[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            b[i + 5:i + 7] = struct.pack(">H", height)
            b[i + 7:i + 9] = struct.pack(">H", width)
            return bytes(b)
        i += 2 + length
    raise ValueError("no frame header")


def jpeg_scan_cut(jpeg, keep=64):
    """`jpeg` with its entropy-coded data cut after `keep` bytes and an end marker added: complete
    to the server's check, but nearly all of the image is missing."""
    sos = jpeg.index(b"\xff\xda")
    length = struct.unpack(">H", jpeg[sos + 2:sos + 4])[0]
    return jpeg[:sos + 2 + length + keep] + b"\xff\xd9"


# =========================================================================== the corpus

class Entry:
    """One input: how to ask for it, and which statuses are right."""

    def __init__(self, klass, name, path, expect, raw=None, note=""):
        self.klass = klass
        self.name = name
        self.path = path          # request target, or None for a raw request
        self.expect = set(expect)  # acceptable statuses
        self.raw = raw            # bytes of a raw request line and head
        self.note = note
        self.echoes_home = False  # the input itself holds the home's path (a message may echo it)


def fetch(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"GET {path}: {r.status} {body[:200]!r}")
        return body
    finally:
        c.close()


def valid_sources(home, port):
    """{name: (ext, bytes)}: one valid source per format and variant, made by the stack."""
    s = {}
    for name, path, ext in [
        ("jpeg", "sample/photo?wid=320&fmt=jpeg", "jpg"),
        ("png", "sample/photo?wid=160&fmt=png", "png"),
        ("png-alpha", "sample/logo?wid=64&fmt=png-alpha", "png"),
        ("gif", "sample/photo?wid=160&fmt=gif", "gif"),
        ("webp", "sample/photo?wid=160&fmt=webp", "webp"),
        ("webp-alpha", "sample/logo?wid=64&fmt=webp-alpha", "webp"),
        ("tiff", "sample/photo?wid=100&fmt=tif", "tif"),
        ("tiff-alpha", "sample/logo?wid=48&fmt=tif-alpha", "tif"),
    ]:
        s[name] = (ext, fetch(port, f"/is/image/{path}&cache=off"))
    with open(os.path.join(home, "images", "sample", "photo.jpg"), "rb") as f:
        s["photo-jpeg"] = ("jpg", f.read())
    with open(os.path.join(home, "images", "sample", "drawing.svg"), "rb") as f:
        s["svg"] = ("svg", f.read())
    return s


def truncation_offsets(n):
    offs = set(range(0, 13)) | {16, 20, 24, 26, 30, 32, 40, 48, 64, 100, 200, 400}
    offs |= {n * k // 16 for k in range(1, 16)}
    offs |= {n - 16, n - 64}
    # The last bytes are trailers some decoders do not need (PNG's IEND chunk, GIF's trailer,
    # WebP's padding): a cut there may still decode, and is not counted as a truncation.
    return sorted(o for o in offs if 0 <= o <= n - 16)


def build_corpus(home, sources, listener_port, secret_png_path, rng):
    """Writes the static corpus below images/bad/ and returns its entries."""
    bad = os.path.join(home, "images", "bad")
    os.makedirs(bad, exist_ok=True)
    entries = []

    def put(klass, name, data, expect, query="wid=100&cache=off", note=""):
        with open(os.path.join(bad, name), "wb") as f:
            f.write(data)
        entries.append(Entry(klass, name, f"/is/image/bad/{name}?{query}", expect, note=note))

    # ---- truncated: every format, many offsets
    for src, (ext, data) in sources.items():
        for off in truncation_offsets(len(data)):
            put("truncated", f"trunc-{src}-{off}.{ext}", data[:off], {403})

    # ---- corrupt: targeted damage (random flips are made during the run)
    jpeg = sources["jpeg"][1]
    pngb = sources["png"][1]
    gifb = sources["gif"][1]
    webpb = sources["webp"][1]
    tifb = sources["tiff"][1]
    put("corrupt", "empty.png", b"", {403})
    put("corrupt", "one-byte.jpg", b"\xff", {403})
    put("corrupt", "text.jpg", b"hello, world\n", {403})
    put("corrupt", "html.svg", b"<html><body>not an svg</body></html>", {403})
    put("corrupt", "random-4k.bin", bytes(rng.randrange(256) for _ in range(4096)), {403})
    for magic, ext in [(b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF89a", "gif"),
                       (b"RIFF\0\0\0\0WEBP", "webp"), (b"II*\0", "tif"), (b"MM\0*", "tif")]:
        noise = bytes(rng.randrange(256) for _ in range(2048))
        put("corrupt", f"magic-then-noise.{ext}" if not magic.startswith(b"MM") else "magic-then-noise-mm.tif",
            magic + noise, {403})
    put("corrupt", "png-bad-ihdr-crc.png", pngb[:29] + bytes([pngb[29] ^ 0xFF]) + pngb[30:], {403})
    put("corrupt", "png-idat-garbage.png", png(64, 64, 2, bytes(rng.randrange(256) for _ in range(500))), {403})
    put("corrupt", "png-chunk-len-2g.png", pngb[:33] + struct.pack(">I", 0x7FFFFFFF) + pngb[37:], {403})
    put("corrupt", "png-bad-depth.png", png(16, 16, 2, deflate_zeros(16 * 49), bit_depth=7), {403})
    put("corrupt", "png-bad-color-type.png", png(16, 16, 5, deflate_zeros(16 * 49)), {403})
    put("corrupt", "jpeg-zero-width.jpg", jpeg_with_size(jpeg, 0, 10), {403})
    put("corrupt", "jpeg-no-scan.jpg", jpeg[:jpeg.index(b"\xff\xda")] + b"\xff\xd9", {403})
    sof = jpeg.index(b"\xff\xc0") if b"\xff\xc0" in jpeg else jpeg.index(b"\xff\xc2")
    put("corrupt", "jpeg-zero-components.jpg", jpeg[:sof + 9] + b"\x00" + jpeg[sof + 10:], {403})
    dht = jpeg.index(b"\xff\xc4")
    put("corrupt", "jpeg-dht-garbage.jpg", jpeg[:dht + 4] + bytes(rng.randrange(256) for _ in range(60)) + jpeg[dht + 64:], {200, 403})
    put("corrupt", "gif-lzw-size-13.gif",
        gif_header(16, 16) + b"\x2c" + struct.pack("<HHHH", 0, 0, 16, 16) + b"\x00" + b"\x0d\x02\xff\xff\x00\x3b", {403})
    put("corrupt", "gif-no-frame.gif", gif_header(16, 16) + b"\x3b", {403})
    put("corrupt", "webp-chunk-len-4g.webp", webpb[:16] + b"\xff\xff\xff\xff" + webpb[20:], {200, 403})
    put("corrupt", "webp-riff-len-lie.webp", webpb[:4] + b"\xff\xff\xff\x7f" + webpb[8:], {200, 403})
    put("corrupt", "tiff-ifd-past-end.tif", tifb[:4] + struct.pack("<I" if tifb[:2] == b"II" else ">I", 0x7FFFFFF0) + tifb[8:], {403})
    loop = bytearray(tiff(8, 8, bytes(64)))
    loop[-64 - 4:-64] = struct.pack("<I", 8)  # the next-IFD offset points at the IFD itself
    put("corrupt", "tiff-ifd-loop.tif", bytes(loop), {200, 403})
    put("corrupt", "tiff-strip-past-end.tif", tiff(64, 64, bytes(4096))[:-4000], {403})
    put("corrupt", "tiff-bad-compression.tif", tiff(8, 8, bytes(64), compression=50000), {403})
    put("corrupt", "tiff-lzw-garbage.tif", tiff(64, 64, bytes(rng.randrange(256) for _ in range(300)), compression=5), {200, 403})
    put("corrupt", "tiff-65535-entries.tif", b"II*\0" + struct.pack("<IH", 8, 65535) + bytes(rng.randrange(256) for _ in range(4000)), {403})

    # ---- bombs: sizes declared in the header
    for name, data in [
        ("png-100000x100000.png", png(100000, 100000, 6, b"")),
        ("png-65535x65535-grey.png", png(65535, 65535, 0, b"")),
        ("png-2g-wide.png", png(0x7FFFFFFF, 1, 0, b"")),
        ("png-4g-wide.png", png(0xFFFFFFFF, 0xFFFFFFFF, 0, b"")),
        ("png-10001x10000.png", png(10001, 10000, 0, png_zero_rows(10, 10, 1, 1))),
        ("jpeg-65535x65535.jpg", jpeg_with_size(jpeg, 65535, 65535)),
        ("gif-65535x65535.gif", gif_header(65535, 65535) + b"\x3b"),
        ("webp-vp8x-16384.webp", webp_vp8x(16384, 16384)),
        ("webp-vp8x-16m.webp", webp_vp8x(1 << 24, 1 << 24)),
        ("webp-vp8l-16384.webp", webp_vp8l(16384, 16384)),
        ("webp-vp8-16383.webp", webp_vp8(16383, 16383)),
        ("tiff-100000x100000.tif", tiff(100000, 100000, b"")),
        ("tiff-4g-wide.tif", tiff(0xFFFFFFFF, 1, b"")),
    ]:
        put("bomb", name, data, {403}, note="declared")
    # ---- bombs: small files that decode to a lot (within MaxSourcePix, so they may be served)
    put("bomb", "png-10000x10000-rgba8-deflate.png", png(10000, 10000, 6, png_zero_rows(10000, 10000, 4, 1)),
        {200, 403}, note="400 MB of pixels")
    put("bomb", "png-10000x10000-rgba16-deflate.png",
        png(10000, 10000, 6, png_zero_rows(10000, 10000, 4, 2), bit_depth=16), {200, 403}, note="800 MB of pixels")
    put("bomb", "tiff-10000x10000-deflate.tif", tiff(10000, 10000, deflate_zeros(10000 * 10000), compression=8),
        {200, 403}, note="100 MB of pixels")
    put("bomb", "jpeg-10000x10000-no-data.jpg", jpeg_scan_cut(jpeg_with_size(jpeg, 10000, 10000)),
        {200, 403}, note="300 MB of pixels")
    ztxt = chunk(b"zTXt", b"bomb\0\0" + deflate_zeros(1 << 30))
    put("bomb", "png-ztxt-1g.png", png(16, 16, 0, deflate_zeros(16 * 17), extra=ztxt), {200, 403}, note="zTXt inflates to 1 GiB")
    iccp = chunk(b"iCCP", b"icc\0\0" + deflate_zeros(1 << 30))
    put("bomb", "png-iccp-1g.png", png(16, 16, 2, deflate_zeros(16 * 49), extra=iccp), {200, 403}, note="iCCP inflates to 1 GiB")
    put("bomb", "png-idat-1g-for-16x16.png", png(16, 16, 0, deflate_zeros(1 << 30)), {200, 403}, note="IDAT inflates to 1 GiB")
    put("bomb", "gif-frame-65535-on-8x8.gif", gif_frame_larger_than_screen(), {200, 403})

    # ---- svg: hostile documents
    svg_open = '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="100" height="100">'
    secret_url = "file://" + secret_png_path
    lol = '<!ENTITY l0 "lollollollollollollollollollol">' + "".join(
        f'<!ENTITY l{i} "{("&l%d;" % (i - 1)) * 10}">' for i in range(1, 10))
    quadratic = '<!ENTITY q "' + "x" * 50000 + '">'
    for name, text, expect in [
        ("image-file-secret.svg", f'{svg_open}<image width="100" height="100" href="{secret_url}"/></svg>', {403}),
        ("image-path-secret.svg", f'{svg_open}<image width="100" height="100" xlink:href="{secret_png_path}"/></svg>', {403}),
        ("image-relative.svg", f'{svg_open}<image width="100" height="100" href="../../secret/secret.png"/></svg>', {403}),
        ("image-passwd.svg", f'{svg_open}<image width="100" height="100" href="file:///etc/passwd"/></svg>', {403}),
        ("image-http.svg", f'{svg_open}<image width="100" height="100" href="http://127.0.0.1:{listener_port}/x.png"/></svg>', {403}),
        ("image-xlink-http.svg", f'{svg_open}<image width="100" height="100" xlink:href="http://127.0.0.1:{listener_port}/y.svg"/></svg>', {403}),
        ("feimage-http.svg", f'{svg_open}<filter id="f"><feImage href="http://127.0.0.1:{listener_port}/f.png"/></filter><rect width="10" height="10" filter="url(#f)"/></svg>', {200, 403}),
        ("use-external.svg", f'{svg_open}<use href="http://127.0.0.1:{listener_port}/u.svg#a"/><use xlink:href="file:///etc/passwd#x"/></svg>', {200, 403}),
        ("css-import.svg", f'{svg_open}<style>@import url(http://127.0.0.1:{listener_port}/s.css); rect {{ fill: url(http://127.0.0.1:{listener_port}/p.svg#p) }}</style><rect width="10" height="10"/></svg>', {200, 403}),
        ("xml-stylesheet.svg", f'<?xml-stylesheet href="http://127.0.0.1:{listener_port}/x.css"?>{svg_open}<rect width="10" height="10"/></svg>', {200, 403}),
        ("xxe-passwd.svg", f'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]>{svg_open}<text>&x;</text></svg>', {403}),
        ("xxe-http.svg", f'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "http://127.0.0.1:{listener_port}/e">]>{svg_open}<text>&x;</text></svg>', {403}),
        ("dtd-external.svg", f'<?xml version="1.0"?><!DOCTYPE svg SYSTEM "http://127.0.0.1:{listener_port}/d.dtd">{svg_open}</svg>', {200, 403}),
        ("billion-laughs.svg", f'<?xml version="1.0"?><!DOCTYPE svg [{lol}]>{svg_open}<text>&l9;</text></svg>', {403}),
        ("quadratic-blowup.svg", f'<?xml version="1.0"?><!DOCTYPE svg [{quadratic}]>{svg_open}<text>{"&q;" * 100}</text></svg>', {403}),
        ("parameter-entity.svg", f'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>{svg_open}</svg>', {403}),
        ("entity-loop.svg", f'<!DOCTYPE svg [<!ENTITY a "&b;"><!ENTITY b "&a;">]>{svg_open}<text>&a;</text></svg>', {403}),
        ("size-1e9.svg", '<svg xmlns="http://www.w3.org/2000/svg" width="1e9" height="1e9"><rect width="10" height="10"/></svg>', {403}),
        ("size-negative.svg", '<svg xmlns="http://www.w3.org/2000/svg" width="-10" height="0"/>', {403}),
        ("size-nan.svg", '<svg xmlns="http://www.w3.org/2000/svg" width="NaN" height="inf"/>', {200, 403}),
        ("pattern-bomb.svg", '<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"><pattern id="p" width="0.0001" height="0.0001" patternUnits="userSpaceOnUse"><pattern id="q" width="1e6" height="1e6"/><rect width="1e6" height="1e6"/></pattern><rect width="100" height="100" fill="url(#p)" transform="scale(1e5)"/></svg>', {200, 403}),
        ("filter-huge.svg", '<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"><filter id="f" x="-1e6" y="-1e6" width="2e6" height="2e6" filterUnits="userSpaceOnUse"><feGaussianBlur stdDeviation="1000"/></filter><rect width="100" height="100" filter="url(#f)"/></svg>', {200, 403}),
        ("deep-nesting.svg", svg_open + "<g>" * 20000 + "</g>" * 20000 + "</svg>", {403}),
        ("use-chain.svg", svg_open + '<defs><rect id="u0" width="5" height="5"/>' + "".join(
            f'<g id="u{i}"><use href="#u{i - 1}"/><use href="#u{i - 1}"/></g>' for i in range(1, 40)) + '</defs><use href="#u39"/></svg>', {200, 403}),
        ("not-utf8.svg", None, {403}),
        ("svgz.svg", None, {403}),
        ("over-1mib.svg", svg_open + "<!--" + "x" * (1 << 20) + "--></svg>", {403}),
    ]:
        if name == "not-utf8.svg":
            data = (svg_open + "<title>").encode() + b"\xff\xfe\xc0\xaf" + b"</title></svg>"
        elif name == "svgz.svg":
            data = gzip.compress(sources["svg"][1])
        else:
            data = text.encode()
        put("svg", name, data, expect)
        entries[-1].echoes_home = home.encode() in data
    # Asked for at a size over MaxSvgPix: a big intrinsic size, rendered at scale 1.
    put("svg", "big-at-scale-1.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="900000" height="900000"><rect width="10" height="10"/></svg>',
        {403}, query="scl=1&cache=off")
    return entries


def traversal_entries(home, secret_dir):
    """Symbolic links out of images/ (made here) and URL variants; all aim at the secret."""
    bad = os.path.join(home, "images", "bad")
    links = [
        ("link-file.png", "../../secret/secret.png"),
        ("link-abs.png", os.path.join(secret_dir, "secret.png")),
        ("link-text.png", os.path.join(secret_dir, "secret.txt")),
        ("link-dir", secret_dir),
        ("link-passwd.png", "/etc/passwd"),
        ("link-root", "/"),
        ("link-catalog", os.path.join(home, "catalog")),
        ("link-proc.png", "/proc/self/environ"),
        ("link-chain.png", "link-chain-2.png"),
        ("link-chain-2.png", "../../secret/secret.png"),
        ("link-loop-a.png", "link-loop-b.png"),
        ("link-loop-b.png", "link-loop-a.png"),
        ("link-dangling.png", "/nonexistent/secret.png"),
        ("link-inside.png", "../sample/logo.png"),
    ]
    for name, target in links:
        os.symlink(target, os.path.join(bad, name))
    os.mkfifo(os.path.join(bad, "fifo.png"))
    home_enc = secret_dir.replace("/", "%2f")
    t = []

    def url(name, target, expect, note=""):
        t.append(Entry("traversal", name, target, expect, note=note))

    def raw(name, line, expect):
        t.append(Entry("traversal", name, None, expect,
                       raw=line + b"\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"))

    for name, obj, expect in [
        ("link to a file (relative)", "bad/link-file.png", {403}),
        ("link to a file (absolute)", "bad/link-abs.png", {403}),
        ("link to a text file", "bad/link-text.png", {403}),
        ("link to a directory", "bad/link-dir/secret.png", {403}),
        ("link to /etc/passwd", "bad/link-passwd.png", {403}),
        ("link to /", "bad/link-root/etc/passwd", {403}),
        ("link to the catalogs", "bad/link-catalog/default.ini", {403}),
        ("link to /proc", "bad/link-proc.png", {403}),
        ("chain of links", "bad/link-chain.png", {403}),
        ("link loop", "bad/link-loop-a.png", {404}),
        ("dangling link", "bad/link-dangling.png", {404}),
        ("fifo", "bad/fifo.png", {404}),
        ("..", "../secret/secret.png", {403}),
        ("sample/../..", "sample/../../secret/secret.png", {403}),
        ("%2e%2e", "%2e%2e/secret/secret.png", {403}),
        ("%2E%2E", "%2E%2E/secret/secret.png", {403}),
        (".%2e", ".%2e/secret/secret.png", {403}),
        ("%2e.", "%2e./secret/secret.png", {403}),
        ("..%2f", "..%2fsecret%2fsecret.png", {403}),
        ("..%2F in a catalog path", "bad/..%2F..%2Fsecret%2Fsecret.png", {403}),
        ("%2e%2e%2f", "%2e%2e%2fsecret%2fsecret.png", {403}),
        ("double-encoded %252e%252e", "%252e%252e/secret/secret.png", {404}),
        ("double-encoded %252e%252e%252f", "%252e%252e%252fsecret%252fsecret.png", {404}),
        ("overlong UTF-8 %c0%ae", "%c0%ae%c0%ae/secret/secret.png", {403}),
        ("backslash %5c", "..%5csecret%5csecret.png", {403}),
        ("%2e%2e%5c", "%2e%2e%5csecret%5csecret.png", {403}),
        ("absolute //", "/" + secret_dir.lstrip("/") + "/secret.png", {403}),
        ("absolute %2f", home_enc + "%2fsecret.png", {403}),
        ("/etc/passwd", "/etc/passwd", {403}),
        ("%2fetc%2fpasswd", "%2fetc%2fpasswd", {403}),
        ("file: URL", "file:///etc/passwd", {403}),
        ("NUL %00", "sample/photo.jpg%00.png", {403}),
        ("NUL then ..", "%00/../secret/secret.png", {403}),
        ("control %0a", "sample%0a/photo", {403}),
        (". element", "./sample/photo", {403}),
        ("empty element", "sample//photo", {403}),
        ("bad percent", "%zz%2e/secret", {403}),
        ("~", "~/secret/secret.png", {404}),
    ]:
        url(name, f"/is/image/{obj}?cache=off", expect)
    for name, value in [
        ("defaultImage=..", "../secret/secret.png"),
        ("defaultImage=%2e%2e%2f", "%2e%2e%2fsecret%2fsecret.png"),
        ("defaultImage=/etc/passwd", "/etc/passwd"),
        ("defaultImage=backslash", "..%5csecret.png"),
    ]:
        url(name, f"/is/image/nothing/here?defaultImage={value}&cache=off", {403})
    url("defaultImage=link out", "/is/image/nothing/here?defaultImage=bad/link-file.png&cache=off", {403})
    raw("raw ..\\", b"GET /is/image/..\\secret\\secret.png HTTP/1.1", {400, 403})
    raw("raw NUL", b"GET /is/image/sample/photo\x00.jpg HTTP/1.1", {400})
    raw("raw /is/../", b"GET /is/../is/image/../secret/secret.png HTTP/1.1", {403, 404})
    raw("raw absolute-form", b"GET http://127.0.0.1/is/image/../secret/secret.png HTTP/1.1", {400, 403})
    raw("raw tab", b"GET /is/image/sample/\tphoto HTTP/1.1", {400, 403, 404})
    raw("raw UTF-8 ..", "GET /is/image/\u2025/secret/secret.png HTTP/1.1".encode(), {400, 403, 404})
    for e in t:
        e.echoes_home = home in (e.path or "") or home.encode() in (e.raw or b"")
    url("control: link inside the root", "/is/image/bad/link-inside.png?wid=50&cache=off", {200})
    return t


# =========================================================================== random flips

def flipped(data, rng):
    b = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 4, 8, 32])):
        # Half of the flips in the first 200 bytes, where the headers are.
        pos = rng.randrange(len(b)) if rng.random() < 0.5 else rng.randrange(min(len(b), 200))
        mode = rng.random()
        if mode < 0.6:
            b[pos] ^= 1 << rng.randrange(8)
        elif mode < 0.8:
            b[pos] = rng.choice([0, 0xFF, 0x7F, 0x80])
        else:
            b[pos] = rng.randrange(256)
    return bytes(b)


# =========================================================================== HTTP

def send(port, entry, timeout=REQUEST_TIMEOUT):
    """(kind, body, headers, seconds): kind is the status as a string, or reset/timeout/refused."""
    t0 = time.monotonic()
    try:
        if entry.raw is not None:
            s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            try:
                s.sendall(entry.raw)
                buf = bytearray()
                while True:
                    piece = s.recv(65536)
                    if not piece:
                        break
                    buf += piece
            finally:
                s.close()
            head, _, body = bytes(buf).partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            if not lines or len(lines[0].split()) < 2:
                return "reset", b"", {}, time.monotonic() - t0
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(b":")
                headers[k.strip().lower().decode(errors="replace")] = v.strip().decode(errors="replace")
            return lines[0].split()[1].decode(), body, headers, time.monotonic() - t0
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            c.request("GET", entry.path)
            r = c.getresponse()
            body = r.read()
            headers = {k.lower(): v for k, v in r.getheaders()}
            return str(r.status), body, headers, time.monotonic() - t0
        finally:
            c.close()
    except ConnectionRefusedError:
        return "refused", b"", {}, time.monotonic() - t0
    except (ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError, http.client.IncompleteRead):
        return "reset", b"", {}, time.monotonic() - t0
    except socket.timeout:
        return "timeout", b"", {}, time.monotonic() - t0
    except OSError as e:
        return f"error {e.__class__.__name__}", b"", {}, time.monotonic() - t0


def counting_listener():
    """A TCP listener that counts connections (no SVG may make the stack connect to it)."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    hits = []
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            try:
                c, addr = srv.accept()
                hits.append(addr)
                c.close()
            except socket.timeout:
                continue
            except OSError:
                break
    th = threading.Thread(target=loop, daemon=True)
    th.start()
    return srv.getsockname()[1], hits, stop, srv


def proc_status(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


# =========================================================================== the scenario

def image_inputs(quick, keep):
    r = Result("Image inputs", 7)
    duration = 15 if quick else 60
    ps_port, is_port, svg_port = free_ports(3)
    home = Home(stack_config(ps_port, is_port, svg_port), keep)
    stop = threading.Event()
    listener_port, listener_hits, listener_stop, listener_sock = counting_listener()
    failed = True
    try:
        # A catalog with ErrorDetail=1 for images/bad/ (objects `bad/...`), so that messages say why.
        os.makedirs(os.path.join(home.path, "catalog"), exist_ok=True)
        with open(os.path.join(home.path, "catalog", "bad.ini"), "w") as f:
            f.write("ErrorDetail=1\n")
        # The secret, outside images/.
        secret_dir = os.path.join(home.path, "secret")
        os.makedirs(secret_dir)
        marker = f"SECRET-{random.getrandbits(64):016x}".encode()
        with open(os.path.join(secret_dir, "secret.txt"), "wb") as f:
            f.write(marker + b"\n")
        secret_png = png(16, 16, 0, zlib.compress(b"".join(b"\0" + bytes([0x5A]) * 16 for _ in range(16)))
                         , extra=chunk(b"tEXt", b"Comment\0" + marker))
        with open(os.path.join(secret_dir, "secret.png"), "wb") as f:
            f.write(secret_png)

        rc, out, err = home.cli("start", timeout=60)
        if rc != 0:
            raise RuntimeError(f"start exited {rc}: {out}{err}")
        _, ans, e = timed_status(home.sock)
        if not ans:
            raise RuntimeError(f"no status after start: {e}")
        pids0 = {n: c["pid"] for n, c in components(ans).items()}
        is_pid = pids0["is"]
        rss_before = proc_status(is_pid, "VmRSS")

        seed = int(time.time())
        rng = random.Random(seed)
        t_build = time.monotonic()
        sources = valid_sources(home.path, ps_port)
        corpus = build_corpus(home.path, sources, listener_port, os.path.join(secret_dir, "secret.png"), rng)
        corpus += traversal_entries(home.path, secret_dir)
        build_s = time.monotonic() - t_build
        flip_sources = [(n, ext, data) for n, (ext, data) in sources.items() if n != "photo-jpeg"]
        crashers = os.path.join(home.path, "crashers")

        # Every answer, by class.
        sent = {}
        answers = {}          # class -> {kind: count}
        unexpected = []       # (class, name, kind, body head)
        unclear = []          # error answers without a clear one-line message
        leaks = []            # bodies with the secret or /etc/passwd in them
        fivexx = []           # (class, name, kind, body head)
        broken = []           # resets, timeouts, refused
        slow = []             # (seconds, class, name)
        lat_by_class = {}

        dump = os.environ.get("IMAGE_INPUTS_DUMP")
        dumped = set()

        def record(entry, kind, body, headers, dt):
            k = entry.klass
            if dump and entry.name not in dumped and not entry.name.startswith("flip of"):
                dumped.add(entry.name)
                with open(dump, "a") as f:
                    text = body[:200].decode(errors="replace") if not kind == "200" else f"{len(body)} bytes"
                    f.write(f"{k}\t{entry.name}\t{kind}\t{dt * 1000:.1f} ms\t{text.strip()}\n")
            sent[k] = sent.get(k, 0) + 1
            answers.setdefault(k, {})
            answers[k][kind] = answers[k].get(kind, 0) + 1
            lat_by_class.setdefault(k, []).append(dt)
            head = body[:160].decode(errors="replace")
            if (marker in body or b"root:x:0:0" in body
                    or (home.path.encode() in body and not entry.echoes_home)):
                leaks.append((k, entry.name, kind, head))
            if not kind.isdigit():
                broken.append((k, entry.name, kind, round(dt, 2)))
            elif kind.startswith("5"):
                fivexx.append((k, entry.name, kind, head))
            if kind.isdigit() and int(kind) not in entry.expect:
                unexpected.append((k, entry.name, kind, head))
            if kind.isdigit() and kind.startswith("4"):
                # hyper answers a malformed request head itself, without a body.
                ok = (b"\n" not in body.rstrip(b"\n") and len(body) < 400
                      and headers.get("content-type", "").startswith("text/plain") and body.strip())
                if not ok and not (entry.raw is not None and kind == "400"):
                    unclear.append((k, entry.name, kind, head))
            if dt > 5:
                slow.append((round(dt, 2), k, entry.name))
            if not kind.isdigit() or kind.startswith("5"):
                # Keep the input that did it.
                if entry.path and entry.path.startswith("/is/image/bad/"):
                    name = entry.path[len("/is/image/bad/"):].split("?")[0]
                    src = os.path.join(home.path, "images", "bad", name)
                    if os.path.isfile(src):
                        os.makedirs(crashers, exist_ok=True)
                        shutil.copy(src, os.path.join(crashers, f"{len(os.listdir(crashers))}-{name}"))

        valid = []  # (kind, seconds)

        def valid_client():
            e = Entry("valid", "valid", VALID_PATH, {200})
            while not stop.is_set():
                t0 = time.monotonic()
                kind, _, _, dt = send(ps_port, e, timeout=10)
                valid.append((kind, dt))
                stop.wait(max(0.0, 0.1 - (time.monotonic() - t0)))

        rss_samples = []

        def rss_sampler():
            while not stop.is_set():
                v = proc_status(is_pid, "VmRSS")
                if v is not None:
                    rss_samples.append(v)
                stop.wait(0.05)

        threads = [threading.Thread(target=valid_client, daemon=True),
                   threading.Thread(target=rss_sampler, daemon=True)]
        for t in threads:
            t.start()

        order = list(corpus)
        rng.shuffle(order)
        i = 0
        flips = 0
        flip_dir = os.path.join(home.path, "images", "bad", "flip")
        os.makedirs(flip_dir)
        t_end = time.monotonic() + duration
        while time.monotonic() < t_end:
            if i % 2 == 1:
                name, ext, data = rng.choice(flip_sources)
                fname = f"{name}-{flips % 64}.{ext}"
                with open(os.path.join(flip_dir, fname), "wb") as f:
                    f.write(flipped(data, rng))
                flips += 1
                entry = Entry("corrupt", f"flip of {name}", f"/is/image/bad/flip/{fname}?wid=100&cache=off", {200, 403})
            else:
                entry = order[(i // 2) % len(order)]
            kind, body, headers, dt = send(ps_port, entry)
            record(entry, kind, body, headers, dt)
            i += 1
        stop.set()
        for t in threads:
            t.join(15)
        corpus_passes = (i // 2) / len(order)

        # Restarts: none expected. Wait a moment for a restart in progress to show.
        time.sleep(1.5)
        _, final, e = timed_status(home.sock)
        restarts = {n: c["restarts"] for n, c in components(final).items()} if final else {}
        pids1 = {n: c["pid"] for n, c in components(final).items()} if final else {}
        states = {n: c["state"] for n, c in components(final).items()} if final else {}
        is_hwm = proc_status(is_pid, "VmHWM") if pids1.get("is") == is_pid else None
        peak_sampled = max(rss_samples) if rss_samples else None
        listener_stop.set()

        workers = os.cpu_count() or 1
        bound_kib = (workers * (DECODER_BUDGET + RESAMPLE_COPY) + KEPT_FREE) // 1024 + (rss_before or 0)

        # ---- the report
        valid_ok = [dt for k, dt in valid if k == "200"]
        valid_kinds = {}
        for k, _ in valid:
            valid_kinds[k] = valid_kinds.get(k, 0) + 1
        total = sum(sent.values())
        by_class = ", ".join(f"{k} {sent[k]}" for k in ("truncated", "corrupt", "bomb", "svg", "traversal") if k in sent)
        static_counts = {}
        for e_ in corpus:
            static_counts[e_.klass] = static_counts.get(e_.klass, 0) + 1

        r.load = (f"{duration} s: {total:,} hostile requests ({by_class}) from one client, "
                  f"and a valid request every 100 ms ({len(valid)} sent)")
        r.faults = (f"{len(corpus)} distinct bad inputs ({', '.join(f'{k} {v}' for k, v in static_counts.items())}) "
                    f"+ {flips:,} random flips of {len(flip_sources)} valid sources")
        r.add("duration / corpus build", f"{duration} s / {build_s:.1f} s")
        r.add("random seed", seed)
        r.add("distinct inputs in the corpus", ", ".join(f"{k} {v}" for k, v in static_counts.items()))
        r.add("corpus passes / random flips sent", f"{corpus_passes:.1f} / {flips:,}")
        for k in ("truncated", "corrupt", "bomb", "svg", "traversal"):
            if k in answers:
                lat = lat_by_class.get(k, [])
                r.add(f"{k}: answers", ", ".join(f"{s}: {n:,}" for s, n in sorted(answers[k].items())) +
                      f" (p50 {ms(pct(lat, 50))}, p99 {ms(pct(lat, 99))}, max {ms(max(lat) if lat else None)})")
        r.add("answers other than the expected status", len(unexpected), "0")
        if unexpected:
            r.add("unexpected answers (distinct, first 12)",
                  "; ".join(sorted({f"{k} {n}: {s}" for k, n, s, _ in unexpected})[:12]))
        r.add("error answers without a one-line text message", len(unclear), "0")
        r.add("5xx answers", len(fivexx), "0 (no input crashes or hangs a server)")
        r.add("resets / timeouts / refused", len(broken), "0")
        r.add("answers slower than 5 s", len(slow))
        r.add("connections to our listener from SVG references", len(listener_hits), "0")
        r.add("bodies holding the secret, /etc/passwd or the home path", len(leaks), "0")
        r.add("restarts (ps, is, svg)", ", ".join(f"{n} {restarts.get(n)}" for n in ("ps", "is", "svg")), "0 each")
        r.add("pids unchanged", "yes" if pids1 == pids0 else f"no: {pids0} -> {pids1}", "yes")
        r.add("valid requests: sent / 200", f"{len(valid)} / {len(valid_ok)} "
              f"({100.0 * len(valid_ok) / len(valid) if valid else 0:.1f} %)", "100 %")
        if set(valid_kinds) - {"200"}:
            r.add("valid requests: other answers", ", ".join(f"{k}: {v}" for k, v in sorted(valid_kinds.items())))
        r.add("valid requests: latency p50 / p99 / max",
              f"{ms(pct(valid_ok, 50))} / {ms(pct(valid_ok, 99))} / {ms(max(valid_ok) if valid_ok else None)}")
        r.add("is VmRSS before / peak (VmHWM) / peak sampled every 50 ms",
              f"{rss_before:,} / {is_hwm:,} / {peak_sampled:,} KiB" if is_hwm and rss_before and peak_sampled else
              f"{rss_before} / {is_hwm} / {peak_sampled} KiB",
              f"≤ {bound_kib:,} KiB")
        r.add("memory bound from the code",
              f"{workers} workers × (decoder budget {DECODER_BUDGET >> 20} MiB + premultiplied copy "
              f"{RESAMPLE_COPY >> 20} MiB, for MaxSourcePix {MAX_SOURCE_PIX:,}) + {KEPT_FREE >> 20} MiB kept free + RSS before")

        if unexpected:
            r.fail(f"{len(unexpected)} answers other than expected, e.g. {unexpected[:4]}")
        if unclear:
            r.fail(f"{len(unclear)} error answers without a clear message, e.g. {unclear[:3]}")
        if fivexx:
            r.fail(f"{len(fivexx)} 5xx answers, e.g. {fivexx[:3]}")
        if broken:
            r.fail(f"{len(broken)} resets/timeouts, e.g. {broken[:3]}")
        if listener_hits:
            r.fail(f"{len(listener_hits)} connections to our listener from SVG references")
        if leaks:
            r.fail(f"{len(leaks)} bodies with the secret, /etc/passwd or the home path: {leaks[:3]}")
        if any(v for v in restarts.values()) or pids1 != pids0:
            r.fail(f"restarts {restarts}, pids {pids0} -> {pids1}, states {states}")
        if len(valid_ok) != len(valid):
            r.fail(f"valid requests: {len(valid) - len(valid_ok)} of {len(valid)} failed ({valid_kinds})")
        if is_hwm and is_hwm > bound_kib:
            r.fail(f"is peak RSS {is_hwm} KiB over the bound {bound_kib} KiB")
        lost = []
        if len(valid_ok) != len(valid):
            lost.append(f"{len(valid) - len(valid_ok)} valid requests")
        if leaks:
            lost.append("the secret leaked")
        r.lost = "nothing" if not lost else "; ".join(lost)
        failed = bool(r.failures)
    finally:
        stop.set()
        listener_stop.set()
        listener_sock.close()
        home.close(failed)
    return r


if __name__ == "__main__":
    import sys
    res = image_inputs("--quick" in sys.argv, "--keep" in sys.argv)
    print(res.table())
    sys.exit(1 if res.failures else 0)
