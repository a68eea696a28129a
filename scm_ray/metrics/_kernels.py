"""Numba kernels behind the fast box extractor: every requested level of a uint8 map in two sweeps.

What the wsolevaluation convention computes at a level T, restated in terms of connected sets
(checked against cv2.findContours(RETR_TREE, CHAIN_APPROX_SIMPLE) in tests/metrics):

- the contours of the mask {u > T} are one outer border per 8-connected foreground component and
  one hole border per 4-connected background component that does not reach the image edge;
- an outer border's bounding rectangle is the component's; a hole border runs through the
  foreground pixels around the hole, so its rectangle is the hole's grown by one pixel;
- cv2.contourArea of a border, in half pixels, is a sum over the 2x2 pixel windows inside it:
  a window with 4 foreground pixels is 2, with 3 it is 1 (a triangle), otherwise 0 for the
  foreground; a background window piece is 1 per background pixel while a window holds 1 or 2
  of them. A border's area is the pieces of its own set plus everything nested inside it;
- contours come out in depth-first pre-order of the nesting tree, siblings in decreasing raster
  order of the pixel where the border is first met (a component's first pixel; for a hole, the
  pixel left of its first pixel), and Python's max() keeps the first of equal areas.

So nothing needs a contour traced. Components only grow and merge as T falls, holes only grow
and merge as T rises; a sweep over pixels sorted by value in each direction, with per-set labels
relabelled on merge (merges are rare in real maps), records the sets at every requested level.
The Euler number, counted on the same 2x2 windows, says at which levels holes exist at all; the
second sweep runs only when some do. Everything works on a one-pixel zero-padded grid; indices
below are flat indices into it (stride W + 2).
"""

from __future__ import annotations

import numpy as np
from numba import njit

NO_SET = -1

# Per-set statistics: one flat int32 table, set c's fields at c * N_STATS + field (a flat
# table with a constant row length keeps the sweep's hot loop to one base pointer).
SIZE, HEAD, X0, Y0, X1, Y1, PIECES, INTO, MERGED_AT, SLOT = (np.uint64(i) for i in range(10))
N_STATS = np.uint64(10)
# Columns of a snapshot row: one set alive at one level.
S_LEVEL, S_FIRST, S_X0, S_Y0, S_X1, S_Y1, S_PIECES, S_ID = range(8)
N_SNAP = 8
# Indices in the sweep are unsigned: numba then skips its negative-index wraparound code.
ONE = np.uint64(1)

# Neighbours of a pixel as (dy, dx), in raster order; bit i of a neighbourhood mask is neighbour i.
NEIGHBOURS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
# Fields of a GAIN_TABLE entry.
EULER_BITS, AREA_SHIFT, JOINED_SHIFT = 31, 5, 8


def _quarter_euler(mask: int) -> int:
    """A 2x2 window's share of the 8-connected Euler number (n1 - n3 - 2 nD) / 4, in quarters."""
    ones = bin(mask).count("1")
    if ones == 1:
        return 1
    if ones == 3:
        return -1
    return -2 if mask in (0b1001, 0b0110) else 0


def _joined(occupied: int) -> bool:
    """Whether the neighbours in (a NEIGHBOURS mask) are 8-connected to each other around p.

    They then already carry one label, so a foreground pixel needs no label comparison.
    """
    cells = [n for i, n in enumerate(NEIGHBOURS) if occupied >> i & 1]
    if not cells:
        return True
    reached, todo = {cells[0]}, [cells[0]]
    while todo:
        y, x = todo.pop()
        for n in cells:
            if n not in reached and max(abs(n[0] - y), abs(n[1] - x)) == 1:
                reached.add(n)
                todo.append(n)
    return len(reached) == len(cells)


