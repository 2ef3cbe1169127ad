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
FANOUT_RATIO = 0.8
LAG_P99_SECS = 1.0
READ_P99_MS = 10.0
RSS_MB = 150.0


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
out.append("## Inventory: reservations per second, service vs pgbench\n")
out.append(
    "One unit per reservation, hot = one sku, spread = 10,000 skus; the service "
    "through HTTP (`capctl reserve-load`), pgbench running the service's own "
    "statements (`bench/pgbench/<strategy>.sql`) at the same concurrency. "
    f"Target: service ≥ {INVENTORY_RATIO}× pgbench.\n"
)
out.append(
    "| strategy | workload | in flight | service holds/s | p50 ms | p99 ms "
    "| conflicts | retries | 503s | oversold | pgbench holds/s | pgbench lost CAS "
    "| pgbench avg ms | ratio | |"
)
out.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
cells = sorted(RAW.glob("inventory-*-c*.service.json"))
order = {"optimistic": 0, "pessimistic": 1, "guarded": 2, "hot": 0, "spread": 1}


def cell_key(path):
    _, strategy, workload, conc = path.name.split(".")[0].split("-")
    return (order.get(strategy, 9), order.get(workload, 9), int(conc[1:]))


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
    latency = service.get("latency", {})
    out.append(
        f"| {strategy} | {workload} | {conc[1:]} | {num(rate)} | {num(latency.get('p50_ms'), 2)} "
        f"| {num(latency.get('p99_ms'), 2)} | {num(service.get('conflicts'))} "
        f"| {num(service.get('retries'))} | {num(service.get('unavailable'))} "
        f"| {read_text(RAW / f'{stem}.oversold') or 'n/a'} | {num(pg_rate)} | {num(lost)} "
        f"| {num(pg_latency, 2)} | {num(ratio, 2)} "
        f"| {verdict(None if ratio is None else ratio >= INVENTORY_RATIO)} |"
    )
out.append("")

# ------------------------------------------------------------------ timeline
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
