"""Pipeline schedules on paper: 1F1B, ZB1P and DualPipe laid out step by step (V3 report §3.2.1, Table 2).

A pipeline cuts the model into PP stages, one per rank, and a batch into micro-batches. Each micro-batch passes every
stage forward (F), then every stage backward; the backward is a backward for the inputs (what the previous stage
needs, time B − W) and a backward for the weights (W, needed by nobody downstream). Table 2 of the report counts
the idle time ("bubble") of each rank with F, B (a *full* backward chunk), W and F&B (a forward and a backward chunk
of two micro-batches run overlapped):

    1F1B      (PP − 1)(F + B)              parameters ×1, activations PP micro-batches
    ZB1P      (PP − 1)(F + B − 2W)         parameters ×1, activations PP
    DualPipe  (PP/2 − 1)(F&B + B − 3W)     parameters ×2, activations PP + 1

``simulate(schedule, pp, micro_batches, F, B, W, FB)`` builds each rank's order of chunks, then plays it as a
discrete-event simulation without communication time: a chunk starts when its rank is free and the chunk it depends
on (the previous stage's forward, the next stage's backward) has finished. It returns a ``Timeline``: every chunk
with its start and end, each rank's bubble (idle time before the last chunk of the step) and its peak activation
memory. ZB1P follows the zero-bubble paper's ZB-H1 (Qi et al., 2023): 1F1B's order of F and input-backward, with each
weight-backward run as soon as the rank would otherwise wait, and never more than 1F1B's in-flight micro-batches.
DualPipe follows the step structure of DeepSeek's ``dualpipe`` package (eight phases per rank, two directions; the
order is tested against what the package executes). Times are in any unit; the order does not depend on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SCHEDULES = ("1f1b", "zb1p", "dualpipe")
KINDS = ("F", "B", "W", "F&B")  # forward, backward (full or for inputs only), backward for weights, overlapped pair
PARAMETER_COPIES = {"1f1b": 1, "zb1p": 1, "dualpipe": 2}


@dataclass(frozen=True)
class Work:
    """One stage's share of a chunk: ``what`` is "F", "B" (full backward), "I" (backward for inputs) or "W"."""

    what: str
    direction: int  # 0: micro-batches entering at rank 0; 1 (DualPipe only): entering at the last rank
    micro_batch: int


@dataclass(frozen=True)
class Chunk:
    """One chunk of work on one rank, from ``start`` to ``end``. ``kind`` is one of ``KINDS``; an "F&B" chunk holds
    two works (the forward of one micro-batch and the backward of another)."""

    rank: int
    kind: str
    start: float
    end: float
    works: tuple[Work, ...]

    @property
    def label(self) -> str:
        return " ".join(f"{w.what}{'' if w.direction == 0 else '′'}{w.micro_batch}" for w in self.works)


@dataclass
class Timeline:
    """The simulated step. ``chunks`` in start order; per rank: ``busy``, ``bubble`` (idle time inside
    [0, ``makespan``]) and ``peak_activations`` (micro-batches whose activations are held at once, one stage each)."""

    schedule: str
    pp: int
    micro_batches: int
    times: dict[str, float]
    chunks: list[Chunk]
    makespan: float
    busy: list[float] = field(default_factory=list)
    bubble: list[float] = field(default_factory=list)
    peak_activations: list[int] = field(default_factory=list)

    @property
    def parameter_copies(self) -> int:
        """Stages of parameters each rank holds, in units of one PP-th of the model (DualPipe: both directions)."""
        return PARAMETER_COPIES[self.schedule]

    @property
    def bubble_fraction(self) -> float:
        """Idle share of all ranks' time in the step: Σ bubble / (PP · makespan)."""
        return sum(self.bubble) / (self.pp * self.makespan)

    def order(self, rank: int) -> list[str]:
        """The chunks of ``rank`` as labels, e.g. ["F0", "F1", "B0", ...] (′ marks DualPipe's reverse direction)."""
        return [c.label for c in self.chunks if c.rank == rank]