def _gain_table() -> np.ndarray:
    """What a pixel adds through its four 2x2 windows, per mask of its neighbours already in.

    Row 0 is the foreground, row 1 the background. Entries pack, so that one lookup per pixel
    serves: the half-pixel area gain (bits 5-7) and, in the foreground, the Euler gain in
    quarters + 16 (bits 0-4) and whether the neighbours in are joined (bit 8, see _joined).
    Foreground area: a window with 4 pixels in is 2, with 3 it is 1. Background area: a
    window's first two pixels each add 1.
    """
    table = np.zeros((2, 256), np.int64)
    area = [0, 0, 0, 1, 2]
    corners = [(0, 0), (0, 1), (1, 0), (1, 1)]  # window bit order: TL, TR, BL, BR
    for occupied in range(256):
        gain_area = gain_euler = gain_background = 0
        for wy, wx in [(-1, -1), (-1, 0), (0, -1), (0, 0)]:  # windows' top-left pixels around p
            mask = own = 0
            for bit, (dy, dx) in enumerate(corners):
                cell = (wy + dy, wx + dx)
                if cell == (0, 0):
                    own = bit
                elif occupied >> NEIGHBOURS.index(cell) & 1:
                    mask |= 1 << bit
            grown = mask | (1 << own)
            gain_area += area[bin(grown).count("1")] - area[bin(mask).count("1")]
            gain_euler += _quarter_euler(grown) - _quarter_euler(mask)
            gain_background += bin(mask).count("1") <= 1
        table[0, occupied] = gain_euler + 16 + (gain_area << AREA_SHIFT) + (_joined(occupied) << JOINED_SHIFT)
        table[1, occupied] = gain_background << AREA_SHIFT
    return table


GAIN_TABLE = _gain_table()


@njit(cache=True, nogil=True)
def to_uint8(scoremap, scale):
    """(map * 255).astype(uint8) in the map's own float type, with validation and a histogram.

    Returns (u8 (H, W), counts (256,), status): status 0 ok, 1 NaN seen, 2 value outside [0, 1].
    `scale` is 255 of the map's dtype so float32 maps multiply in float32 like numpy does.
    Rows are checked and converted without branches (LLVM vectorises that), and the histogram
    counts into four interleaved tables: equal neighbouring values, the rule in smooth maps,
    would otherwise wait on each other's increment.
    """
    h, w = scoremap.shape
    u8 = np.empty((h, w), np.uint8)
    tables = np.zeros((4, 256), np.int64)
    for y in range(h):
        line = scoremap[y]
        nan = False
        outside = False
        for x in range(w):
            v = line[x]
            nan |= v != v
            outside |= (v < 0) | (v > 1)
        if nan or outside:  # report whichever comes first
            for x in range(w):
                if line[x] != line[x]:
                    return u8, tables[0], 1
                if line[x] < 0 or line[x] > 1:
                    return u8, tables[0], 2
        out = u8[y]
        for x in range(w):
            out[x] = np.uint8(line[x] * scale)
        x = 0
        while x + 4 <= w:
            tables[0, out[x]] += 1
            tables[1, out[x + 1]] += 1
            tables[2, out[x + 2]] += 1
            tables[3, out[x + 3]] += 1
            x += 4
        for x in range(x, w):
            tables[0, out[x]] += 1
    return u8, tables.sum(axis=0), 0


@njit(cache=True, nogil=True)
def sort_pixels(u8, counts):
    """All pixels as y << 16 | x grouped by value (ascending): value v is order[b[v]:b[v + 1]]."""
    h, w = u8.shape
    bounds = np.zeros(257, np.int64)
    for v in range(256):
        bounds[v + 1] = bounds[v] + counts[v]
    fill = bounds[:256].copy()
    order = np.empty(h * w, np.int32)
    for y in range(h):
        for x in range(w):
            v = u8[y, x]
            order[fill[v]] = (y << 16) | x
            fill[v] += 1
    return order, bounds


@njit(cache=True, nogil=True)
def _grow_rows(buf, used):
    """Double a row buffer when full (numba has no growable 2-D arrays)."""
    if used < buf.shape[0]:
        return buf
    bigger = np.empty((buf.shape[0] * 2, buf.shape[1]), buf.dtype)
    bigger[: buf.shape[0]] = buf
    return bigger


