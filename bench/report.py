#!/usr/bin/env python3
"""Turns bench/run's raw lines into the results table (Markdown) and a bar chart (SVG)."""
import sys

TARGETS = {  # scenario: (description, minimum ratio, to what, most p99 in ms)
    "get_all": ("GET /api/sessions?items=*", 0.80, "baseline", None),
    "get_items": ("GET with a 3-item filter", 0.80, "baseline", None),
    "patch": ("PATCH one public key (no app)", 0.40, "baseline", 10.0),
    "login": ("PATCH with the log-in cycle", 0.40, "signed", None),
    "create": ("POST create", 0.70, "signed", 10.0),
}


def main(raw_path, out_dir):
    results, scales, redis_memory, restarts = {}, {}, None, {}
    for line in open(raw_path):
        parts = line.split()
        if parts and parts[0] == "RESULT":
            mode, rps, p50, p99, total, failed = parts[1], *map(float, parts[2:7])
            idle = float(parts[7]) if len(parts) > 7 else None  # the load generator's core
            server_idle = float(parts[8]) if len(parts) > 8 else None  # the server's core
            results[mode] = dict(rps=rps, p50=p50, p99=p99, total=int(total), failed=int(failed),
                                 idle=idle, server_idle=server_idle)
        elif parts and parts[0] == "REDIS_MEMORY":
            redis_memory = dict(keys=int(parts[1]), used=int(parts[2]), usage=int(parts[3]))
        elif parts and parts[0] == "RESTART":
            restarts[int(parts[1])] = dict(sessions=int(parts[1]), ms=int(parts[2]), status=parts[3])
        elif parts and parts[0] == "SCALE":
            scales[int(parts[1])] = dict(sessions=int(parts[1]), rss_kib=int(parts[2]),
                                         disk=int(parts[3]))
    rounds = main_rounds(results)
    base = results["baseline"]

    def ratio_to(name, by):
        """name's requests/s over by's: the median of the rounds' ratios when both ran in rounds."""
        if name in rounds and by in rounds:
            ratios = [r["rps"] / rounds[by][n]["rps"] for n, r in rounds[name].items() if n in rounds[by]]
            if ratios:
                return middle(ratios)
        return results[name]["rps"] / results[by]["rps"]

    def failed(name):
        """Failed requests of name over all its rounds."""
        return sum(r["failed"] for r in rounds[name].values()) if name in rounds else results[name]["failed"]
    def idle(r):
        """The idle shares of the generator's core and of the server's, in %."""
        if r.get("idle") is None:
            return ""
        if r.get("server_idle") is None:
            return f"{r['idle']:.0f}"
        return f"{r['idle']:.0f} / {r['server_idle']:.0f}"

    s = results.get("signed")
    rows = ["| scenario | requests/s | p50 ms | p99 ms | failed | idle % (generator / server core) "
            "| ratio to the baseline | ratio to the signing baseline | target | met |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|:---:|",
            f"| baseline (bare hyper) | {base['rps']:.0f} | {base['p50']:.2f} | {base['p99']:.2f} | {base['failed']} "
            f"| {idle(base)} | 1.00 | | | |"]
    verdicts = []
    for mode, (label, target, against, p99) in TARGETS.items():
        r = results.get(mode)
        if not r:
            continue
        ratio = ratio_to(mode, "baseline")
        signed = ratio_to(mode, "signed") if s else None
        measured = ratio if against == "baseline" else signed
        met = measured is not None and measured >= target and failed(mode) == 0 \
            and (p99 is None or r["p99"] <= p99)
        verdicts.append(met)
        wanted = f"≥ {target:.2f} of the {'signing ' if against == 'signed' else ''}baseline" \
            + (f", p99 ≤ {p99:.0f} ms" if p99 else "")
        rows.append(f"| {label} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {failed(mode)} "
                    f"| {idle(r)} | {ratio:.2f} | {'' if against == 'baseline' or signed is None else f'{signed:.2f}'} | {wanted} "
                    f"| {'yes' if met else 'NO'} |")
    if s:
        rows.append(f"| bare hyper + one ES256 signature per answer (the signing baseline) | {s['rps']:.0f} "
                    f"| {s['p50']:.2f} | {s['p99']:.2f} | {s['failed']} | {idle(s)} | {ratio_to('signed', 'baseline'):.2f} "
                    f"| 1.00 | | |")
    g = results.get("get_all")
    extra = []
    if "baseline" in rounds:
        line = []
        for mode, (label, _, against, _) in TARGETS.items():
            by = rounds.get("baseline" if against == "baseline" else "signed")
            if mode in rounds and by:
                ratios = sorted(r["rps"] / by[n]["rps"] for n, r in rounds[mode].items() if n in by)
                line.append(f"{label} {', '.join(f'{x:.2f}' for x in ratios)}")
        extra.append(f"- {len(rounds['baseline'])} rounds, each the baseline, every scenario, then the signing "
                     f"baseline. A ratio above is the median of the rounds' ratios (each round's scenario over "
                     f"that round's baseline); a scenario's other figures are those of its median round, a "
                     f"baseline's of its median run. Each round's ratio (for create and log-in, to its signing "
                     f"baseline), sorted: " + "; ".join(line))
    runs = sorted((int(m.rsplit("_", 1)[1]), m.split("_")[1], r) for m, r in results.items()
                  if m.startswith(("login_hs256_", "login_jwks_")))
    if runs:
        total = {kind: sum(r["rps"] for _, k, r in runs if k == kind) for kind in ("hs256", "jwks")}
        count = {kind: sum(1 for _, k, _ in runs if k == kind) for kind in ("hs256", "jwks")}
        if all(count.values()):
            ratio = (total["jwks"] / count["jwks"]) / (total["hs256"] / count["hs256"])
            ok = ratio >= 0.95 and all(r["failed"] == 0 for _, _, r in runs)
            verdicts.append(ok)
            series = ", ".join(f"{'JWKS' if k == 'jwks' else 'HS256'} {r['rps']:.0f}" for _, k, r in runs)
            idles = ", ".join(idle(r) for _, _, r in runs)
            extra.append(f"- Log-in, identity by JWKS vs by HS256 secret (fresh servers, in this order): "
                         f"{series} requests/s (generator / server core idle {idles} %); mean JWKS / mean HS256 "
                         f"{ratio:.3f} (target ≥ 0.95): {'yes' if ok else 'NO'}")
    if s:
        # What a create at 0.70 of the signing baseline may spend beyond it, per request on the
        # server's core.
        room = 1e6 / (0.70 * s["rps"]) - 1e6 / s["rps"]
        extra.append(f"- Signing alone: {ratio_to('signed', 'baseline'):.2f} of the baseline. A create at 0.70 of it "
                     f"has {room:.0f} µs per request for everything else (cycle, record, durable write, "
                     f"cookies); bare hyper takes {1e6 / base['rps']:.0f} µs, bare hyper and the signature "
                     f"{1e6 / s['rps']:.0f} µs.")
    if g:
        ok = g["p99"] <= 2 * base["p99"]
        verdicts.append(ok)
        extra.append(f"- GET p99 {g['p99']:.2f} ms vs baseline p99 {base['p99']:.2f} ms: "
                     f"{g['p99'] / base['p99']:.2f}x (target ≤ 2x): {'yes' if ok else 'NO'}")
    for mode, how in (("get_all_1m", "1,000,000 sessions (a fresh server, every session cached)"),
                      ("get_all_10m", "10,000,000 sessions (restarted, a random one in ten read, "
                                      "most from the store, each token new to the process)")):
        m = results.get(mode)
        if g and m:
            ok = m["rps"] >= 0.9 * g["rps"] and (m.get("idle") or 0) >= 20
            verdicts.append(ok)
            extra.append(f"- GET at {how}: {m['rps']:.0f} requests/s, p99 {m['p99']:.2f} ms, "
                         f"{m['rps'] / g['rps']:.2f} of GET at the prepared count, generator / server core "
                         f"idle {idle(m)} % (target ≥ 0.90 with the generator's core ≥ 20 % idle): "
                         f"{'yes' if ok else 'NO'}")
    cold = results.get("get_all_10m_cold")
    if g and cold:
        extra.append(f"- The same GET at 10,000,000 sessions with the page cache dropped first (a server "
                     f"started again, other tokens): {cold['rps']:.0f} requests/s, p99 {cold['p99']:.2f} ms, "
                     f"{cold['rps'] / g['rps']:.2f} of GET at the prepared count, generator / server core "
                     f"idle {idle(cold)} %")
    for scale in scales.values():
        per_session = scale["disk"] / scale["sessions"]
        disk_ok = per_session <= 800
        line = (f"- At {scale['sessions']:,} sessions: resident memory {scale['rss_kib'] / 1024:.0f} MiB "
                f"({scale['rss_kib'] * 1024 / scale['sessions']:.0f} B/session), on disk "
                f"{scale['disk'] / 2**20:.0f} MiB ({per_session:.0f} B/session; target ≤ 800 B: "
                f"{'yes' if disk_ok else 'NO'})")
        verdicts.append(disk_ok)
        if scale["sessions"] == 1_000_000:
            rss_ok = scale["rss_kib"] / 1024 <= 1500
            verdicts.append(rss_ok)
            line += f"; resident memory target ≤ 1,500 MiB: {'yes' if rss_ok else 'NO'}"
        extra.append(line)
    for restart in restarts.values():
        line = (f"- Restart after a SIGKILL with {restart['sessions']:,} sessions on disk, to the first "
                f"answer reading one: {restart['ms'] / 1000:.2f} s (HTTP {restart['status']})")
        if restart["sessions"] >= 10_000_000:
            ok = restart["ms"] <= 5000 and restart["status"] == "200"
            verdicts.append(ok)
            line += f" (target ≤ 5 s): {'yes' if ok else 'NO'}"
        extra.append(line)
    redis = [m for m in ("get_all", "patch", "create") if f"redis_{m}_1" in results]
    if redis:
        def median(prefix):
            runs = by_round(results, prefix).values()
            return median_run(runs), sorted(r["rps"] for r in runs)
        extra.append("")
        extra.append("On Redis (`appendfsync always`, on the server's core), as a ratio of the same scenario on "
                     "the embedded store (medians of three interleaved rounds; without the session cache: one run, "
                     "against the embedded figure above):")
        extra.append("")
        extra.append("| scenario | Redis requests/s | p50 ms | p99 ms | failed | idle % (generator / server core) | embedded requests/s "
                     "| Redis / embedded | target | met |")
        extra.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|:---:|")
        rounds_line = []
        for m in redis:
            nocache = results.get(f"redis_nocache_{m}")
            if nocache and m in results:
                r, e = nocache, results[m]
                extra.append(f"| {TARGETS[m][0]} (no session cache) | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} "
                             f"| {r['failed']} | {idle(r)} | {e['rps']:.0f} | {r['rps'] / e['rps']:.2f} | | |")
        for m in redis:
            (r, redis_rounds), (e, embedded_rounds) = median(f"redis_{m}"), median(f"embedded_{m}")
            target = {"get_all": 0.60, "patch": 0.60}.get(m)
            ratio = r["rps"] / e["rps"]
            failed = sum(x["failed"] for k, x in results.items() if k.startswith(("redis_" + m + "_", "embedded_" + m + "_")))
            met = "" if target is None else ("yes" if ratio >= target and failed == 0 else "NO")
            if target is not None:
                verdicts.append(met == "yes")
            extra.append(f"| {TARGETS[m][0]} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {failed} "
                         f"| {idle(r)} | {e['rps']:.0f} | {ratio:.2f} | {'' if target is None else f'≥ {target:.2f}'} | {met} |")
            rounds_line.append(f"{m} Redis {', '.join(f'{x:.0f}' for x in redis_rounds)} / embedded "
                               f"{', '.join(f'{x:.0f}' for x in embedded_rounds)}")
        extra.append("- Rounds, requests/s sorted: " + "; ".join(rounds_line))
        unseen = results.get("redis_unseen_get_all")
        if unseen and "get_all" in redis:
            r, _ = median("redis_get_all")
            extra.append(f"- GET by another process of a fleet on the same Redis, started fresh (each token new to it at "
                         f"its first request, then taken by the digest its session's record keeps): {unseen['rps']:.0f} requests/s, "
                         f"p99 {unseen['p99']:.2f} ms, {unseen['rps'] / r['rps']:.2f} of the GET on Redis above, "
                         f"generator / server core idle {idle(unseen)} %")
    peers = peer_table(results, base, verdicts)
    if peers:
        extra += [""] + peers
    if redis_memory:
        per = redis_memory["used"] / max(redis_memory["keys"], 1)
        extra.append(f"- Redis memory: {redis_memory['keys']:,} keys, used_memory {redis_memory['used'] / 2**20:.0f} MiB "
                     f"({per:.0f} B/session, {2**30 / per:,.0f} sessions/GiB); MEMORY USAGE of a session key "
                     f"{redis_memory['usage']} B on average (1,000 keys)")
    table = "\n".join(rows + [""] + extra) + "\n"
    print(table)
    print("all targets met" if verdicts and all(verdicts) else "some targets NOT met")
    open(f"{out_dir}/table.md", "w").write(table)
    chart(results, ratio_to, f"{out_dir}/chart.svg")


