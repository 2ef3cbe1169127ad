#!/usr/bin/env python3
"""Render the raw outputs of scripts/bench.sh as one markdown report.

Usage: report.py RAW_DIR ELAPSED_SECONDS > latest.md

Reads capctl's JSON, pgbench's text output and the small files bench.sh
writes; a missing piece shows as "n/a" rather than failing the report.
"""

import json
import re
import sys
from pathlib import Path

RAW = Path(sys.argv[1])
ELAPSED = int(sys.argv[2]) if len(sys.argv) > 2 else 0

# Targets: reported, never asserted.
INVENTORY_RATIO = 0.8
# Hot product at 1 in flight against the single-statement ceiling at 1 client.
CEILING_RATIO_HOT_C1 = 0.8
# Flash sale on the default configuration (optimistic, coalescing on), 64 in flight.
FLASH_P99_MS = 50.0
FLASH_CEILING_RATIO = 1.0
DEFAULT_STRATEGY = "optimistic"
FANOUT_RATIO = 0.8
LAG_P99_SECS = 1.0
READ_P99_MS = 10.0
RSS_MB = 150.0
CELEBRITY_VISIBLE_P99_SECS = 1.0


def load_json(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_text(path):
    try:
        return path.read_text().strip()
    except OSError:
        return None


def num(value, digits=0):
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def verdict(ok):
    if ok is None:
        return ""
    return "ok" if ok else "**below target**"


def pgbench_numbers(text):
    if not text:
        return None, None
    processed = re.search(r"number of transactions actually processed: (\d+)", text)
    latency = re.search(r"latency average = ([\d.]+) ms", text)
    return (
        int(processed.group(1)) if processed else None,
        float(latency.group(1)) if latency else None,
    )


ORDER = {"optimistic": 0, "pessimistic": 1, "guarded": 2, "hot": 0, "spread": 1}


def cell_key(path):
    _, strategy, workload, conc = path.name.split(".")[0].split("-")
    return (ORDER.get(strategy, 9), ORDER.get(workload, 9), int(conc[1:]))


def ceiling_rate(workload, clients):
    """The single-statement ceiling (pgbench, guarded UPDATE alone) of one cell, per second."""
    cell = load_json(RAW / f"ceiling-{workload}-c{clients}.json") or {}
    return cell.get("tps")


# Relative to bench/results/latest.md, where the report is written.
CHARTS = "../../docs/charts"


def chart_link(name, title):
    return f"![{title}]({CHARTS}/{name})\n"


meta = load_json(RAW / "meta.json") or {}
secs = meta.get("secs", 0) or 1
out = []
out.append("# `make bench` results\n")
out.append(
    f"Run {meta.get('started', '?')} on {meta.get('cpus', '?')} CPU(s) "
    f"({meta.get('cpu_model', '?')}), PostgreSQL {meta.get('postgres', '?')}; "
    f"{secs} s measured per cell; whole run {ELAPSED // 60} min {ELAPSED % 60} s.\n"
)

# ------------------------------------------------------------------ inventory
ceilings = sorted(
    (load_json(path) or {} for path in RAW.glob("ceiling-*-c*.json")),
    key=lambda c: (ORDER.get(c.get("workload"), 9), c.get("clients", 0)),
)
if ceilings:
    out.append("## Inventory: the single-statement ceiling\n")
    out.append(
        "pgbench running only `UPDATE products SET available = available - 1, reserved = "
        "reserved + 1, version = version + 1 WHERE sku = $1 AND available >= 1` "
        "(`bench/pgbench/ceiling.sql`: autocommit, `-M prepared`), one unit per statement: "
        "the least the database can do per unit taken, one row lock each.\n"
    )
    out.append("| workload | clients | statements/s | avg ms |")
    out.append("|---|--:|--:|--:|")
    for ceiling in ceilings:
        out.append(
            f"| {ceiling.get('workload', '?')} | {ceiling.get('clients', '?')} "
            f"| {num(ceiling.get('tps'))} | {num(ceiling.get('latency_avg_ms'), 2)} |"
        )
    out.append("")

cells = sorted(RAW.glob("inventory-*-c*.service.json"))
if cells:
    out.append("## Inventory: reservations per second, service vs pgbench\n")
    out.append(
        "One unit per reservation, hot = one sku, spread = 10,000 skus; the service "
        "through HTTP (`capctl reserve-load`), pgbench running the service's own "
        "statements (`bench/pgbench/<strategy>.sql`) at the same concurrency. "
        "÷ own statements compares the service with that pgbench; ÷ ceiling with the "
        "single guarded `UPDATE` above at the same concurrency. "
        f"Targets: spread ≥ {INVENTORY_RATIO}× own statements; hot at 1 in flight "
        f"≥ {CEILING_RATIO_HOT_C1}× the ceiling (other hot cells: ≥ {INVENTORY_RATIO}× own "
        "statements, as before).\n"
    )
    out.append(
        "| strategy | workload | in flight | service holds/s | p50 ms | p99 ms "
        "| conflicts | retries | 503s | oversold | pgbench holds/s | pgbench lost CAS "
        "| pgbench avg ms | ÷ own statements | ÷ ceiling | |"
    )
    out.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
    for path in sorted(cells, key=cell_key):
        stem = path.name[: -len(".service.json")]
        _, strategy, workload, conc = stem.split("-")
        service = load_json(path) or {}
        holds = read_text(RAW / f"{stem}.pgbench.holds")
        processed, pg_latency = pgbench_numbers(read_text(RAW / f"{stem}.pgbench.txt"))
        pg_rate = int(holds) / secs if holds else None
        lost = processed - int(holds) if processed is not None and holds else None
        rate = service.get("reservations_per_sec")
        ratio = rate / pg_rate if rate is not None and pg_rate else None
        ceiling = ceiling_rate(workload, conc[1:])
        to_ceiling = rate / ceiling if rate is not None and ceiling else None
        if workload == "hot" and conc == "c1":
            ok = None if to_ceiling is None else to_ceiling >= CEILING_RATIO_HOT_C1
        else:
            ok = None if ratio is None else ratio >= INVENTORY_RATIO
        latency = service.get("latency", {})
        out.append(
            f"| {strategy} | {workload} | {conc[1:]} | {num(rate)} | {num(latency.get('p50_ms'), 2)} "
            f"| {num(latency.get('p99_ms'), 2)} | {num(service.get('conflicts'))} "
            f"| {num(service.get('retries'))} | {num(service.get('unavailable'))} "
            f"| {read_text(RAW / f'{stem}.oversold') or 'n/a'} | {num(pg_rate)} | {num(lost)} "
            f"| {num(pg_latency, 2)} | {num(ratio, 2)} | {num(to_ceiling, 2)} "
            f"| {verdict(ok)} |"
        )
    out.append("")
    for workload in ("hot", "spread"):
        out.append(
            chart_link(
                f"inventory-throughput-{workload}.svg",
                f"holds/s against requests in flight, {workload}, with the ceiling",
            )
        )

# ------------------------------------------------------------------ flash sale
FLASH_ORDER = {"on": 0, "off": 1}
flash_cells = sorted(
    (load_json(path) or {} for path in RAW.glob("flash-sale-*-r*.json")
     if not path.name.endswith(".capctl.json")),
    key=lambda c: (
        c.get("replicas", 1),
        ORDER.get(c.get("strategy"), 9),
        FLASH_ORDER.get(c.get("coalescing"), 9),
    ),
)
if flash_cells:
    first = next((c["report"] for c in flash_cells if c.get("report")), {})
    hot_ceiling = ceiling_rate("hot", first.get("concurrency", 64))
    out.append("## Inventory: flash sale\n")
    out.append(
        f"`capctl flash-sale`: {num(first.get('stock_per_product'))} units of one product, "
        f"{num(first.get('buyers'))} buyers of one unit, {first.get('concurrency', '?')} in "
        "flight; an inventory started for each cell with `RESERVATION_STRATEGY` and "
        "`RESERVATION_COALESCING`, on a fresh database (the replicated cell: several "
        "inventories on one database, the buyers round-robin over them). holds/s counts the "
        "`201`s from the start until the last one (while there was stock); requests/s every "
        "answer over the whole sale. Conflicts are the services' "
        "`inventory_transaction_conflicts_total` delta; oversold is counted in the database "
        "after the sale. ÷ ceiling: holds/s over the single-statement ceiling on the hot "
        f"row at {first.get('concurrency', '?')} clients ({num(hot_ceiling)}/s). Targets on "
        f"the default strategy ({DEFAULT_STRATEGY}, coalescing on): p99 ≤ {FLASH_P99_MS:g} "
        f"ms, no 503, ≥ {FLASH_CEILING_RATIO:g}× the ceiling; oversold 0 in every cell.\n"
    )
    out.append(
        "| strategy | coalescing | replicas | holds/s | ÷ ceiling | requests/s | p50 ms "
        "| p95 ms | p99 ms | 503s | conflicts | requests per batch | oversold (db) "
        "| taken (db) | |"
    )
    out.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
    for cell in flash_cells:
        report = cell.get("report") or {}
        latency = report.get("latency", {})
        holds = report.get("holds_per_sec")
        to_ceiling = holds / hot_ceiling if holds is not None and hot_ceiling else None
        oversold = cell.get("oversold_db")
        if not report:
            mark = "**no report**"
        elif oversold != 0 or not report.get("invariant_holds", False):
            mark = "**OVERSOLD / invariant violated**"
        elif cell.get("strategy") == DEFAULT_STRATEGY and cell.get("coalescing") == "on":
            p99 = latency.get("p99_ms")
            mark = verdict(
                p99 is not None and p99 <= FLASH_P99_MS
                and report.get("unavailable") == 0
                and to_ceiling is not None and to_ceiling >= FLASH_CEILING_RATIO
            )
        else:
            mark = "ok"
        out.append(
            f"| {cell.get('strategy', '?')} | {cell.get('coalescing', '?')} "
            f"| {cell.get('replicas', '?')} | {num(holds)} | {num(to_ceiling, 2)} "
            f"| {num(report.get('requests_per_sec'))} | {num(latency.get('p50_ms'), 2)} "
            f"| {num(latency.get('p95_ms'), 2)} | {num(latency.get('p99_ms'), 2)} "
            f"| {num(report.get('unavailable'))} | {num(report.get('conflicts'))} "
            f"| {num(report.get('batch_size_mean'), 1)} | {num(oversold)} "
            f"| {num(cell.get('taken_db'))} | {mark} |"
        )
    out.append("")
    out.append(
        "requests per batch: n/a when the service exposes no "
        "`inventory_reservation_batch_size` (coalescing off, or a service without it).\n"
    )
    out.append(chart_link("flash-sale-throughput.svg", "flash sale holds/s per cell, with the ceiling"))
    out.append(chart_link("flash-sale-latency.svg", "flash sale latency percentiles per cell"))

# ------------------------------------------------------------------ timeline
if (RAW / "timeline-post.json").exists():
    post = load_json(RAW / "timeline-post.json") or {}
    raw = load_json(RAW / "timeline-raw.json") or {}
    lag = load_json(RAW / "timeline-lag.json") or {}
    reads = []
    for path in RAW.glob("timeline-read-*-c*.json"):
        consistency, conc = path.stem[len("timeline-read-"):].rsplit("-c", 1)
        reads.append((int(conc), consistency != "one", consistency, load_json(path) or {}))
    reads.sort(key=lambda r: r[:2])

    out.append("## Timeline\n")
    out.append("| measure | service | ceiling / target | ratio | |")
    out.append("|---|--:|--:|--:|---|")
    post_latency = post.get("latency", {})
    out.append(
        f"| post accept rate, {post.get('concurrency', '?')} in flight "
        f"(p50 / p99 ms) | {num(post.get('posts_per_sec'))} posts/s "
        f"({num(post_latency.get('p50_ms'), 1)} / {num(post_latency.get('p99_ms'), 1)}) | | | |"
    )
    deliveries = post.get("deliveries_per_sec")
    backlog = post.get("backlog_deliveries_per_sec")
    raw_rate = raw.get("rows_per_sec")
    fan_ratio = backlog / raw_rate if backlog is not None and raw_rate else None
    out.append(
        f"| fan-out deliveries: worker draining its backlog alone vs raw-driver loop at "
        f"{raw.get('concurrency', '?')} in flight ({post.get('users', '?')} users, "
        f"{post.get('follow_edges', '?')} follows) | {num(backlog)} rows/s "
        f"| {num(raw_rate)} rows/s | {num(fan_ratio, 2)} "
        f"| {verdict(None if fan_ratio is None else fan_ratio >= FANOUT_RATIO)} |"
    )
    out.append(
        f"| fan-out deliveries from the first post to the last row (API posting alongside) "
        f"| {num(deliveries)} rows/s | | | |"
    )
    lag_p50, lag_p99 = lag.get("lag_p50_secs"), lag.get("lag_p99_secs")
    out.append(
        f"| fan-out lag p50 / p99 at {num(lag.get('post_rate_target'))} posts/s "
        f"(achieved {num(lag.get('post_rate_achieved'))}; half the peak) "
        f"| ≤{num(lag_p50, 3)} / ≤{num(lag_p99, 3)} s | p99 ≤ {LAG_P99_SECS} s | "
        f"| {verdict(None if lag_p99 is None else lag_p99 <= LAG_P99_SECS)} |"
    )
    for _, _, consistency, read in reads:
        latency = read.get("latency", {})
        p99 = latency.get("p99_ms")
        target = f"p99 ≤ {READ_P99_MS:g} ms" if consistency == "one" else ""
        ok = None if p99 is None or consistency != "one" else p99 <= READ_P99_MS
        out.append(
            f"| timeline read p50 / p99 at `{consistency}`, {read.get('concurrency', '?')} in flight "
            f"({num(read.get('reads_per_sec'))} reads/s) "
            f"| {num(latency.get('p50_ms'), 2)} / {num(p99, 2)} ms | {target} | | {verdict(ok)} |"
        )
    out.append("")
    saturated_lag = (
        f"≤{num(post['lag_p99_secs'], 3)} s"
        if post.get("lag_p99_secs") is not None
        else "beyond the histogram's largest bucket"
    )
    out.append(
        f"Fan-out lag converged: {lag.get('converged', 'n/a')}, missing {lag.get('missing', 'n/a')}, "
        f"duplicates {lag.get('duplicates', 'n/a')}. Post-load fan-out drained: "
        f"{post.get('drained', 'n/a')} ({num(post.get('rows_written'))} of "
        f"{num(post.get('expected_rows'))} rows in {num(post.get('drain_secs'), 1)} s; lag p99 while "
        f"saturated {saturated_lag}).\n"
    )
    if lag.get("lag_histogram"):
        out.append(chart_link("fanout-lag.svg", "fan-out lag distribution"))

# ------------------------------------------------------------------ relay catch-up
if (RAW / "relay-measure.json").exists() or (RAW / "relay-post.json").exists():
    relay_config = load_json(RAW / "relay-config.json") or {}
    graph = load_json(RAW / "relay-graph.json") or {}
    posted = load_json(RAW / "relay-post.json") or {}
    caught = load_json(RAW / "relay-measure.json") or {}
    out.append("## Timeline: outbox relay catch-up after a NATS outage\n")
    out.append(
        f"One author, {graph.get('followers', '?')} followers, on a nats-server of the "
        "bench's own; nats-server stopped, posts accepted into the outbox, nats-server "
        "started again; times from the moment it listens. Relay settings: "
        f"`OUTBOX_RELAY_AFTER_SECS={relay_config.get('relay_after_secs', '?')}`, "
        f"`OUTBOX_RELAY_INTERVAL_MS={relay_config.get('relay_interval_ms', '?')}`, "
        f"`OUTBOX_SHARDS={relay_config.get('shards', '?')}`.\n"
    )
    out.append("| measure | result | target | |")
    out.append("|---|--:|--:|---|")
    post_latency = posted.get("latency", {})
    accepted = posted.get("accepted")
    out.append(
        f"| posts accepted while NATS was down, {posted.get('concurrency', '?')} in flight "
        f"(p50 / p99 ms) | {num(accepted)} of {num(posted.get('posts'))}, "
        f"{num(posted.get('posts_per_sec'))} posts/s ({num(post_latency.get('p50_ms'), 1)} / "
        f"{num(post_latency.get('p99_ms'), 1)}) | every post | "
        f"{verdict(None if accepted is None else accepted == posted.get('posts'))} |"
    )
    out.append(
        f"| fan-out messages left in the outbox | {num(posted.get('deferred'))} | | |"
    )
    out.append(
        f"| API reconnected to NATS | {num(caught.get('api_reconnected_secs'), 2)} s | | |"
    )
    out.append(
        f"| relay throughput (first to last post relayed) | "
        f"{num(caught.get('relay_posts_per_sec'))} posts/s | | |"
    )
    out.append(
        f"| outbox empty ({num(caught.get('relayed'))} posts relayed) | "
        f"{num(caught.get('all_relayed_secs'), 2)} s after NATS returned "
        f"({num(caught.get('catchup_posts_per_sec'))} posts/s) | | |"
    )
    out.append(
        f"| every follower converged ({num(caught.get('expected_rows'))} rows) | "
        f"{num(caught.get('converged_secs'), 2)} s after NATS returned | | "
        f"{verdict(caught.get('converged'))} |"
    )
    missing, unexpected = caught.get("missing"), caught.get("unexpected")
    out.append(
        f"| posts missing / unexpected in followers' timelines | {num(missing)} / "
        f"{num(unexpected)} | 0 / 0 | "
        f"{verdict(None if missing is None else missing == 0 and unexpected == 0)} |"
    )
    if caught.get("nats_up_at_start"):
        out.append("\nNATS was already up when the measurement started: times start late.")
    out.append("")

# ------------------------------------------------------------------ celebrity
if (RAW / "celebrity-load.json").exists():
    celebrity_config = load_json(RAW / "celebrity-config.json") or {}
    loaded = load_json(RAW / "celebrity-load.json") or {}
    seen = load_json(RAW / "celebrity-reads.json") or {}
    celebrity_read = load_json(RAW / "celebrity-read.json") or {}
    visibility = seen.get("visibility", {})
    out.append(
        f"## Timeline: a celebrity with {num(loaded.get('followers'))} followers\n"
    )
    out.append(
        "The follow graph written straight to Cassandra (`capctl follower-load`); the "
        "worker marks the author a celebrity on its first post "
        f"(`FANOUT_CELEBRITY_THRESHOLD={celebrity_config.get('threshold', '?')}`"
        f"{', already one from an earlier run' if loaded.get('already_celebrity') else ''}), "
        "and the API merges its posts into followers' timelines at read time "
        f"(`TIMELINE_CELEBRITY_REFRESH_MS={celebrity_config.get('refresh_ms', '?')}`).\n"
    )
    out.append("| measure | result | target | |")
    out.append("|---|--:|--:|---|")
    out.append(
        f"| follow graph loaded ({num(loaded.get('rows'))} rows, `following` + "
        f"`followers`) | {num(loaded.get('secs'), 1)} s, {num(loaded.get('rows_per_sec'))} "
        f"rows/s | | |"
    )
    out.append(
        f"| compactions the load set off, done (measured after them) | "
        f"{num(loaded.get('settle_secs'), 1)} s after the writes | | "
        f"{verdict(loaded.get('settled'))} |"
    )
    out.append(
        f"| first post shown (worker marks the author, API refreshes its celebrity set) "
        f"| {num(seen.get('first_post_visible_secs'), 2)} s | | |"
    )
    p99 = visibility.get("p99_ms")
    out.append(
        f"| post `202` → seen on a follower's first page, p50 / p99 "
        f"({num(seen.get('posts'))} posts × {num(seen.get('sample'))} sampled followers, "
        f"after {num(seen.get('earlier_posts'))} earlier posts, "
        f"{num(seen.get('concurrency'))} reads in flight) "
        f"| {num(visibility.get('p50_ms'), 1)} / {num(p99, 1)} ms "
        f"| p99 ≤ {CELEBRITY_VISIBLE_P99_SECS:g} s "
        f"| {verdict(None if p99 is None else p99 <= CELEBRITY_VISIBLE_P99_SECS * 1000 and seen.get('not_seen') == 0)} |"
    )
    rows = seen.get("rows_written")
    out.append(
        f"| timeline rows the worker wrote for the celebrity's "
        f"{num((seen.get('posts') or 0) + (seen.get('earlier_posts') or 0))} posts "
        f"| {num(rows)} | 0 | "
        f"{verdict(None if rows is None else rows == 0)} |"
    )
    latency = celebrity_read.get("latency", {})
    p99 = latency.get("p99_ms")
    out.append(
        f"| followers' timeline read p50 / p99 at `one`, "
        f"{num(celebrity_read.get('concurrency'))} in flight "
        f"({num(celebrity_read.get('reads_per_sec'))} reads/s) "
        f"| {num(latency.get('p50_ms'), 2)} / {num(p99, 2)} ms | p99 ≤ {READ_P99_MS:g} ms "
        f"| {verdict(None if p99 is None else p99 <= READ_P99_MS)} |"
    )
    out.append(
        f"\nStale reads while looking for a post: {num(seen.get('stale_reads'))}; "
        f"not seen within the timeout: {num(seen.get('not_seen'))}; worker skipped "
        f"{num(seen.get('celebrity_skips'))} posts as a celebrity's.\n"
    )

# ------------------------------------------------------------- replication
replication = RAW / "replication.md"
if replication.exists():
    text = replication.read_text()
    table = [
        line
        for line in text.split("## pg-sync-cost", 1)[-1].split("\n## ", 1)[0].splitlines()
        if line.startswith("|")
    ]
    out.append("## The cost of synchronous replication (CAP lab, `pg-sync-cost`)\n")
    out.append(
        "`capctl flash-sale` against the inventory on one PostgreSQL server and on the "
        "lab's 3-node Patroni cluster (strict synchronous replication, through HAProxy), "
        "same run.\n"
    )
    out.extend(table if table else ["(the lab did not print its table: see raw/replication.log)"])
    out.append("")

# ------------------------------------------------------------------ memory
out.append("## Peak RSS (VmHWM)\n")
out.append("| process | MB | |")
out.append("|---|--:|---|")
for path in sorted(RAW.glob("rss-*")):
    value = read_text(path)
    mb = float(value) if value else None
    out.append(
        f"| {path.name[4:]} | {num(mb, 1)} | "
        f"{verdict(None if mb is None else mb <= RSS_MB)} |"
    )
out.append("")
print("\n".join(out))