@njit(cache=True, nogil=True)
def _snapshot(snap, used, level, st, active, first_active, n_active, lab, stride):
    """Append one row per active set (skipping slots before first_active) for this level.

    A set's first pixel in raster order is its leftmost member on its top row; finding it here
    is cheaper than tracking it for every pixel.
    """
    for i in range(first_active, n_active):
        c = active[i]
        row = np.uint64(c) * N_STATS
        first = st[row + Y0] * stride + st[row + X0]
        while lab[first] != c:
            first += 1
        snap = _grow_rows(snap, used)
        snap[used, S_LEVEL] = level
        snap[used, S_FIRST] = first
        snap[used, S_X0] = st[row + X0]
        snap[used, S_Y0] = st[row + Y0]
        snap[used, S_X1] = st[row + X1]
        snap[used, S_Y1] = st[row + Y1]
        snap[used, S_PIECES] = st[row + PIECES]
        snap[used, S_ID] = c
        used += 1
    return snap, used


@njit(cache=True, nogil=True, inline="always")
def _occupied(n_ul, n_up, n_ur, n_left, n_right, n_dl, n_down, n_dr, none):
    """Mask of the neighbours (their labels, in NEIGHBOURS order) already in: GAIN_TABLE's index."""
    return (
        (n_ul != none) * 1 + (n_up != none) * 2 + (n_ur != none) * 4 + (n_left != none) * 8
        + (n_right != none) * 16 + (n_dl != none) * 32 + (n_down != none) * 64 + (n_dr != none) * 128
    )


@njit(cache=True, nogil=True, inline="always")
def _top(a, b, c, d, wrap):
    """The largest real label of four, + 1; 0 if none is real ((label + 1) & wrap sends the
    "none" label, the type's maximum, to 0)."""
    return max(max((a + 1) & wrap, (b + 1) & wrap), max((c + 1) & wrap, (d + 1) & wrap))


@njit(cache=True, nogil=True)
def _new_set(st, c, p, x, y, slot):
    """Set c starts with pixel p alone."""
    row = np.uint64(c) * N_STATS
    st[row + SIZE] = 1
    st[row + HEAD] = p
    st[row + X0] = x
    st[row + X1] = x
    st[row + Y0] = y
    st[row + Y1] = y
    st[row + PIECES] = 0
    st[row + INTO] = NO_SET
    st[row + SLOT] = slot


@njit(cache=True, nogil=True)
def _merge(p, offsets, st, lab, nxt, value, active, n_active, outside, none):
    """Pixel p touches several sets: merge them into the largest (or into the outside set)."""
    keep = -1
    for off in offsets:
        if lab[p + off] == none:
            continue
        c = np.int64(lab[p + off])
        if keep == -1 or c == outside or (keep != outside and st[c * N_STATS + SIZE] > st[keep * N_STATS + SIZE]):
            keep = c
    k = np.uint64(keep) * N_STATS
    for off in offsets:
        if lab[p + off] == none:
            continue
        gone = np.int64(lab[p + off])
        if gone == keep:
            continue
        g = np.uint64(gone) * N_STATS
        # Relabel the members (a circular list), then splice the two circles into one.
        q = st[g + HEAD]
        while True:
            lab[q] = keep
            q = nxt[q]
            if q == st[g + HEAD]:
                break
        if keep != outside:
            a = st[k + HEAD]
            b = st[g + HEAD]
            after_a = nxt[a]
            nxt[a] = nxt[b]
            nxt[b] = after_a
        st[k + SIZE] += st[g + SIZE]
        st[k + X0] = min(st[k + X0], st[g + X0])
        st[k + X1] = max(st[k + X1], st[g + X1])
        st[k + Y0] = min(st[k + Y0], st[g + Y0])
        st[k + Y1] = max(st[k + Y1], st[g + Y1])
        st[k + PIECES] += st[g + PIECES]
        st[g + INTO] = keep
        st[g + MERGED_AT] = value
        slot = st[g + SLOT]
        n_active -= 1
        last = active[n_active]
        active[slot] = last
        st[np.uint64(last) * N_STATS + SLOT] = slot
    return keep, n_active