PEERS = [  # name in the raw lines, label, durable (acknowledged means on disk)
    ("tower_memory", "axum + tower-sessions, memory store", "no"),
    ("tower_redis_always", "axum + tower-sessions, Redis `appendfsync always`", "fsync before ack"),
    ("tower_redis_everysec", "axum + tower-sessions, Redis `everysec`", "no"),
    ("express_memory", "express-session, memory store", "no"),
    ("express_redis_always", "express-session + connect-redis, `appendfsync always`", "fsync before ack"),
    ("express_redis_everysec", "express-session + connect-redis, `everysec`", "no"),
]
PEER_MODES = ("get_all", "patch", "create")
MODE_NAMES = {"get_all": "GET", "patch": "PATCH", "create": "create"}


def middle(values):
    """The median of values (the mean of the two middle ones for an even count), or None."""
    values = sorted(values)
    if not values:
        return None
    half = len(values) // 2
    return values[half] if len(values) % 2 else (values[half - 1] + values[half]) / 2


def by_round(results, prefix):
    """The runs named `prefix_N` ("get_all_2": GET in round 2), by round N."""
    runs = {}
    for key, r in results.items():
        name, _, n = key.rpartition("_")
        if name == prefix and n.isdigit():
            runs[int(n)] = r
    return runs


