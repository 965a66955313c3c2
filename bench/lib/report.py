#!/usr/bin/env python3
"""Turns bench/run's raw measurements into the ratio table (stdout) and the results file.

    report.py RAW_TSV META_TSV OUT_MD

RAW_TSV: `metric<TAB>server<TAB>round<TAB>value` lines; META_TSV: `key<TAB>value` lines.
Every figure reported is the median over the rounds; the raw values are listed too.
"""
import statistics
import sys
from collections import OrderedDict, defaultdict

SERVERS = ["acr", "proxy", "nginx", "upstream"]
NAMES = {
    "acr": "acr",
    "proxy": "distribution proxy",
    "nginx": "nginx (sendfile)",
    "upstream": "upstream direct",
}

# Rows whose acr / direct ratio is shown (the upstream is their baseline).
VERSUS_DIRECT = {"pull", "range_start", "range_end", "range_start_upstream_mib", "range_end_upstream_mib"}

# metric -> (label, unit, higher is better)
METRICS = OrderedDict(
    [
        ("hit1", ("Blob cache hit, 1 client", "MiB/s", True)),
        ("hit16", ("Blob cache hit, {hit_clients} clients (aggregate)", "MiB/s", True)),
        ("cpu_hit16", ("Server CPU time per GiB served, {hit_clients} hits", "s/GiB", False)),
        ("tag_rps", ("Manifest by tag (cache hit in acr)", "req/s", True)),
        ("tag_p50", ("Manifest by tag, p50", "ms", False)),
        ("tag_p99", ("Manifest by tag, p99", "ms", False)),
        ("tag_verify_rps", ("Manifest by tag with .verify (a kept decision)", "req/s", True)),
        ("tag_verify_p99", ("Manifest by tag with .verify, p99", "ms", False)),
        ("tag_upstream_per_1k", ("Manifest by tag: upstream requests per 1000", "req", False)),
        ("digest_rps", ("Manifest by digest", "req/s", True)),
        ("digest_p50", ("Manifest by digest, p50", "ms", False)),
        ("digest_p99", ("Manifest by digest, p99", "ms", False)),
        ("hit1_tls", ("Blob cache hit over https, 1 client", "MiB/s", True)),
        ("hit16_tls", ("Blob cache hit over https, {hit_clients} clients (aggregate)", "MiB/s", True)),
        ("tag_tls_rps", ("Manifest by tag over https", "req/s", True)),
        ("tag_tls_p99", ("Manifest by tag over https, p99", "ms", False)),
        ("digest_tls_rps", ("Manifest by digest over https", "req/s", True)),
        ("digest_tls_p99", ("Manifest by digest over https, p99", "ms", False)),
        ("pull", ("Cold pull, 8 layers / 156 MiB, skopeo (upstream = direct)", "s", False)),
        ("rss_hit16", ("Peak RSS during {hit_clients} cache-hit GETs", "MiB", False)),
        ("rss_cold16", ("Peak RSS during {hit_clients} cold GETs (one miss, all follow)", "MiB", False)),
        ("cold16", ("{hit_clients} cold GETs, aggregate", "MiB/s", True)),
        ("cold16_upstream_gets", ("{hit_clients} cold GETs: upstream GETs of the blob", "req", False)),
        ("cold32", ("{cold_clients} cold GETs, aggregate", "MiB/s", True)),
        ("cold32_upstream_gets", ("{cold_clients} cold GETs: upstream GETs of the blob", "req", False)),
        ("cold32_upstream_heads", ("{cold_clients} cold GETs: upstream HEADs of the blob", "req", False)),
        ("fleet48", ("{fleet} replicas, {fleet_clients} cold GETs, aggregate", "MiB/s", True)),
        ("fleet48_upstream_gets", ("{fleet} replicas, {fleet_clients} cold GETs: upstream GETs", "req", False)),
        ("range_start", ("Cold 1 MiB range at the start of the {blob_mib} MiB blob, upstream at 100 MiB/s", "ms", False)),
        ("range_end", ("Cold 1 MiB range at the end of the {blob_mib} MiB blob, upstream at 100 MiB/s", "ms", False)),
        ("range_start_upstream_mib", ("Cold range at the start: MiB the upstream sent (direct column: blob + range)", "MiB", False)),
        ("range_end_upstream_mib", ("Cold range at the end: MiB the upstream sent (direct column: blob + range)", "MiB", False)),
    ]
)


