"""fpd.pngchart: the PNGs it writes decode (zlib + struct here, no image library) to the
pixels that were drawn."""

from __future__ import annotations

import struct
import zlib

import pytest

from fpd import pngchart
from fpd.pngchart import PALETTE, REF, Canvas, bar_chart, write_png

SIG = b"\x89PNG\r\n\x1a\n"


def decode(png: bytes):
    """(width, height, rows of RGB tuples) of an 8-bit RGB, non-interlaced PNG; checks
    the signature, every chunk's CRC, the chunk order and the filter bytes."""
    assert png[:8] == SIG
    pos, chunks = 8, []
    while pos < len(png):
        (n,) = struct.unpack(">I", png[pos:pos + 4])
        kind = png[pos + 4:pos + 8]
        data = png[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", png[pos + 8 + n:pos + 12 + n])
        assert crc == zlib.crc32(kind + data) & 0xFFFFFFFF, f"bad CRC in {kind}"
        chunks.append((kind, data))
        pos += 12 + n
    assert pos == len(png)
    kinds = [k for k, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    w, h, depth, ctype, comp, filt, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, ctype, comp, filt, interlace) == (8, 2, 0, 0, 0)
    raw = zlib.decompress(b"".join(d for k, d in chunks if k == b"IDAT"))
    stride = w * 3
    assert len(raw) == h * (stride + 1)
    rows = []
    for y in range(h):
        line = raw[y * (stride + 1):(y + 1) * (stride + 1)]
        assert line[0] == 0, "filter type None expected"
        px = line[1:]
        rows.append([tuple(px[i:i + 3]) for i in range(0, stride, 3)])
    return w, h, rows


def test_write_png_roundtrip():
    w, h = 7, 3
    rgb = bytearray()
    for y in range(h):
        for x in range(w):
            rgb += bytes((x * 30, y * 80, 200))
    W, H, rows = decode(write_png(w, h, rgb))
    assert (W, H) == (w, h)
    for y in range(h):
        for x in range(w):
            assert rows[y][x] == (x * 30, y * 80, 200)


def test_write_png_rejects_wrong_size():
    with pytest.raises(ValueError):
        write_png(2, 2, b"\0" * 11)


def test_canvas_rect_and_clipping():
    c = Canvas(10, 5, bg=(1, 2, 3))
    c.rect(2, 1, 4, 3, (255, 0, 0))
    c.rect(8, 3, 50, 50, (0, 255, 0))          # clipped at the edges
    c.rect(-5, -5, 1, 1, (0, 0, 255))
    w, h, rows = decode(c.png())
    assert (w, h) == (10, 5)
    assert rows[1][2] == rows[2][3] == (255, 0, 0)
    assert rows[1][4] == rows[3][2] == (1, 2, 3)
    assert rows[4][9] == rows[3][8] == (0, 255, 0)
    assert rows[0][0] == (0, 0, 255) and rows[0][1] == (1, 2, 3)


def test_text_draws_the_glyphs():
    c = Canvas(40, 10)
    end = c.text(1, 1, "1I", (0, 0, 0))
    assert end == 1 + 2 * (pngchart.GLYPH_W + 1)
    _, _, rows = decode(c.png())
    for glyph_x, ch in ((1, "1"), (7, "I")):
        for r, cols in enumerate(pngchart.glyph(ch)):
            for col in range(pngchart.GLYPH_W):
                ink = rows[1 + r][glyph_x + col] == (0, 0, 0)
                assert ink == (col in cols), (ch, r, col)
    # lower case is drawn as upper case; unknown characters as a box
    assert pngchart.glyph("a") == pngchart.glyph("A")
    assert pngchart.glyph("\u00e9") == pngchart._BOX_GLYPH


def test_every_glyph_is_5x7():
    for ch, g in pngchart.FONT.items():
        assert len(g) == 7, ch
        assert all(0 <= c < 5 for row in g for c in row), ch


def _runs(row, color):
    """(start, length) of the runs of ``color`` in a row of pixels."""
    out, start = [], None
    for x, p in enumerate(row + [None]):
        if p == color and start is None:
            start = x
        elif p != color and start is not None:
            out.append((start, x - start))
            start = None
    return out


def test_bar_chart_lengths_and_reference_line():
    png = bar_chart([("HALF", [0.5, 1.5]), ("ONE", [1.0, None])], ["A", "B"],
                    title="T", xmax=2.0, width=600)
    w, h, rows = decode(png)
    assert w == 600 and h > 60
    blue, orange = PALETTE[0], PALETTE[1]
    # a bar = a row whose pixels of that colour span more than 30 px (the legend's
    # swatch is short; the red line may cross a bar, so take first..last)
    bars = {}
    for y, row in enumerate(rows):
        for color in (blue, orange):
            xs = [x for x, p in enumerate(row) if p == color]
            if xs and xs[-1] - xs[0] + 1 > 30:
                bars.setdefault(color, []).append((y, xs[0], xs[-1] - xs[0] + 1))
    blue_lengths = sorted({n for _, _, n in bars[blue]})
    assert len(blue_lengths) == 2, blue_lengths            # 0.5 and 1.0
    a, b = blue_lengths
    assert abs(b / a - 2.0) < 0.05
    (x0,) = {s for _, s, _ in bars[blue]}                  # bars start at the axis
    orange_lengths = {n for _, _, n in bars[orange]}
    assert len(orange_lengths) == 1
    assert abs(orange_lengths.pop() / a - 3.0) < 0.05      # 1.5 vs 0.5
    # the red line at 1.0 = the end of the 1.0 bar
    red_cols = {x for row in rows for x, p in enumerate(row) if p == REF}
    ref_x = x0 + b
    assert any(abs(x - ref_x) <= 2 for x in red_cols)
    # a missing value is written "N/A", not drawn
    assert len({y for y, _, _ in bars[orange]}) < len({y for y, _, _ in bars[blue]})


def test_bar_chart_cuts_long_bars_and_handles_no_rows():
    png = bar_chart([("BIG", [10.0])], ["A"], xmax=2.0, width=400)
    w, _, rows = decode(png)
    longest = max((n for row in rows for _, n in _runs(row, PALETTE[0])), default=0)
    assert longest < w
    w, h, _ = decode(bar_chart([], ["A"]))
    assert w > 0 and h > 0


def test_bar_chart_log_scale_bars_start_at_the_reference():
    png = bar_chart([("HALF", [0.5]), ("TWICE", [2.0]), ("TENTH", [0.1])], ["A"],
                    log=True, width=800, notes=["NOTE"])
    w, h, rows = decode(png)
    assert w == 800
    blue = PALETTE[0]
    spans = []
    for y, row in enumerate(rows):
        xs = [x for x, p in enumerate(row) if p == blue]
        if xs and xs[-1] - xs[0] + 1 > 20:
            spans.append((xs[0], xs[-1]))
    spans = sorted(set(spans), key=lambda s: s[0])
    assert len(spans) == 3, spans
    tenth, half, twice = spans            # leftmost start first
    red_cols = sorted({x for row in rows for x, p in enumerate(row) if p == REF})
    # 0.5 and 0.1 end at the red line, 2 starts there
    ref_x = twice[0]
    assert abs(half[1] + 1 - ref_x) <= 3 and abs(tenth[1] + 1 - ref_x) <= 3
    assert any(abs(x - ref_x) <= 2 for x in red_cols)
    # log scale: 0.5 and 2 are equally long; 0.1 is log(10)/log(2) times longer
    len_half, len_twice, len_tenth = (half[1] - half[0], twice[1] - twice[0],
                                      tenth[1] - tenth[0])
    assert abs(len_half - len_twice) <= 2
    assert abs(len_tenth - 3.3219 * len_half) <= 12      # pixel rounding, the red line


def test_line_chart_draws_each_panel_in_its_colour():
    flat = [(t, 5.0) for t in range(10)]
    ramp = [(t, float(t)) for t in range(10)]
    png = pngchart.line_chart([("FLAT", flat), ("RAMP", ramp)], title="T", xlabel="S",
                              width=400, panel_h=60)
    w, h, rows = decode(png)
    assert w == 400
    blue, orange = PALETTE[0], PALETTE[1]
    ys_blue = [y for y, row in enumerate(rows) if blue in row[100:300]]
    ys_orange = [y for y, row in enumerate(rows) if orange in row[100:300]]
    assert ys_blue and ys_orange
    # a flat series is a horizontal line (a few rows thick); a ramp spans its panel
    assert max(ys_blue) - min(ys_blue) <= 3
    assert max(ys_orange) - min(ys_orange) > 30
    assert min(ys_orange) > max(ys_blue)              # panels are stacked, in order