def median_run(runs):
    """The run of the median requests/s (the upper middle one for an even count)."""
    runs = sorted(runs, key=lambda r: r["rps"])
    return runs[len(runs) // 2]


def main_rounds(results):
    """bench/run's main scenarios and baselines run in rounds ("get_all_2": GET in round 2). A
    baseline's median run (by requests/s) becomes its figure under the plain name, a scenario's
    the round of the median ratio to its own baseline. Returns the runs by name and round, or {}
    for lines without rounds."""
    rounds = {name: runs for name in ("baseline", "signed", *TARGETS) if (runs := by_round(results, name))}
    for name, runs in rounds.items():
        by = rounds.get("baseline" if name not in TARGETS or TARGETS[name][2] == "baseline" else "signed")
        if name in TARGETS and by:
            # The round whose ratio to its own baseline is the median one.
            paired = sorted((r["rps"] / by[n]["rps"], n) for n, r in runs.items() if n in by)
            results[name] = runs[paired[len(paired) // 2][1]]
        else:
            results[name] = median_run(runs.values())
    return rounds


def peer_table(results, base, verdicts):
    """The peers of bench/peers: their ratios to the baseline (p99 in brackets), and sessiond's
    requests/s over theirs: the median of the rounds' ratios, each of two runs seconds apart."""

    def rounds(prefix):
        """The runs of one system and scenario, by round (one unnumbered run in older lines)."""
        return by_round(results, prefix) or ({1: results[prefix]} if prefix in results else {})

    if not any(rounds(f"peer_{name}_get_all") for name, _, _ in PEERS):
        return []

    def cell(runs):
        if not runs:
            return ""
        r = median_run(runs.values())
        return f"{r['rps'] / base['rps']:.2f} ({r['p99']:.1f} ms)"

    def over(side, name, mode):
        """sessiond's requests/s over the peer's, round by round."""
        ours, theirs = rounds(f"beside_{side}_{name}_{mode}"), rounds(f"peer_{name}_{mode}")
        return [ours[n]["rps"] / theirs[n]["rps"] for n in sorted(ours) if n in theirs]

    rows = ["Beside the peers (`--peers`, bench/peers; each on a fresh server with its own sessions). "
            "Their requests/s as a ratio of the baseline with p99 in brackets (the median round), then "
            "sessiond's requests/s over theirs: the median of the rounds' ratios, each of sessiond run "
            "seconds before or after the peer (on the embedded store; for a peer on Redis "
            "`appendfsync always`, also on that same Redis):", "",
            "| peer (server and store on one core) | durable | GET | PATCH one key | create "
            "| sessiond / peer: GET | PATCH | create | idle % (generator / server core), lowest |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    behind = {"embedded": [], "redis": []}
    spread = []
    for name, label, durable in PEERS:
        runs = [rounds(f"peer_{name}_{m}") for m in PEER_MODES]
        if not any(runs):
            continue
        present = [r for by_round in runs for r in by_round.values() if r.get("idle") is not None]
        lowest = (f"{min(r['idle'] for r in present):.0f} / {min(r['server_idle'] or 0 for r in present):.0f}"
                  if present else "")
        for side in ("embedded", "redis"):
            each = [over(side, name, m) for m in PEER_MODES]
            if not any(each):
                continue
            ratios = [middle(x) for x in each]
            behind[side] += [f"{m} vs {label}: {x:.2f}" for m, x in zip(PEER_MODES, ratios) if x is not None and x <= 1]
            spread.append(f"  - {label}{'' if side == 'embedded' else ', sessiond on the same Redis'}: "
                          + "; ".join(f"{MODE_NAMES[m]} {', '.join(f'{x:.2f}' for x in sorted(xs))}"
                                      for m, xs in zip(PEER_MODES, each) if xs))
            first = side == "embedded"
            rows.append(f"| {label if first else '… sessiond on the same Redis'} | {durable if first else ''} | "
                        + " | ".join(cell(r) if first else "" for r in runs) + " | "
                        + " | ".join("" if x is None else f"**{x:.2f}**" for x in ratios)
                        + f" | {lowest if first else ''} |")
    rows.append("")
    rows.append("- sessiond / peer in each round, sorted:")
    rows += spread
    ok = not behind["embedded"]
    verdicts.append(ok)
    rows.append("- sessiond on the embedded store ahead of every peer in every scenario: "
                + ("yes" if ok else "NO (" + "; ".join(behind["embedded"]) + ")"))
    if any(k.startswith("beside_redis_") for k in results):
        ok = not behind["redis"]
        verdicts.append(ok)
        rows.append("- sessiond on Redis `appendfsync always` ahead of the peers on the same Redis: "
                    + ("yes" if ok else "NO (" + "; ".join(behind["redis"]) + ")"))
    return rows


def chart(results, ratio_to, path):
    bars = [(TARGETS[m][0], ratio_to(m, "baseline"), TARGETS[m][1] if TARGETS[m][2] == "baseline"
             else TARGETS[m][1] * ratio_to("signed", "baseline"))
            for m in TARGETS if m in results and (TARGETS[m][2] == "baseline" or "signed" in results)]
    width, row, left = 640, 34, 250
    height = row * len(bars) + 50
    scale = (width - left - 30)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
           f'<text x="10" y="18" font-weight="bold">requests/s as a fraction of bare hyper (target marked)</text>']
    for i, (label, ratio, target) in enumerate(bars):
        y = 30 + i * row
        colour = "#2e7d32" if ratio >= target else "#c62828"
        out.append(f'<text x="10" y="{y + 16}">{label}</text>')
        out.append(f'<rect x="{left}" y="{y + 4}" width="{min(ratio, 1.0) * scale:.0f}" height="18" fill="{colour}"/>')
        out.append(f'<line x1="{left + target * scale:.0f}" y1="{y}" x2="{left + target * scale:.0f}" y2="{y + 26}" stroke="black" stroke-dasharray="3,2"/>')
        out.append(f'<text x="{left + min(ratio, 1.0) * scale + 4:.0f}" y="{y + 17}">{ratio:.2f}</text>')
    out.append("</svg>")
    open(path, "w").write("\n".join(out) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