def fmt(v):
    if v is None:
        return ""
    if abs(v) >= 100:
        return "%.0f" % v
    if abs(v) >= 10:
        return "%.1f" % v
    return "%.2f" % v


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def main():
    raw_path, meta_path, out_path = sys.argv[1:4]
    values = defaultdict(list)  # (metric, server) -> [(round, value)]
    with open(raw_path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 4:
                continue
            metric, server, rnd, val = parts
            values[(metric, server)].append((int(rnd), float(val)))
    meta = {}
    with open(meta_path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("\t")
            meta[k] = v

    def med(metric, server):
        vs = values.get((metric, server))
        return statistics.median(v for _, v in vs) if vs else None

    def label(metric):
        return METRICS[metric][0].format(**meta)

    # ---- the ratio table
    head = "| measurement | unit | acr | distribution proxy | nginx | upstream direct | acr / proxy | acr / nginx | acr / direct |"
    sep = "|---|---|--:|--:|--:|--:|--:|--:|--:|"
    rows = [head, sep]
    for metric, (_, unit, _) in METRICS.items():
        if not any((metric, s) in values for s in SERVERS):
            continue
        m = {s: med(metric, s) for s in SERVERS}
        r_proxy = ratio(m["acr"], m["proxy"])
        r_nginx = ratio(m["acr"], m["nginx"])
        r_direct = ratio(m["acr"], m["upstream"]) if metric in VERSUS_DIRECT else None
        rows.append(
            "| %s | %s | %s | %s | %s | %s | %s | %s | %s |"
            % (
                label(metric),
                unit,
                fmt(m["acr"]),
                fmt(m["proxy"]),
                fmt(m["nginx"]),
                fmt(m["upstream"]),
                ("%.2fx" % r_proxy) if r_proxy is not None else "",
                ("%.2fx" % r_nginx) if r_nginx is not None else "",
                ("%.2fx" % r_direct) if r_direct is not None else "",
            )
        )
    table = "\n".join(rows)

    # ---- goals
    goals = []

    def goal(text, ok, detail):
        goals.append("| %s | %s | %s |" % (text, "**pass**" if ok else "**miss**", detail))

    for metric, n in (("hit1", "1 client"), ("hit16", "%s clients" % meta["hit_clients"])):
        a, p, g = med(metric, "acr"), med(metric, "proxy"), med(metric, "nginx")
        if a is not None and p:
            goal("cache-hit throughput >= 2x distribution proxy (%s)" % n, a >= 2 * p, "%.2fx (%s vs %s MiB/s)" % (a / p, fmt(a), fmt(p)))
        if a is not None and g:
            goal("cache-hit throughput >= 0.8x nginx (%s)" % n, a >= 0.8 * g, "%.2fx (%s vs %s MiB/s)" % (a / g, fmt(a), fmt(g)))
    a, p = med("tag_rps", "acr"), med("tag_rps", "proxy")
    if a is not None and p:
        goal("manifest by tag >= 5x distribution proxy", a >= 5 * p, "%.2fx (%s vs %s req/s)" % (a / p, fmt(a), fmt(p)))
    a, b = med("tag_verify_rps", "acr"), med("tag_rps", "acr")
    if a is not None and b:
        goal("manifest by tag with .verify >= 0.9x acr without .verify", a >= 0.9 * b, "%.2fx (%s vs %s req/s)" % (a / b, fmt(a), fmt(b)))
    for kind, over, floor in (("tag", "", 0.5), ("digest", "", 0.5), ("tag", "_tls", 1.0), ("digest", "_tls", 1.0)):
        a, g = med(kind + over + "_rps", "acr"), med(kind + over + "_rps", "nginx")
        pa, pg = med(kind + over + "_p99", "acr"), med(kind + over + "_p99", "nginx")
        if a is not None and g:
            where = " over https" if over else ""
            goal(
                "manifest by %s%s >= %.1fx nginx, p99 no worse" % (kind, where, floor),
                a >= floor * g and (pa is None or pg is None or pa <= pg),
                "%.2fx (%s vs %s req/s), p99 %s vs %s ms" % (a / g, fmt(a), fmt(g), fmt(pa), fmt(pg)),
            )
    for metric, n in (("hit1_tls", "1 client"), ("hit16_tls", "%s clients" % meta["hit_clients"])):
        a, g = med(metric, "acr"), med(metric, "nginx")
        if a is not None and g:
            goal("cache-hit throughput over https >= 1.0x nginx (%s)" % n, a >= g, "%.2fx (%s vs %s MiB/s)" % (a / g, fmt(a), fmt(g)))
    a, d = med("pull", "acr"), med("pull", "upstream")
    if a is not None and d:
        goal("cold pull <= 1.1x direct", a <= 1.1 * d, "%.2fx (%s vs %s s)" % (a / d, fmt(a), fmt(d)))
    for where in ("start", "end"):
        a, d = med("range_" + where, "acr"), med("range_" + where, "upstream")
        if a is not None and d and where == "start":
            goal("cold 1 MiB range at the start <= 1.2x direct", a <= 1.2 * d, "%.2fx (%s vs %s ms)" % (a / d, fmt(a), fmt(d)))
        a, d = med("range_%s_upstream_mib" % where, "acr"), med("range_%s_upstream_mib" % where, "upstream")
        if a is not None and d:
            goal("cold range at the %s: the upstream sends at most the blob once plus the range" % where, a <= d, "%.3fx (%s vs %s MiB)" % (a / d, fmt(a), fmt(d)))
    a = med("rss_hit16", "acr")
    if a is not None:
        size = "%s x %s MiB" % (meta["hit_clients"], meta["blob_mib"])
        note = "" if meta["blob_mib"] == "1024" else " (this run: %s, not 1 GiB)" % size
        goal("peak RSS < 64 MiB at 16 x 1 GiB cache hits" + note, a < 64, "%s MiB (idle %s MiB)" % (fmt(a), meta.get("acr_idle_rss", "?")))
    goal_table = "\n".join(["| goal | result | acr vs reference |", "|---|---|---|"] + goals)

    # ---- raw values
    raw = ["| measurement | server | median | rounds |", "|---|---|--:|---|"]
    for metric, (_, unit, _) in METRICS.items():
        for s in SERVERS:
            vs = values.get((metric, s))
            if not vs:
                continue
            raw.append(
                "| %s (%s) | %s | %s | %s |"
                % (label(metric), unit, NAMES[s], fmt(med(metric, s)), ", ".join(fmt(v) for _, v in sorted(vs)))
            )
    raw_table = "\n".join(raw)

    mode = "quick (BENCH_QUICK=1)" if meta.get("quick") == "1" else "full"
    elapsed = int(float(meta.get("elapsed_s", "0")))
    doc = f"""# acr benchmark results

Generated by `bench/run` (see `bench/README.md`); every number is the median of
{meta['rounds']} rounds. Rerunning the command overwrites this file.

- date: {meta['date']}
- command: `{meta['command']}` ({mode}; {elapsed // 60} min {elapsed % 60} s in all, set-up and build included)
- machine: {meta['nproc']} CPUs ({meta['cpu']}), {meta['ram']} RAM, kernel {meta['kernel']};
  load average at the start {meta.get('loadavg_start', '?')}, at the end {meta['loadavg_end']} (the machine is shared: expect noise)
- acr: commit {meta['acr_commit']}, release build; idle RSS after start {meta.get('acr_idle_rss', '?')} MiB
- references: {meta['versions']}
- big blob: {meta['blob_mib']} MiB of random bytes in one tar+gzip layer ({meta['blob_size']} bytes on the
  wire); manifests: wrk -t2 -c16 -d{meta['wrk_secs']}s with an OCI manifest Accept header
- https rows: acr (`: .tls-cert`/`: .tls-key`, rustls) and nginx (`listen ... ssl`, OpenSSL) with one
  self-signed P-256 certificate; curl (`--cacert`, `--http1.1`) and wrk speak HTTP/1.1 to both
- everything on 127.0.0.1; clients (curl, wrk, skopeo) share the CPUs with the servers

## Side by side (medians)

{table}

Throughput is aggregate: all bytes of the batch over its wall time. "upstream direct" is the
upstream distribution itself (no proxy): for the cold pull it is the baseline the goal uses.

## Goals

{goal_table}

## Raw values

{raw_table}
"""
    with open(out_path, "w") as f:
        f.write(doc)
    print()
    print("Side by side (medians of %s rounds, %s MiB blob):" % (meta["rounds"], meta["blob_mib"]))
    print(table)
    print()
    print(goal_table)
    print()
    print("took %d min %d s" % (elapsed // 60, elapsed % 60))


if __name__ == "__main__":
    main()