def table2_bubble(schedule: str, pp: int, F: float, B: float, W: float, FB: float | None = None) -> float:
    """The report's Table 2 bubble of ``schedule`` with PP ranks; ``B`` is a full backward, ``FB`` the F&B time."""
    _check_schedule(schedule)
    if schedule == "1f1b":
        return (pp - 1) * (F + B)
    if schedule == "zb1p":
        return (pp - 1) * (F + B - 2 * W)
    fb = F + B if FB is None else FB
    return (pp / 2 - 1) * (fb + B - 3 * W)


def table2_activations(schedule: str, pp: int) -> int:
    """Table 2's activation memory in micro-batches: PP for 1F1B and ZB1P, PP + 1 for DualPipe."""
    _check_schedule(schedule)
    return pp + 1 if schedule == "dualpipe" else pp


def check_setting(schedule: str, pp: int, micro_batches: int) -> None:
    """Raise ``ValueError`` naming the field when the schedule cannot run ``micro_batches`` on ``pp`` ranks."""
    _check_schedule(schedule)
    if not isinstance(pp, int) or pp < 2:
        raise ValueError(f"pp={pp!r}: a pipeline needs at least 2 ranks (an integer ≥ 2)")
    if not isinstance(micro_batches, int) or micro_batches < 1:
        raise ValueError(f"micro_batches={micro_batches!r} must be a positive integer")
    if schedule == "dualpipe":
        if pp % 2:
            raise ValueError(f"pp={pp} is odd; DualPipe pairs rank r with rank pp−1−r, so pp must be even")
        if micro_batches % 2 or micro_batches < 2 * pp:
            raise ValueError(f"micro_batches={micro_batches}: DualPipe needs an even number ≥ 2·pp = {2 * pp} "
                             "(half of them enter from each end)")
    elif micro_batches < pp:
        raise ValueError(f"micro_batches={micro_batches} < pp={pp}: {schedule} needs at least one micro-batch per "
                         "rank to fill the pipeline (Table 2's formulas assume it)")


def simulate(schedule: str, pp: int, micro_batches: int, F: float = 1.0, B: float = 2.0, W: float = 1.0,
             FB: float | None = None) -> Timeline:
    """Lay out one training step of ``schedule`` and time it (see the module docstring).

    F, B, W: times of a forward chunk, a *full* backward chunk and its weight part (so a backward for inputs takes
    B − W); FB: an overlapped forward + backward chunk (default F + B, no overlap gain). Returns a ``Timeline``.
    """
    check_setting(schedule, pp, micro_batches)
    for name, value in (("F", F), ("B", B), ("W", W)):
        if not value >= 0:
            raise ValueError(f"{name}={value!r} must be a time ≥ 0")
    if W > B:
        raise ValueError(f"W={W} > B={B}: the weight part of a backward cannot take longer than the whole backward")
    fb = F + B if FB is None else FB
    if fb < 0:
        raise ValueError(f"FB={FB!r} must be a time ≥ 0")
    times = {"F": F, "B": B, "W": W, "F&B": fb}
    if schedule == "dualpipe":
        orders = [dualpipe_order(pp, micro_batches, r) for r in range(pp)]
        chunks = _play(orders, pp, times, fill_weights=False, stage_of=_dualpipe_stage)
    else:
        split = schedule == "zb1p"
        orders = [_one_f_one_b_order(pp, micro_batches, r, split) for r in range(pp)]
        chunks = _play(orders, pp, times, fill_weights=split, stage_of=_single_stage)
    makespan = max(c.end for c in chunks)
    tl = Timeline(schedule, pp, micro_batches, times, sorted(chunks, key=lambda c: (c.start, c.rank)), makespan)
    for r in range(pp):
        mine = [c for c in chunks if c.rank == r]
        tl.busy.append(sum(c.end - c.start for c in mine))
        tl.bubble.append(makespan - tl.busy[-1])
        tl.peak_activations.append(_peak_activations(mine))
    return tl


# -- the orders -------------------------------------------------------------------------------------------------------
def _one_f_one_b_order(pp: int, m: int, rank: int, split: bool) -> list[tuple[Work, ...]]:
    """1F1B on ``rank``: PP − rank − 1 warm-up forwards, then alternate one forward and one backward, then drain.
    With ``split`` (ZB1P) the backwards are for inputs only; the weight parts are placed while playing."""
    warm = min(pp - rank - 1, m)
    back = "I" if split else "B"
    order = [(Work("F", 0, i),) for i in range(warm)]
    for i in range(m - warm):
        order += [(Work("F", 0, warm + i),), (Work(back, 0, i),)]
    order += [(Work(back, 0, i),) for i in range(m - warm, m)]
    return order


