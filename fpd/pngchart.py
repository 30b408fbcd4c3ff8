"""A tiny dependency-free PNG writer and horizontal bar chart (zlib + struct only).

    from fpd.pngchart import Canvas, bar_chart, line_chart, write_png
    png = bar_chart([("BULK UP", [0.4, 0.9]), ("RR 1B", [1.2, 1.1])],
                    series=["FPD/KERNEL", "FPD/KERNEL+XDP"], title="FPD VS KERNEL")
    open("chart.png", "wb").write(png)

Text uses a built-in 5x7 bitmap font (upper case, digits and a little punctuation;
lower case is drawn as upper case, unknown characters as a box).
"""

from __future__ import annotations

import struct
import zlib

# --- the font: 5 columns x 7 rows, '#' = ink ---------------------------------------------
_FONT_SRC = {
    "A": ".###. #...# #...# ##### #...# #...# #...#",
    "B": "####. #...# #...# ####. #...# #...# ####.",
    "C": ".###. #...# #.... #.... #.... #...# .###.",
    "D": "####. #...# #...# #...# #...# #...# ####.",
    "E": "##### #.... #.... ####. #.... #.... #####",
    "F": "##### #.... #.... ####. #.... #.... #....",
    "G": ".###. #...# #.... #.### #...# #...# .####",
    "H": "#...# #...# #...# ##### #...# #...# #...#",
    "I": ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
    "J": "..### ...#. ...#. ...#. ...#. #..#. .##..",
    "K": "#...# #..#. #.#.. ##... #.#.. #..#. #...#",
    "L": "#.... #.... #.... #.... #.... #.... #####",
    "M": "#...# ##.## #.#.# #.#.# #...# #...# #...#",
    "N": "#...# #...# ##..# #.#.# #..## #...# #...#",
    "O": ".###. #...# #...# #...# #...# #...# .###.",
    "P": "####. #...# #...# ####. #.... #.... #....",
    "Q": ".###. #...# #...# #...# #.#.# #..#. .##.#",
    "R": "####. #...# #...# ####. #.#.. #..#. #...#",
    "S": ".#### #.... #.... .###. ....# ....# ####.",
    "T": "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
    "U": "#...# #...# #...# #...# #...# #...# .###.",
    "V": "#...# #...# #...# #...# #...# .#.#. ..#..",
    "W": "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.",
    "X": "#...# #...# .#.#. ..#.. .#.#. #...# #...#",
    "Y": "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..",
    "Z": "##### ....# ...#. ..#.. .#... #.... #####",
    "0": ".###. #...# #..## #.#.# ##..# #...# .###.",
    "1": "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",
    "2": ".###. #...# ....# ...#. ..#.. .#... #####",
    "3": "####. ....# ....# .###. ....# ....# ####.",
    "4": "...#. ..##. .#.#. #..#. ##### ...#. ...#.",
    "5": "##### #.... ####. ....# ....# #...# .###.",
    "6": "..##. .#... #.... ####. #...# #...# .###.",
    "7": "##### ....# ...#. ..#.. .#... .#... .#...",
    "8": ".###. #...# #...# .###. #...# #...# .###.",
    "9": ".###. #...# #...# .#### ....# ...#. .##..",
    " ": "..... ..... ..... ..... ..... ..... .....",
    ".": "..... ..... ..... ..... ..... .##.. .##..",
    ",": "..... ..... ..... ..... .##.. ..#.. .#...",
    ":": "..... .##.. .##.. ..... .##.. .##.. .....",
    "-": "..... ..... ..... .###. ..... ..... .....",
    "+": "..... ..#.. ..#.. ##### ..#.. ..#.. .....",
    "/": "....# ...#. ...#. ..#.. .#... .#... #....",
    "(": "...#. ..#.. .#... .#... .#... ..#.. ...#.",
    ")": ".#... ..#.. ...#. ...#. ...#. ..#.. .#...",
    "=": "..... ..... ##### ..... ##### ..... .....",
    "%": "##..# ##..# ...#. ..#.. .#... #..## #..##",
    "_": "..... ..... ..... ..... ..... ..... #####",
    "<": "...#. ..#.. .#... #.... .#... ..#.. ...#.",
    ">": ".#... ..#.. ...#. ....# ...#. ..#.. .#...",
    "*": "..... #.#.# .###. ##### .###. #.#.# .....",
    "#": ".#.#. .#.#. ##### .#.#. ##### .#.#. .#.#.",
    "'": "..#.. ..#.. .#... ..... ..... ..... .....",
    "?": ".###. #...# ....# ...#. ..#.. ..... ..#..",
    "!": "..#.. ..#.. ..#.. ..#.. ..#.. ..... ..#..",
    "[": ".###. .#... .#... .#... .#... .#... .###.",
    "]": ".###. ...#. ...#. ...#. ...#. ...#. .###.",
}
GLYPH_W, GLYPH_H = 5, 7
_BOX = "##### #...# #...# #...# #...# #...# #####"