@njit(cache=True, nogil=True)
def _label_outside(lab, entry, st, active, h, w):
    """Background sweep: the padding ring is set 0, the outside (never relabelled)."""
    stride = w + 2
    for y in range(h + 2):
        for x in (0, w + 1):
            lab[y * stride + x] = 0
            entry[y * stride + x] = 0
    for x in range(stride):
        for y in (0, h + 1):
            lab[y * stride + x] = 0
            entry[y * stride + x] = 0
    st[SIZE] = 1 << 30
    st[INTO] = NO_SET
    st[SLOT] = 0
    active[0] = 0


@njit(cache=True, nogil=True)
def sweep_foreground(order, bounds, wanted, stop, h, w, gains, lab, none, entry, nxt, st):
    """sweep() for the foreground (its own machine code: the flag is a constant there)."""
    return sweep(order, bounds, wanted, stop, h, w, False, gains, lab, none, entry, nxt, st)


@njit(cache=True, nogil=True)
def sweep_background(order, bounds, wanted, stop, h, w, gains, lab, none, entry, nxt, st):
    """sweep() for the background."""
    return sweep(order, bounds, wanted, stop, h, w, True, gains, lab, none, entry, nxt, st)


@njit(cache=True, nogil=True, inline="always")
def sweep(order, bounds, wanted, stop, h, w, background, gains, lab, none, entry, nxt, st):
    """Grow the foreground by falling value, or the background by rising value; record sets.

    Foreground (background=False): 8-connected components; level T is recorded before the
    pixels of value T join, so it holds {u > T}; values down to `stop` + 1 are added.
    Background: 4-connected sets of {u <= T}, recorded after value T joins, for T up to `stop`;
    set 0 is the padding ring (the outside), so every other set is a hole.
    Each pixel also adds its four 2x2 windows' gains (GAIN_TABLE, looked up by which of its
    eight neighbours are in): area pieces for its set and, in the foreground, the Euler number,
    which tells the levels that have holes.
    Returns (snapshot rows, holes per level (256,); foreground only). A pixel's set at level T is found
    afterwards by following INTO from entry[p] while the merge is part of level T.
    Members of a set form a circular list through `nxt`, so merging relabels the smaller set.
    """
    stride = w + 2
    row = np.uint64(stride)
    lab[:] = none
    wrap = np.int64(none)
    gain_of = gains[1] if background else gains[0]
    active = np.empty(h * w + 2, np.int64)
    n_active = n_sets = 0
    outside = -1
    if background:
        offsets = np.array([-stride, -1, 1, stride])
        _label_outside(lab, entry, st, active, h, w)
        outside = 0
        n_active = n_sets = 1
    else:
        offsets = np.array([-stride - 1, -stride, -stride + 1, -1, 1, stride - 1, stride, stride + 1])
    euler = 0  # foreground Euler number, in quarters
    snap = np.empty((64, N_SNAP), np.int64)
    used = 0
    holes = np.zeros(256, np.int64)
    for step in range(256):
        value = step if background else 255 - step
        if not background:
            if wanted[value]:
                holes[value] = n_active - euler // 4  # Euler number = components - holes
                snap, used = _snapshot(snap, used, value, st, active, 0, n_active, lab, stride)
            if value <= stop:
                break
        elif value > stop:
            break
        for k in range(np.uint64(bounds[value]), np.uint64(bounds[value + 1])):
            yx = order[k]
            y = (yx >> 16) + 1
            x = (yx & 0xFFFF) + 1
            p = np.uint64(y * stride + x)
            n_up, n_left, n_right, n_down = lab[p - row], lab[p - ONE], lab[p + ONE], lab[p + row]
            # The lowest neighbour label names the set ("none" is the highest label).
            low = min(min(n_up, n_left), min(n_right, n_down))
            if not background:
                n_ul, n_ur, n_dl, n_dr = lab[p - row - ONE], lab[p - row + ONE], lab[p + row - ONE], lab[p + row + ONE]
                low = min(low, min(min(n_ul, n_ur), min(n_dl, n_dr)))
                gain = gain_of[_occupied(n_ul, n_up, n_ur, n_left, n_right, n_dl, n_down, n_dr, none)]
            if low == none:
                c = n_sets
                n_sets += 1
                _new_set(st, c, p, x, y, n_active)
                active[n_active] = c
                n_active += 1
                nxt[p] = p
            else:
                c = np.int64(low)
                # Another neighbour label means a merge. Background sets are 4-connected: only
                # the four edge neighbours count. In the foreground, labels need comparing only
                # when the neighbours in are not already joined around p.
                apart = False
                if background:
                    apart = _top(n_up, n_left, n_right, n_down, wrap) != c + 1
                elif not gain >> JOINED_SHIFT:
                    apart = max(_top(n_up, n_left, n_right, n_down, wrap), _top(n_ul, n_ur, n_dl, n_dr, wrap)) != c + 1
                if apart:
                    c, n_active = _merge(p, offsets, st, lab, nxt, value, active, n_active, outside, none)
                if c != outside:
                    s = np.uint64(c) * N_STATS
                    st[s + SIZE] += 1
                    st[s + X0] = min(st[s + X0], x)
                    st[s + X1] = max(st[s + X1], x)
                    st[s + Y0] = min(st[s + Y0], y)
                    st[s + Y1] = max(st[s + Y1], y)
                    q = st[s + HEAD]
                    nxt[p] = nxt[q]
                    nxt[q] = p
            lab[p] = c
            entry[p] = c
            if not background:
                st[np.uint64(c) * N_STATS + PIECES] += (gain >> AREA_SHIFT) & 7
                euler += (gain & EULER_BITS) - 16
            elif c != outside:  # the outside set's area is never asked for
                up = p - row
                down = p + row
                gain = gain_of[
                    _occupied(lab[up - ONE], n_up, lab[up + ONE], n_left, n_right, lab[down - ONE], n_down, lab[down + ONE], none)
                ]
                st[np.uint64(c) * N_STATS + PIECES] += (gain >> AREA_SHIFT) & 7
        if background and wanted[value]:
            snap, used = _snapshot(snap, used, value, st, active, 1, n_active, lab, stride)
    return snap[:used], holes


