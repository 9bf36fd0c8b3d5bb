"""Table scan and aggregation: a 20-100 MB Parquet object of sales rows, grouped by a column.

Request (JSON): ``{"bucket": "faast-tables", "key": "sales.parquet", "by": "region", "min_quantity": 0}``.
Answer: per group the row count, the sum and mean of ``amount`` and the sum of ``quantity`` over the rows
whose quantity is at least ``min_quantity``, largest amount first.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

GROUP_COLUMNS = ("region", "product")


def handle(event: Any, context: Any) -> Any:
    request = event.json() or {}
    by = request.get("by", "region")
    if by not in GROUP_COLUMNS:
        return json.dumps({"error": f"by must be one of {list(GROUP_COLUMNS)}, not {by!r}"}), 400
    data = context.storage.get(request.get("bucket", "faast-tables"), request.get("key", "sales.parquet"))
    table = pq.read_table(pa.BufferReader(data), columns=[by, "amount", "quantity"])
    kept = table.filter(pc.greater_equal(table["quantity"], int(request.get("min_quantity", 0))))
    grouped = kept.group_by(by).aggregate(
        [("amount", "count"), ("amount", "sum"), ("amount", "mean"), ("quantity", "sum")]
    )
    rows = sorted(grouped.to_pylist(), key=lambda row: -row["amount_sum"])
    return {
        "rows_scanned": table.num_rows,
        "rows_kept": kept.num_rows,
        "groups": [
            {
                by: row[by],
                "count": row["amount_count"],
                "amount_sum": round(row["amount_sum"], 2),
                "amount_mean": round(row["amount_mean"], 4),
                "quantity_sum": row["quantity_sum"],
            }
            for row in rows
        ],
    }