def _parse(src: str):
    rows = src.split()
    assert len(rows) == GLYPH_H and all(len(r) == GLYPH_W for r in rows), src
    return tuple(tuple(i for i, ch in enumerate(r) if ch == "#") for r in rows)


FONT = {ch: _parse(s) for ch, s in _FONT_SRC.items()}
_BOX_GLYPH = _parse(_BOX)


def glyph(ch: str):
    """Rows of ink columns for ``ch`` (lower case drawn as upper case)."""
    return FONT.get(ch) or FONT.get(ch.upper()) or _BOX_GLYPH


def text_width(text: str, scale: int = 1) -> int:
    return len(text) * (GLYPH_W + 1) * scale


# --- canvas and PNG encoding -----------------------------------------------------------
class Canvas:
    """An RGB image in memory (row-major bytearray)."""

    def __init__(self, width: int, height: int, bg=(255, 255, 255)):
        if width <= 0 or height <= 0:
            raise ValueError("empty canvas")
        self.width, self.height = width, height
        self.px = bytearray(bytes(bg) * (width * height))

    def get(self, x: int, y: int):
        i = (y * self.width + x) * 3
        return tuple(self.px[i:i + 3])

    def rect(self, x0: int, y0: int, x1: int, y1: int, color) -> None:
        """Fill [x0, x1) x [y0, y1), clipped to the canvas."""
        x0, x1 = max(0, int(x0)), min(self.width, int(x1))
        y0, y1 = max(0, int(y0)), min(self.height, int(y1))
        if x0 >= x1 or y0 >= y1:
            return
        run = bytes(color) * (x1 - x0)
        for y in range(y0, y1):
            i = (y * self.width + x0) * 3
            self.px[i:i + len(run)] = run

    def text(self, x: int, y: int, text: str, color=(0, 0, 0), scale: int = 1) -> int:
        """Draw ``text`` with its top-left corner at (x, y); return the x after it."""
        for ch in text:
            for row, cols in enumerate(glyph(ch)):
                for col in cols:
                    self.rect(x + col * scale, y + row * scale,
                              x + (col + 1) * scale, y + (row + 1) * scale, color)
            x += (GLYPH_W + 1) * scale
        return x

    def png(self) -> bytes:
        return write_png(self.width, self.height, self.px)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def write_png(width: int, height: int, rgb) -> bytes:
    """Encode 8-bit RGB pixels (``width*height*3`` bytes, row-major) as a PNG file."""
    stride = width * 3
    if len(rgb) != stride * height:
        raise ValueError(f"expected {stride * height} bytes of RGB, got {len(rgb)}")
    raw = bytearray()
    for y in range(height):
        raw.append(0)                              # filter type 0 (None) per scanline
        raw += rgb[y * stride:(y + 1) * stride]
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)   # 8-bit truecolour
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
            + _chunk(b"IDAT", zlib.compress(bytes(raw), 9)) + _chunk(b"IEND", b""))


# --- the bar chart ------------------------------------------------------------------------
PALETTE = [(52, 101, 164), (237, 145, 33), (78, 154, 6), (204, 0, 0)]
GRID = (225, 225, 225)
AXIS = (60, 60, 60)
REF = (200, 0, 0)


