"""Group a device's points into as few Modbus read requests as its limits allow."""

from __future__ import annotations

from dataclasses import dataclass

from drivers.modbus.register_map import BIT_TABLES, Point, RequestLimits


@dataclass(slots=True, frozen=True)
class ReadRequest:
    """One read of ``count`` registers/bits from ``address`` on a slave's table.

    ``points`` pairs each point with its index inside the response.
    """

    slave: int
    table: str
    address: int
    count: int
    points: tuple[tuple[Point, int], ...]


def plan_reads(points: list[Point], limits: RequestLimits) -> list[ReadRequest]:
    """Merge points that are close on the same slave and table into shared requests.

    Two points share a request when the gap between them is at most
    ``limits.max_gap`` and the whole request stays within the size limit.
    """
    groups: dict[tuple[int, str], list[Point]] = {}
    for p in points:
        groups.setdefault((p.slave, p.table), []).append(p)
    plan: list[ReadRequest] = []
    for (slave, table), members in sorted(groups.items()):
        members.sort(key=lambda p: (p.address, p.bit or 0))
        max_count = limits.max_bits if table in BIT_TABLES else limits.max_registers
        start = end = -1
        batch: list[Point] = []
        for p in members:
            p_end = p.address + p.width
            fits = (batch and p.address - end <= limits.max_gap
                    and max(end, p_end) - start <= max_count)
            if not fits and batch:
                plan.append(_request(slave, table, start, end, batch))
                batch = []
            if not batch:
                start, end = p.address, p_end
            batch.append(p)
            end = max(end, p_end)
        if batch:
            plan.append(_request(slave, table, start, end, batch))
    return plan


def _request(slave: int, table: str, start: int, end: int, batch: list[Point]) -> ReadRequest:
    return ReadRequest(slave, table, start, end - start,
                       tuple((p, p.address - start) for p in batch))


def answer_data_bytes(points: list[Point], limits: RequestLimits) -> list[int]:
    """Data bytes in the answer to each read request one poll makes (for line-time sums)."""
    return [(req.count + 7) // 8 if req.table in BIT_TABLES else 2 * req.count
            for req in plan_reads(points, limits)]