@njit(cache=True, nogil=True)
def _largest_row(rows):
    """Index of the snapshot row with the most own area, ties to the later first pixel (cv2's
    list order puts later-starting siblings first and max() keeps the first)."""
    best = 0
    for i in range(1, rows.shape[0]):
        if rows[i, S_PIECES] > rows[best, S_PIECES] or (
            rows[i, S_PIECES] == rows[best, S_PIECES] and rows[i, S_FIRST] > rows[best, S_FIRST]
        ):
            best = i
    return best


@njit(cache=True, nogil=True)
def largest_needs_holes(fg_snap, holes):
    """Levels whose largest contour cannot be told without the holes (256,) bool.

    Holes only add area to the component around them, and a component's contour area is at
    most its bounding box's (the contour runs through pixel centres inside it). So when the
    component with the most own area beats every other component's box bound, it is the
    answer whatever the holes are (it cannot be nested either: its encloser would beat it).
    """
    needs = np.zeros(256, np.bool_)
    start = 0
    n = fg_snap.shape[0]
    while start < n:
        level = fg_snap[start, S_LEVEL]
        end = start
        while end < n and fg_snap[end, S_LEVEL] == level:
            end += 1
        if holes[level] > 0:
            best = start + _largest_row(fg_snap[start:end])
            for i in range(start, end):
                bound = 2 * (fg_snap[i, S_X1] - fg_snap[i, S_X0]) * (fg_snap[i, S_Y1] - fg_snap[i, S_Y0])
                if i != best and bound >= fg_snap[best, S_PIECES]:
                    needs[level] = True
        start = end
    return needs