def bar_chart(rows, series, title: str = "", ref: float = 1.0, scale: int = 2,
              bar_h: int = 16, width: int = 960, xmax: float | None = None,
              log: bool = False, notes=()) -> bytes:
    """Horizontal bars: ``rows`` = [(label, [value per series or None]), ...].

    One group of bars per row (one bar per series, colours from PALETTE, a legend at the
    top), grid lines with tick labels, a red line at ``ref`` (1.0: parity), the value
    written at the end of each bar; ``notes`` are lines of text under the axis.

    Linear (default): the axis runs from 0 to ``xmax`` (default: a round number above
    the largest value) and bars start at 0; bars longer than the axis are cut and marked
    with ">". ``log=True``: a logarithmic axis spanning every value and ``ref``, the
    bars start at ``ref`` and go right for values above it, left for values below
    (ratios: 0.5 and 2 are equally long). Returns the PNG file's bytes."""
    import math
    ch_w, ch_h = (GLYPH_W + 1) * scale, (GLYPH_H + 2) * scale
    pad = 10
    label_w = max([text_width(lbl, scale) for lbl, _ in rows] + [0]) + 2 * pad
    nser = max(1, len(series))
    group_h = nser * (bar_h + 2) + 10
    top = pad + (ch_h + 6 if title else 0) + ch_h + 10          # title, legend
    axis_h = ch_h + 8
    height = top + max(1, len(rows)) * group_h + axis_h + len(notes) * ch_h + pad
    vals = [v for _, vs in rows for v in vs if v is not None and v == v]
    plot_x0 = label_w + (7 * ch_w if log else 0)          # room for values left of ref
    plot_x1 = width - pad - 7 * ch_w                      # room for the value text
    if plot_x1 - plot_x0 < 100:
        width += 100 - (plot_x1 - plot_x0)
        plot_x1 = plot_x0 + 100
    if log:
        pos = [v for v in vals if v > 0] + [ref]
        lo_e = math.floor(math.log10(min(pos) / 1.2))
        hi_e = math.ceil(math.log10(max(pos) * 1.2))
        if hi_e <= lo_e:
            hi_e = lo_e + 1
        lo, hi = 10.0 ** lo_e, 10.0 ** hi_e
        ticks = []
        for e in range(lo_e, hi_e + 1):
            for m in ((1, 2, 5) if hi_e - lo_e <= 3 else (1,)):
                if lo <= m * 10.0 ** e <= hi:
                    ticks.append(m * 10.0 ** e)
        span = math.log(hi / lo)

        def xpos(v: float) -> int:
            v = min(max(v, lo), hi)
            return plot_x0 + int(round((plot_x1 - plot_x0) * math.log(v / lo) / span))
        xmax = hi
    else:
        if xmax is None:
            hi = max(vals + [ref]) if vals else ref
            xmax = _nice(hi * 1.1)
        step = _nice(xmax / 6)
        ticks = []
        t = 0.0
        while t <= xmax + 1e-9:
            ticks.append(t)
            t += step

        def xpos(v: float) -> int:
            return plot_x0 + int(round((plot_x1 - plot_x0) * min(max(v, 0.0), xmax)
                                       / xmax))
    c = Canvas(width, height)
    y = pad
    if title:
        c.text(pad, y, title, AXIS, scale)
        y += ch_h + 6
    x = pad
    for i, name in enumerate(series):
        col = PALETTE[i % len(PALETTE)]
        c.rect(x, y, x + ch_h - 4, y + ch_h - 4, col)
        x = c.text(x + ch_h + 2, y, name, AXIS, scale) + 3 * ch_w
    c.text(x, y, f"RED LINE = {ref:g}" + ("  (LOG SCALE)" if log else ""), REF, scale)
    plot_y0 = top
    plot_y1 = top + max(1, len(rows)) * group_h
    for t in ticks:                                       # grid and tick labels
        gx = xpos(t)
        c.rect(gx, plot_y0, gx + 1, plot_y1, GRID)
        lbl = f"{t:g}"
        c.text(gx - text_width(lbl, scale) // 2, plot_y1 + 6, lbl, AXIS, scale)
    base = xpos(ref) if log else plot_x0
    for r, (label, vs) in enumerate(rows):
        gy = plot_y0 + r * group_h + 5
        c.text(pad, gy + (nser * (bar_h + 2) - ch_h) // 2 + scale, label, AXIS, scale)
        for i, v in enumerate(vs):
            by = gy + i * (bar_h + 2)
            ty = by + (bar_h - GLYPH_H * scale) // 2
            if v is None or v != v or (log and v <= 0):
                c.text(base + 4, ty, "N/A", AXIS, scale)
                continue
            col = PALETTE[i % len(PALETTE)]
            end = xpos(v)
            txt = f"{v:.3g}" + (">" if v > xmax else "")
            if end >= base:
                c.rect(base, by, max(end, base + 1), by + bar_h, col)
                c.text(max(end, base + 1) + 4, ty, txt, AXIS, scale)
            else:
                c.rect(end, by, base, by + bar_h, col)
                c.text(end - 4 - text_width(txt, scale), ty, txt, AXIS, scale)
    c.rect(plot_x0, plot_y0, plot_x0 + 1, plot_y1, AXIS)        # y axis
    c.rect(plot_x0, plot_y1, plot_x1 + 1, plot_y1 + 1, AXIS)    # x axis
    rx = xpos(ref)
    c.rect(rx - 1, plot_y0 - 4, rx + 1, plot_y1 + 4, REF)       # the reference line
    ny = plot_y1 + axis_h
    for note in notes:
        c.text(pad, ny, note, AXIS, scale)
        ny += ch_h
    return c.png()


def _nice(x: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k that is >= x."""
    if x <= 0:
        return 1.0
    import math
    e = math.floor(math.log10(x))
    for m in (1, 2, 2.5, 5, 10):
        v = m * 10 ** e
        if v >= x - 1e-12:
            return float(v)
    return float(10 ** (e + 1))


# --- time series: one panel per series, stacked --------------------------------------------
def line_chart(panels, title: str = "", xlabel: str = "", scale: int = 2, width: int = 960,
               panel_h: int = 110) -> bytes:
    """Stacked line panels sharing one x axis: ``panels`` = [(label, [(x, y), ...]), ...].

    Each panel has its own y axis from 0 to a round number above its largest value
    (labelled at the top left, with the last value at the right end); the x axis spans
    every panel's points. Returns the PNG file's bytes."""
    ch_w, ch_h = (GLYPH_W + 1) * scale, (GLYPH_H + 2) * scale
    pad = 10
    xs = [x for _, pts in panels for x, _ in pts]
    x_lo, x_hi = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if x_hi <= x_lo:
        x_hi = x_lo + 1.0
    top = pad + (ch_h + 6 if title else 0)
    gap = ch_h + 8
    height = top + len(panels) * (panel_h + gap) + ch_h + 8 + pad
    plot_x0 = pad + 8 * ch_w
    plot_x1 = width - pad - 8 * ch_w
    c = Canvas(width, height)
    if title:
        c.text(pad, pad, title, AXIS, scale)

    def xpos(x: float) -> int:
        return plot_x0 + int(round((plot_x1 - plot_x0) * (x - x_lo) / (x_hi - x_lo)))

    for i, (label, pts) in enumerate(panels):
        col = PALETTE[i % len(PALETTE)]
        y0 = top + i * (panel_h + gap) + gap          # the panel's top
        y1 = y0 + panel_h
        ymax = _nice(max([y for _, y in pts] + [0.0]) * 1.1) if pts else 1.0
        c.text(pad, y0 - ch_h - 2, label, col, scale)
        c.text(plot_x0 - text_width(f"{ymax:g}", scale) - 4, y0, f"{ymax:g}", AXIS, scale)
        c.text(plot_x0 - text_width("0", scale) - 4, y1 - ch_h, "0", AXIS, scale)
        c.rect(plot_x0, y0, plot_x1 + 1, y0 + 1, GRID)
        c.rect(plot_x0, y0, plot_x0 + 1, y1, AXIS)
        c.rect(plot_x0, y1, plot_x1 + 1, y1 + 1, AXIS)

        def ypos(y: float) -> int:
            return y1 - int(round(panel_h * min(max(y, 0.0), ymax) / ymax))

        prev = None
        for x, y in pts:
            p = (xpos(x), ypos(y))
            if prev is not None:
                steps = max(abs(p[0] - prev[0]), abs(p[1] - prev[1]), 1)
                for k in range(steps + 1):
                    px = prev[0] + (p[0] - prev[0]) * k // steps
                    py = prev[1] + (p[1] - prev[1]) * k // steps
                    c.rect(px - 1, py - 1, px + 1, py + 1, col)
            else:
                c.rect(p[0] - 1, p[1] - 1, p[0] + 1, p[1] + 1, col)
            prev = p
        if pts:
            c.text(plot_x1 + 6, ypos(pts[-1][1]) - ch_h // 2, f"{pts[-1][1]:.4g}", col, scale)
    ay = top + len(panels) * (panel_h + gap) + 4
    c.text(plot_x0, ay, f"{x_lo:g}", AXIS, scale)
    right = f"{x_hi:.0f} {xlabel}".strip()
    c.text(plot_x1 - text_width(right, scale), ay, right, AXIS, scale)
    return c.png()
