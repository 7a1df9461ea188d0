"""What an upload is, read from its bytes before any decoder sees it.

Only PNG, JPEG, BMP, TIFF and WebP are accepted: formats whose Pillow plug-ins decode in-process
(never EPS, PDF or anything that shells out). Each header is parsed here, in a few microseconds of
Python that allocates nothing per declared element, and the structures whose count drives a
decoder's cost are capped before Pillow parses them: TIFF strips, tiles and tag arrays (Pillow reads
every tag value into Python objects on open), JPEG scans (each progressive scan is a pass over the
whole image) and PNG chunks and text chunks. The size read here is checked against the pixel limits,
so an image over them is refused without opening it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from latentad.errors import DataError

FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP")
MAX_JPEG_SCANS = 50  # a progressive JPEG has about ten; each one is a pass over every block
MAX_PNG_CHUNKS = 65_536
MAX_PNG_TEXT = 64  # text chunks (tEXt, zTXt, iTXt)
MAX_TIFF_ENTRIES = 512  # tags in the first directory
MAX_TIFF_ELEMENTS = 100_000  # values of one numeric tag (strip / tile offsets among them)
MAX_TIFF_BLOB = 8 << 20  # bytes of one byte-typed tag (ICC profile, XMP)
TIFF_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}
TIFF_BLOBS = (1, 2, 6, 7)  # BYTE, ASCII, SBYTE, UNDEFINED: kept as bytes, not as one object per value


@dataclass(frozen=True)
class Header:
    format: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def sniff(name: str, data: bytes) -> Header:
    """The upload's format and size from its header, its costly structures within their caps;
    anything else is one DataError line starting with `name`."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png(name, data)
    if data.startswith(b"\xff\xd8\xff"):
        return _jpeg(name, data)
    if data.startswith(b"BM"):
        return _bmp(name, data)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff(name, data)
    if data[:4] in (b"II+\x00", b"MM\x00+"):
        raise DataError(f"{name}: BigTIFF is not accepted (accepted: {', '.join(FORMATS)})")
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(name, data)
    raise DataError(f"{name}: not an accepted image format (accepted: {', '.join(FORMATS)})")


def truncated(name: str, fmt: str) -> DataError:
    return DataError(f"{name}: corrupt or truncated image ({fmt} header cut short)")


def check_size(name: str, header: Header, max_pixels: int) -> int:
    """The header's pixel count; over `max_pixels` refused as pixel decoding would refuse it."""
    if header.width <= 0 or header.height <= 0:
        raise DataError(f"{name}: corrupt image ({header.format} declares {header.width}x{header.height} pixels)")
    if header.pixels > max_pixels:
        raise DataError(f"{name}: refused, {header.width}x{header.height} pixels is over the limit of {max_pixels} "
                        "(a decompression bomb?)")
    return header.pixels


def _png(name: str, data: bytes) -> Header:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise truncated(name, "PNG")
    width, height = struct.unpack(">II", data[16:24])
    pos, chunks, texts = 8, 0, 0
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunks += 1
        texts += kind in (b"tEXt", b"zTXt", b"iTXt")
        if chunks > MAX_PNG_CHUNKS or texts > MAX_PNG_TEXT:
            what = "text chunks" if texts > MAX_PNG_TEXT else "chunks"
            cap = MAX_PNG_TEXT if texts > MAX_PNG_TEXT else MAX_PNG_CHUNKS
            raise DataError(f"{name}: refused, a PNG with more than {cap} {what}")
        if kind == b"IEND":
            break
        pos += 12 + length
    return Header("PNG", width, height)


def _jpeg(name: str, data: bytes) -> Header:
    scans = data.count(b"\xff\xda")  # entropy-coded data cannot hold it: an upper bound on the scans
    if scans > MAX_JPEG_SCANS:
        raise DataError(f"{name}: refused, a JPEG with {scans} scans (more than {MAX_JPEG_SCANS})")
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise DataError(f"{name}: corrupt JPEG (no marker at byte {pos})")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return Header("JPEG", width, height)
        if marker == 0xDA:
            raise DataError(f"{name}: corrupt JPEG (a scan before the frame header)")
        pos += 2 + length
    raise truncated(name, "JPEG")


def _bmp(name: str, data: bytes) -> Header:
    if len(data) < 26:
        raise truncated(name, "BMP")
    (size,) = struct.unpack("<I", data[14:18])
    if size == 12:
        width, height = struct.unpack("<HH", data[18:22])
    else:
        width, height = struct.unpack("<ii", data[18:26])
    return Header("BMP", width, abs(height))


def _tiff(name: str, data: bytes) -> Header:
    end = "<" if data[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack(end + "I", data[4:8])
        (n,) = struct.unpack(end + "H", data[ifd:ifd + 2])
    except struct.error:
        raise truncated(name, "TIFF") from None
    if n > MAX_TIFF_ENTRIES:
        raise DataError(f"{name}: refused, a TIFF directory of {n} tags (more than {MAX_TIFF_ENTRIES})")
    if ifd + 2 + 12 * n > len(data):
        raise truncated(name, "TIFF")
    values = {}
    for k in range(n):
        at = ifd + 2 + 12 * k
        tag, kind, count = struct.unpack(end + "HHI", data[at:at + 8])
        _check_tag(name, tag, kind, count)
        if tag in (256, 257):  # ImageWidth, ImageLength: one SHORT or LONG, inline
            fmt = end + ("H" if kind == 3 else "I")
            values[tag] = struct.unpack(fmt, data[at + 8:at + 8 + struct.calcsize(fmt)])[0]
    if 256 not in values or 257 not in values:
        raise DataError(f"{name}: corrupt TIFF (no image width or height)")
    return Header("TIFF", values[256], values[257])


def _check_tag(name: str, tag: int, kind: int, count: int) -> None:
    if kind in TIFF_BLOBS:
        if count > MAX_TIFF_BLOB:
            raise DataError(f"{name}: refused, TIFF tag {tag} holds {count} bytes (more than {MAX_TIFF_BLOB})")
    elif count > MAX_TIFF_ELEMENTS:
        what = {273: "strips", 279: "strips", 324: "tiles", 325: "tiles"}.get(tag, f"values in tag {tag}")
        raise DataError(f"{name}: refused, a TIFF with {count} {what} (more than {MAX_TIFF_ELEMENTS})")


def _webp(name: str, data: bytes) -> Header:
    kind = data[12:16]
    if kind == b"VP8X" and len(data) >= 30:
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
    elif kind == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        width, height = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    elif kind == b"VP8 " and len(data) >= 30:
        width, height = (v & 0x3FFF for v in struct.unpack("<HH", data[26:30]))
    else:
        raise truncated(name, "WebP")
    return Header("WEBP", width, height)