@njit(cache=True, nogil=True, inline="always")
def _set_at_level(entry, st, p, level, falling):
    """The set holding pixel p at `level`: follow merges made at or before that level."""
    c = entry[p]
    while st[c * N_STATS + INTO] != NO_SET:
        at = st[c * N_STATS + MERGED_AT]
        if (falling and at <= level) or ((not falling) and at > level):
            break
        c = st[c * N_STATS + INTO]
    return c


# Columns of assemble's node table: one contour (a component or a hole) at one level.
N_FIRST, N_X0, N_Y0, N_X1, N_Y1, N_AREA, N_PARENT, N_HOLE = range(8)
N_NODE = 8


@njit(cache=True, nogil=True)
def _load_nodes(nodes, offset, rows, is_hole, node_of):
    """Copy snapshot rows into the node table from `offset`; remember each set's node."""
    for i in range(rows.shape[0]):
        j = offset + i
        nodes[j, N_FIRST] = rows[i, S_FIRST]
        nodes[j, N_X0] = rows[i, S_X0]
        nodes[j, N_Y0] = rows[i, S_Y0]
        nodes[j, N_X1] = rows[i, S_X1]
        nodes[j, N_Y1] = rows[i, S_Y1]
        nodes[j, N_AREA] = rows[i, S_PIECES]
        nodes[j, N_PARENT] = -1
        nodes[j, N_HOLE] = is_hole
        node_of[rows[i, S_ID]] = j


@njit(cache=True, nogil=True)
def assemble(fg_snap, holes, bg_snap, fg_entry, fg_st, bg_entry, bg_st, wanted, h, w, want_all):
    """Boxes per wanted level from the snapshots.

    Returns (largest (256, 4), all boxes (n, 4), start (256,), count (256,)): row `start[T]` and
    the next `count[T]` rows of `all boxes` are level T's contours in cv2's order (only when
    want_all). Levels without any contour give the (0, 0, 0, 0) box, as the reference does.
    """
    stride = w + 2
    largest = np.zeros((256, 4), np.int64)
    boxes = np.empty((64, 4), np.int64)
    used = 0
    start = np.zeros(256, np.int64)
    count = np.zeros(256, np.int64)
    fg_row = np.searchsorted(-fg_snap[:, S_LEVEL], -np.arange(256))  # rows are by falling level
    fg_end = np.searchsorted(-fg_snap[:, S_LEVEL], -np.arange(256), side="right")
    bg_row = np.searchsorted(bg_snap[:, S_LEVEL], np.arange(256))
    bg_end = np.searchsorted(bg_snap[:, S_LEVEL], np.arange(256), side="right")
    node_of_fg = np.full(fg_snap[:, S_ID].max() + 1 if fg_snap.shape[0] else 0, -1, np.int64)
    node_of_bg = np.full(bg_snap[:, S_ID].max() + 1 if bg_snap.shape[0] else 0, -1, np.int64)
    for level in range(256):
        if not wanted[level]:
            continue
        nf = fg_end[level] - fg_row[level]
        nh = bg_end[level] - bg_row[level] if holes[level] > 0 else 0
        n = nf + nh
        if nh == 0:
            # No holes: every component is top-level, and cv2 lists them by falling first pixel.
            rows = fg_snap[fg_row[level] : fg_end[level]]
            if nf > 0:
                _row_box(rows, _largest_row(rows), h, w, largest[level])
            if want_all:
                start[level] = used
                if nf == 0:
                    boxes = _grow_rows(boxes, used)
                    boxes[used, :] = 0
                    used += 1
                for i in np.argsort(-rows[:, S_FIRST]):
                    boxes = _grow_rows(boxes, used)
                    _row_box(rows, i, h, w, boxes[used])
                    used += 1
                count[level] = used - start[level]
            continue
        nodes = np.empty((n, N_NODE), np.int64)
        _load_nodes(nodes, 0, fg_snap[fg_row[level] : fg_end[level]], 0, node_of_fg)
        _load_nodes(nodes, nf, bg_snap[bg_row[level] : bg_row[level] + nh], 1, node_of_bg)
        # The pixel above a set's first pixel belongs to the set that encloses it.
        for i in range(n):
            above = nodes[i, N_FIRST] - stride
            if nodes[i, N_HOLE] == 0:
                if above >= stride:
                    c = _set_at_level(bg_entry, bg_st, above, level, False)
                    if c != 0:
                        nodes[i, N_PARENT] = node_of_bg[c]
            else:
                c = _set_at_level(fg_entry, fg_st, above, level, True)
                nodes[i, N_PARENT] = node_of_fg[c]
        # Enclosing sets start earlier in raster order: add nested areas children-first.
        for i in np.argsort(-nodes[:, N_FIRST]):
            parent = nodes[i, N_PARENT]
            if parent >= 0:
                nodes[parent, N_AREA] += nodes[i, N_AREA]
        best = -1
        for i in range(nf):
            if nodes[i, N_PARENT] == -1:
                if best == -1 or nodes[i, N_AREA] > nodes[best, N_AREA] or (
                    nodes[i, N_AREA] == nodes[best, N_AREA] and nodes[i, N_FIRST] > nodes[best, N_FIRST]
                ):
                    best = i
        if best >= 0:
            _box_of(nodes, best, h, w, largest[level])
        if want_all:
            start[level] = used
            for i in _preorder(nodes):
                boxes = _grow_rows(boxes, used)
                _box_of(nodes, i, h, w, boxes[used])
                used += 1
            count[level] = used - start[level]
        for i in range(nf):
            node_of_fg[fg_snap[fg_row[level] + i, S_ID]] = -1
        for i in range(nh):
            node_of_bg[bg_snap[bg_row[level] + i, S_ID]] = -1
    return largest, boxes[:used], start, count