def dualpipe_order(pp: int, micro_batches: int, rank: int) -> list[tuple[Work, ...]]:
    """DualPipe's chunks on ``rank`` in the eight steps of DeepSeek's ``dualpipe.DualPipe.step``.

    Half of the micro-batches enter at rank 0 (direction 0), half at rank PP−1 (direction 1); rank r holds stage r
    of direction 0 and stage PP−1−r of direction 1. "phase 0" is a rank's own direction for the first half of the
    ranks and the other one for the second half, as in the package. Each entry is one chunk (one or two works).
    """
    check_setting("dualpipe", pp, micro_batches)
    half_ranks, half_chunks = pp // 2, micro_batches // 2
    half_rank = min(rank, pp - 1 - rank)
    second_half = rank >= half_ranks
    middle = rank in (half_ranks - 1, half_ranks)
    count = {"F": [0, 0], "B": [0, 0]}
    order: list[tuple[Work, ...]] = []

    def work(what: str, phase: int, zb: bool = False) -> Work:
        direction = phase ^ second_half
        key = "F" if what == "F" else "B"
        mb = count[key][direction]
        count[key][direction] += 1
        return Work("I" if zb else what, direction, mb)

    def single(what: str, phase: int, zb: bool = False) -> None:
        order.append((work(what, phase, zb),))

    def pair(phase_f: int, phase_b: int) -> None:
        order.append((work("F", phase_f), work("B", phase_b)))

    for _ in range((half_ranks - half_rank - 1) * 2):  # step 1: nF0
        single("F", 0)
    for _ in range(half_rank + 1):  # step 2: nF0F1
        single("F", 0)
        single("F", 1)
    for _ in range(half_ranks - half_rank - 1):  # step 3: nB1W1F1 (zero bubble)
        single("B", 1, zb=True)
        order.append((Work("W", -1, -1),))
        single("F", 1)
    for i in range(half_chunks - pp + half_rank + 1):  # step 4 (main): nF0B1F1B0
        if i == 0 and middle:  # the package does not overlap these two, to shorten the bubble
            single("F", 0)
            single("B", 1)
        else:
            pair(0, 1)
        pair(1, 0)
    for _ in range(half_ranks - half_rank - 1):  # step 5: nB1F1B0
        single("B", 1)
        pair(1, 0)
    zb = False
    steps6 = half_rank + 1
    for i in range(steps6):  # step 6: nB1B0, the second half with zero bubble
        if i == steps6 // 2 and half_rank % 2 == 1:
            zb = True
        single("B", 1, zb)
        if i == steps6 // 2 and half_rank % 2 == 0:
            zb = True
        single("B", 0, zb)
    for _ in range(half_ranks - half_rank - 1):  # step 7: nWB0 (zero bubble)
        order.append((Work("W", -1, -1),))
        single("B", 0, zb=True)
    for _ in range(half_rank + 1):  # step 8: nW
        order.append((Work("W", -1, -1),))
    return _name_weights(order)


def _name_weights(order: list[tuple[Work, ...]]) -> list[tuple[Work, ...]]:
    """Give each W the micro-batch of the oldest input-backward still waiting for it (FIFO, as the package)."""
    pending, out = [], []
    for chunk in order:
        if chunk[0].what == "W":
            w = pending.pop(0)
            out.append((Work("W", w.direction, w.micro_batch),))
            continue
        pending += [w for w in chunk if w.what == "I"]
        out.append(chunk)
    return out


def _dualpipe_stage(rank: int, direction: int, pp: int) -> int:
    return rank if direction == 0 else pp - 1 - rank


def _single_stage(rank: int, direction: int, pp: int) -> int:
    return rank


