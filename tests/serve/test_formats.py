"""What an upload is, read before any decoder sees it: the accepted formats and their sizes as Pillow
reads them, everything else refused by name, and the structures that drive a decoder's cost capped."""

import io
import struct

import pytest
from PIL import Image, PngImagePlugin

from latentad.errors import DataError
from latentad.serve.formats import MAX_JPEG_SCANS, MAX_PNG_TEXT, MAX_TIFF_ELEMENTS, check_size, sniff


def encoded(fmt: str, size=(37, 23), mode="RGB", **options) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 90).save(buf, fmt, **options)
    return buf.getvalue()


@pytest.mark.parametrize("fmt, options", [("PNG", {}), ("JPEG", {}), ("JPEG", {"progressive": True}), ("BMP", {}),
                                          ("TIFF", {}), ("TIFF", {"compression": "tiff_lzw"}),
                                          ("WEBP", {"lossless": True}), ("WEBP", {"quality": 80})])
def test_accepted_formats_and_their_size_as_pillow_reads_it(fmt, options):
    data = encoded(fmt, **options)
    header = sniff("a", data)
    with Image.open(io.BytesIO(data)) as img:
        assert (header.format, header.width, header.height) == (img.format, *img.size)


@pytest.mark.parametrize("fmt", ["GIF", "EPS", "PDF", "ICO", "TGA", "PPM"])
def test_other_formats_are_refused_by_name_before_decoding(fmt):
    data = encoded(fmt, size=(16, 16))
    with pytest.raises(DataError, match=r"^x\.img: not an accepted image format \(accepted: PNG, JPEG"):
        sniff("x.img", data)


def test_a_bigtiff_and_a_size_over_the_pixel_limit_are_refused():
    with pytest.raises(DataError, match="BigTIFF"):
        sniff("b.tif", b"II+\x00" + bytes(12))
    with pytest.raises(DataError, match=r"b\.png: refused, 37x23 pixels is over the limit of 100 \(a decompression"):
        check_size("b.png", sniff("b.png", encoded("PNG")), 100)


def tiff_declaring(strips: int) -> bytes:
    """A TIFF header whose directory declares `strips` strips (the arrays themselves absent)."""
    entries = [(256, 4, 1, 1), (257, 4, 1, strips), (273, 4, strips, 64), (279, 4, strips, 64)]
    out = b"II*\x00" + struct.pack("<IH", 8, len(entries))
    return out + b"".join(struct.pack("<HHII", *e) for e in entries) + bytes(4)


def test_tiff_strips_over_the_cap_are_refused_from_the_directory_alone():
    assert sniff("ok.tif", tiff_declaring(1000)).height == 1000
    with pytest.raises(DataError, match=f"s.tif: refused, a TIFF with 4000000 strips \\(more than {MAX_TIFF_ELEMENTS}"):
        sniff("s.tif", tiff_declaring(4_000_000))


def test_jpeg_scans_over_the_cap_are_refused():
    data = encoded("JPEG", size=(64, 64), progressive=True)
    last = data.rindex(b"\xff\xda")
    bomb = data[:last] + data[last:-2] * (MAX_JPEG_SCANS + 1) + b"\xff\xd9"
    with pytest.raises(DataError, match=r"bomb.jpg: refused, a JPEG with \d+ scans"):
        sniff("bomb.jpg", bomb)


def test_png_text_chunks_over_the_cap_are_refused():
    info = PngImagePlugin.PngInfo()
    for k in range(MAX_PNG_TEXT + 1):
        info.add_text(f"k{k}", "v")
    with pytest.raises(DataError, match=f"t.png: refused, a PNG with more than {MAX_PNG_TEXT} text chunks"):
        sniff("t.png", encoded("PNG", pnginfo=info))