@njit(cache=True, nogil=True)
def _row_box(rows, i, h, w, out):
    """x0, y0, x1, y1 in image pixels of a component's contour (a snapshot row)."""
    out[0] = rows[i, S_X0] - 1
    out[1] = rows[i, S_Y0] - 1
    out[2] = min(rows[i, S_X1], w - 1)
    out[3] = min(rows[i, S_Y1], h - 1)


@njit(cache=True, nogil=True, inline="always")
def _box_of(nodes, i, h, w, out):
    """x0, y0, x1, y1 in image pixels of a node's contour, clipped like the reference."""
    grow = nodes[i, N_HOLE]  # a hole border runs one pixel outside the hole
    out[0] = nodes[i, N_X0] - 1 - grow
    out[1] = nodes[i, N_Y0] - 1 - grow
    out[2] = min(nodes[i, N_X1] + grow, w - 1)
    out[3] = min(nodes[i, N_Y1] + grow, h - 1)


@njit(cache=True, nogil=True)
def _preorder(nodes):
    """Depth-first pre-order of the nesting forest, siblings by falling discovery key."""
    n = nodes.shape[0]
    # A component's border is met at its first pixel, a hole's just left of the hole's.
    by_key = np.argsort(-(nodes[:, N_FIRST] - nodes[:, N_HOLE]), kind="mergesort")
    # Children lists in falling key order: walk nodes by falling key and append.
    first_child = np.full(n + 1, -1, np.int64)
    last_child = np.full(n + 1, -1, np.int64)
    sibling = np.full(n, -1, np.int64)
    for i in by_key:
        parent = nodes[i, N_PARENT]
        slot = n if parent == -1 else parent
        if first_child[slot] == -1:
            first_child[slot] = i
        else:
            sibling[last_child[slot]] = i
        last_child[slot] = i
    out = np.empty(n, np.int64)
    used = 0
    stack = np.empty(n + 1, np.int64)
    depth = 0
    node = first_child[n]
    while True:
        while node != -1:
            out[used] = node
            used += 1
            stack[depth] = node
            depth += 1
            node = first_child[node]
        if depth == 0:
            break
        depth -= 1
        node = sibling[stack[depth]]
    return out