# -- playing an order -------------------------------------------------------------------------------------------------
def _play(orders: list[list[tuple[Work, ...]]], pp: int, times: dict[str, float], fill_weights: bool,
          stage_of) -> list[Chunk]:
    """Discrete-event play of the ranks' orders (no communication time). The rank that is free earliest decides
    next; with ``fill_weights`` a rank whose next chunk must wait runs a pending weight-backward instead, and must
    run one before a forward once PP − rank micro-batches are in flight (1F1B's activation bound)."""
    def stage(rank: int, w: Work) -> int:
        return stage_of(rank, w.direction, pp)

    done: dict[tuple[str, int, int, int], float] = {}  # (F|B, direction, stage, micro-batch) -> end time
    free = [0.0] * pp
    nxt = [0] * pp
    pending_w: list[list[Work]] = [[] for _ in range(pp)]
    in_flight = [0] * pp
    chunks: list[Chunk] = []

    def ready(rank: int, w: Work) -> float | None:
        """When the input of ``w`` on ``rank`` is available (None: not yet known)."""
        s = stage(rank, w)
        if w.what == "F":
            return 0.0 if s == 0 else done.get(("F", w.direction, s - 1, w.micro_batch))
        if w.what in ("B", "I"):
            return 0.0 if s == pp - 1 else done.get(("B", w.direction, s + 1, w.micro_batch))
        return 0.0

    def duration(chunk: tuple[Work, ...]) -> float:
        if len(chunk) == 2:
            return times["F&B"]
        what = chunk[0].what
        return {"F": times["F"], "B": times["B"], "I": times["B"] - times["W"], "W": times["W"]}[what]

    def run(rank: int, chunk: tuple[Work, ...], start: float) -> None:
        end = start + duration(chunk)
        for w in chunk:
            if w.what in ("F", "B", "I"):
                done[("F" if w.what == "F" else "B", w.direction, stage(rank, w), w.micro_batch)] = end
            if w.what == "I" and fill_weights:
                pending_w[rank].append(Work("W", w.direction, w.micro_batch))
        in_flight[rank] += (chunk[0].what == "F") - (chunk[0].what in ("B", "W"))
        kind = "F&B" if len(chunk) == 2 else ("B" if chunk[0].what == "I" else chunk[0].what)
        chunks.append(Chunk(rank, kind, start, end, chunk))
        free[rank] = end

    total = sum(len(o) for o in orders) + (sum(sum(w.what == "I" for c in o for w in c) for o in orders)
                                          if fill_weights else 0)
    def option(r: int):
        """What rank ``r`` would do next: (start time, rank, chunk or "W"), or None while its input is unknown."""
        t = free[r]
        if nxt[r] == len(orders[r]):
            return (t, r, "W") if pending_w[r] else None
        chunk = orders[r][nxt[r]]
        deps = [ready(r, w) for w in chunk]
        must_free = fill_weights and chunk[0].what == "F" and in_flight[r] >= pp and pending_w[r]
        if must_free or (fill_weights and pending_w[r] and any(d is None or d > t for d in deps)):
            return (t, r, "W")
        if any(d is None for d in deps):
            return None
        return (max([t, *deps]), r, chunk)

    # a chunk's input comes from a neighbouring rank, so after rank r runs only r−1, r, r+1 can change their minds
    options = [option(r) for r in range(pp)]
    while len(chunks) < total:
        live = [o for o in options if o is not None]
        if not live:
            raise RuntimeError("the schedule deadlocked: every rank waits for a chunk that never runs")
        t, r, chunk = min(live, key=lambda o: (o[0], o[1]))
        if chunk == "W":
            run(r, (pending_w[r].pop(0),), t)
        else:
            nxt[r] += 1
            run(r, chunk, t)
        for q in (r - 1, r, r + 1):
            if 0 <= q < pp:
                options[q] = option(q)
    return chunks


def _peak_activations(chunks: list[Chunk]) -> int:
    """Most micro-batches (one stage each) held at once: from a forward's start until the backward that frees it
    (a full backward, or the weight part after an input backward)."""
    events = []
    split = {(w.direction, w.micro_batch) for c in chunks for w in c.works if w.what == "I"}
    for c in chunks:
        for w in c.works:
            if w.what == "F":
                events.append((c.start, 1))
            elif w.what == "B" or (w.what == "W" and (w.direction, w.micro_batch) in split):
                events.append((c.end, -1))
    level = peak = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        level += step
        peak = max(peak, level)
    return peak


def _check_schedule(schedule: str) -> None:
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r} is not one of {', '.join(map(repr, SCHEDULES))}")
