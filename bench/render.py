"""The results as Markdown tables: the goals, a summary (forkpool against
each peer) and the details of every scenario.  Printed at the end of a
run and written into docs/benchmarks.md by --report."""
import statistics

from common import summary

COLUMNS = [("forkpool", "forkpool"), ("bare-http", "bare http"),
           ("bare-evhttp", "bare evhttp"),
           ("nginx", "nginx"), ("node", "node cluster"),
           ("gunicorn", "gunicorn sync")]
DETAIL = COLUMNS[:1] + [
    ("forkpool-changelist", "forkpool, epoll changelist"),
    ("forkpool-reuseport", "forkpool --reuse-port"),
    ("forkpool-w8", "forkpool -w 8")] + COLUMNS[1:]


def fmt(v, unit=""):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if unit == "req/s" or unit == "msgs/s" or unit == "records/s":
        return "%.1fk" % (v / 1000) if v >= 1000 else "%.0f" % v
    if unit == "%":
        return "%.1f%%" % v if v >= 1 else "%.2f%%" % v
    if isinstance(v, int) or float(v).is_integer() and abs(v) >= 10:
        return "%d" % v
    if abs(v) >= 100:
        return "%.0f" % v
    if abs(v) >= 10:
        return "%.1f" % v
    if abs(v) >= 1:
        return "%.2f" % v
    return "%.3f" % v


def med(d, *keys):
    """d[keys...]["median"] or None."""
    for k in keys:
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d["median"] if isinstance(d, dict) else d


def med_rows(rows, key):
    vals = [r[key] for r in rows or [] if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def sum_rows(rows, key):
    return sum(r[key] for r in rows) if rows else None


def dropped(rows):
    """Requests that got no response on an established connection: those
    on a kept-alive connection plus those on a new one (reset in a listen
    backlog)."""
    if not rows:
        return None
    return sum(r["dropped"] + r["reset_new"] for r in rows)


def pct_of(rows):
    vals = [100.0 * r["lowest_rps"] / r["before_rps"] for r in rows or []
            if r.get("lowest_rps") is not None and r.get("before_rps")]
    return statistics.median(vals) if vals else None


def ratio(fp, peer):
    if (not isinstance(fp, (int, float)) or
            not isinstance(peer, (int, float)) or not peer or not fp):
        return ""
    return " (%.2f×)" % (fp / peer)


def table(header, rows):
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


def scale_sizes(res):
    """The scale scenario's pool sizes, each {"workers", "rounds",
    "ready_ms", ...} or {"workers", "skipped"}; results written before
    the scenario measured several sizes had one, at the top level."""
    sc = res.get("scale") or {}
    if "sizes" in sc:
        return sc["sizes"]
    if not sc.get("rounds"):
        return []
    rounds, r0 = sc["rounds"], sc["rounds"][0]
    size = {"workers": sc["workers"], "rounds": rounds}
    for key in ("ready_ms", "exec_to_ready_ms", "stop_ms"):
        size[key] = summary([r.get(key) for r in rounds])
    for key in ("idle_s", "master_cpu_pct", "master_rss_kb",
                "master_uss_kb", "worker_uss_kb"):
        size[key] = r0.get(key)
    return [size]


def scale_size(res, n):
    for size in scale_sizes(res):
        if size["workers"] == n and "skipped" not in size:
            return size
    return None


def logs_runs(res):
    """The logs scenario's runs (older results had one, 4 workers)."""
    lg = res.get("logs") or {}
    return lg["runs"] if "runs" in lg else [lg] if lg else []


def summary_rows(res):
    """(scenario, metric, better, {server: value})"""
    rows = []
    thr = res.get("throughput", {})
    for c in ("c64", "c8"):
        n = c[1:]
        rows.append(("throughput, %s conns" % n, "req/s", "↑",
                     {s: med(thr, s, c, "rps") for s, _ in COLUMNS}))
        rows.append(("latency p50, %s conns" % n, "ms", "↓",
                     {s: med(thr, s, c, "p50_ms") for s, _ in COLUMNS}))
        rows.append(("latency p99, %s conns" % n, "ms", "↓",
                     {s: med(thr, s, c, "p99_ms") for s, _ in COLUMNS}))
    ov = res.get("overhead", {})
    if ov:
        rows.append(("1 worker, wrk -t1 -c64 (framework overhead)", "req/s",
                     "↑", {s: med(ov, s, "rps") for s, _ in COLUMNS}))
    echo = res.get("echo", {})
    for c in ("c64", "c8"):
        if echo.get(c):
            rows.append(("echo 64 B ping-pong, %s conns" % c[1:], "msgs/s",
                         "↑", {"forkpool": med(echo, c, "msgs_per_s")}))
    rsp = res.get("respawn", {})
    rows.append(("respawn: kill → new worker pid", "ms p50", "↓",
                 {s: med(rsp, s, "new_pid_ms") for s, _ in COLUMNS}))
    rows.append(("respawn: kill → \"ready\" (own log)", "ms p50", "↓",
                 {"forkpool": med(rsp, "forkpool", "ready_ms")}))
    rows.append(("respawn: kill → answered by new pid", "ms p50", "↓",
                 {s: med(rsp, s, "served_ms") for s, _ in COLUMNS}))
    rl = res.get("reload", {})
    rows.append(("reload: dropped requests", "requests", "↓",
                 {s: dropped(rl.get(s)) for s, _ in COLUMNS}))
    rows.append(("reload: refused connects", "connects", "↓",
                 {s: sum_rows(rl.get(s), "refused") for s, _ in COLUMNS}))
    rows.append(("reload: lowest 50 ms of throughput", "% of before", "↑",
                 {s: pct_of(rl.get(s)) for s, _ in COLUMNS}))
    rows.append(("reload: old workers gone", "ms", "↓",
                 {s: med_rows(rl.get(s), "old_gone_ms") for s, _ in COLUMNS}))
    rows.append(("reload: \"got SIGHUP\" → \"reload complete\" (own log)",
                 "ms", "↓",
                 {"forkpool": med_rows(rl.get("forkpool"), "reload_ms")}))
    sd = res.get("shutdown", {})
    rows.append(("shutdown: dropped requests", "requests", "↓",
                 {s: dropped(sd.get(s)) for s, _ in COLUMNS}))
    rows.append(("shutdown under load: master exit", "ms", "↓",
                 {s: med_rows(sd.get(s), "exit_ms") for s, _ in COLUMNS}))
    mem = res.get("memory", {})
    rows.append(("idle memory: master RSS", "kB", "↓",
                 {s: mem[s]["master_rss"] for s, _ in COLUMNS if s in mem}))
    rows.append(("idle memory: worker USS", "kB", "↓",
                 {s: mem[s]["worker_uss"] for s, _ in COLUMNS if s in mem}))
    size = scale_size(res, 256)
    if size:
        for what, unit, key in (
                ("all ready", "ms", "ready_ms"),
                ("full rolling reload", "ms", "reload_ms"),
                ("master idle CPU", "%", "master_cpu_pct"),
                ("master RSS", "kB", "master_rss_kb"),
                ("worker USS", "kB", "worker_uss_kb")):
            rows.append(("scale: 256 echo workers, %s" % what, unit, "↓",
                         {"forkpool": med(size, key)}))
    for r in logs_runs(res):
        rows.append(("logs: %d workers flooding, through the master" %
                     r["workers"], "records/s", "↑",
                     {"forkpool": r["records_per_s"]}))
    for r in res.get("reuseport", []):
        rows.append(("spread over workers, -w %d, %s, %s" % (
            r["workers"], r["conn"], r["mode"]), "CV", "↓",
            {"forkpool": r["cv"]}))
    if res.get("jsonrpc"):
        rows.append(("jsonrpc pipelined pings", "req/s", "↑",
                     {"forkpool": med(res, "jsonrpc", "rps")}))
    h = res.get("hostile", {})
    for part, what, unit, key in (
            ("stuck_log", "ctl status p99, stuck log pipe + SIGHUP storm",
             "ms", "ctl_status_ms_p99"),
            ("emfile", "master CPU at EMFILE", "%", "master_cpu_pct"),
            ("orphan", "master CPU after an orphan's flood", "%",
             "master_cpu_pct"),
            ("output", "master peak RSS, 64 workers × 300 × 16 KiB", "kB",
             "master_rss_kb_peak")):
        if part in h:
            rows.append(("hostile: " + what, unit, "↓",
                         {"forkpool": h[part].get(key)}))
    return rows


def render_summary(res):
    rows = []
    for scen, unit, better, vals in summary_rows(res):
        if not any(v is not None for v in vals.values()):
            continue
        fp = vals.get("forkpool")
        cells = [scen, "%s %s" % (unit, better), fmt(fp, unit)]
        for s, _ in COLUMNS[1:]:
            v = vals.get(s)
            cells.append(fmt(v, unit) + ("" if v is None else ratio(fp, v)))
        rows.append(cells)
    return table(["scenario", "unit", "forkpool"] +
                 [label for _, label in COLUMNS[1:]], rows)


def _range(d, unit):
    return "%s [%s–%s]" % (fmt(d["median"], unit), fmt(d["min"], unit),
                           fmt(d["max"], unit))


def details_throughput(res):
    thr = res.get("throughput", {})
    rows = []
    for s, label in DETAIL:
        for c in ("c64", "c8"):
            d = thr.get(s, {}).get(c)
            if not d:
                continue
            rows.append([label, c[1:], _range(d["rps"], "req/s"),
                         fmt(d["p50_ms"]["median"]),
                         fmt(d["p99_ms"]["median"]), d["errors"],
                         ", ".join(fmt(x, "req/s") for x in d["runs"]),
                         ", ".join("—" if x is None else "%d%%" % x
                                   for x in d.get("busiest_share", [])),
                         fmt(med(d, "other_cpu_pct"), "%")])
    if not rows:
        return None
    return ("### Throughput (wrk -t2, keep-alive, %d workers)\n\n" %
            res.get("workers", 2) + table(
                ["server", "conns", "req/s median [min–max]", "p50 ms",
                 "p99 ms", "errors", "runs",
                 "busiest worker's share of the conns, by run",
                 "CPU taken by other processes"], rows))


def details_overhead(res):
    ov = res.get("overhead", {})
    if not ov:
        return None
    rows = [[label, _range(ov[s]["rps"], "req/s"),
             fmt(ov[s]["p50_ms"]["median"]),
             ", ".join(fmt(x, "req/s") for x in ov[s]["runs"])]
            for s, label in COLUMNS if s in ov]
    text = ("### Framework overhead: one worker each, wrk -t1 -c64, "
            "alternating\n\n" + table(
                ["server", "req/s median [min–max]", "p50 ms", "runs"], rows))
    for bare, label in (("bare-http", "bare http"),
                        ("bare-evhttp", "bare evhttp")):
        if "forkpool" in ov and bare in ov:
            text += ("\n\nforkpool ÷ %s: %.3f× (medians)." % (
                label, ov["forkpool"]["rps"]["median"] /
                ov[bare]["rps"]["median"]))
    return text


def details_syscalls(res):
    sc = res.get("syscalls", {})
    if sc.get("skipped"):
        return "### System calls per request\n\nSkipped: %s." % sc["skipped"]
    rows = [[label, fmt(sc[s]["per_request"]), sc[s]["calls"],
             sc[s]["requests"],
             ", ".join("%s %s" % (k, fmt(v)) for k, v in sorted(
                 sc[s]["top"].items(), key=lambda kv: -kv[1]))]
            for s, label in COLUMNS if s in sc]
    if not rows:
        return None
    return ("### System calls per request (strace -c -f of the one worker, "
            "wrk -t1 -c64 keep-alive)\n\n" + table(
                ["server", "per request", "calls", "requests",
                 "most frequent, per request"], rows))


def details_echo(res):
    echo = res.get("echo", {})
    if not echo:
        return None
    rows = [[c[1:], _range(d["msgs_per_s"], "msgs/s"),
             fmt(d["p50_ms"]["median"]), fmt(d["p99_ms"]["median"]),
             d["failed"], fmt(med(d, "other_cpu_pct"), "%")]
            for c, d in sorted(echo.items(), key=lambda x: -int(x[0][1:]))]
    return ("### forkpool echo (bench/echo-load, 64-byte messages, 2 "
            "threads)\n\n" + table(
                ["conns", "msgs/s median [min–max]", "p50 ms", "p99 ms",
                 "failed conns", "CPU taken by other processes"], rows))


def details_respawn(res):
    rsp = res.get("respawn", {})
    rows = []

    def q(x):
        return ("%s / %s / %s / %s" % (
            fmt(x["median"]), fmt(x["p90"]), fmt(x.get("p99")),
            fmt(x["max"])) if x else "—")

    for s, label in COLUMNS:
        d = rsp.get(s)
        if d:
            rows.append([label, d["kills"], q(d["new_pid_ms"]),
                         q(d.get("fork_to_ready_ms")), q(d["ready_ms"]),
                         q(d["served_ms"]), d["not_served_in_3s"]])
    if not rows:
        return None
    return ("### Respawn after SIGKILL (ms: p50 / p90 / p99 / max)\n\n" +
            table(["server", "kills", "kill → new worker pid",
                   "fork → \"ready\" (its log)", "kill → \"ready\" (its log)",
                   "kill → answered by new pid", "not answered in 3 s"],
                  rows))


def details_lifecycle(res, key):
    d = res.get(key, {})
    rows = []
    for s, label in DETAIL:
        runs = d.get(s)
        if not runs:
            continue
        row = [label, len(runs), sum_rows(runs, "dropped"),
               sum_rows(runs, "reset_new"), sum_rows(runs, "refused"),
               sum_rows(runs, "errors"), sum_rows(runs, "ok")]
        if key == "reload":
            row += [fmt(med_rows(runs, "before_rps"), "req/s"),
                    fmt(pct_of(runs), "%"),
                    fmt(med_rows(runs, "old_gone_ms")),
                    fmt(med_rows(runs, "reload_ms"))]
        else:
            row += [fmt(med_rows(runs, "exit_ms"))]
        rows.append(row)
    if not rows:
        return None
    head = ["server", "rounds", "dropped (kept-alive)", "reset (new conn)",
            "refused", "errors", "answered"]
    if key == "reload":
        title = "Rolling reload under keep-alive load"
        head += ["req/s before", "lowest 50 ms", "old gone ms",
                 "\"got SIGHUP\" → \"reload complete\" ms (its log)"]
    else:
        title = "Graceful shutdown under keep-alive load"
        head += ["exit ms"]
    return ("### %s (%d connections, sums over rounds)\n\n" % (
        title, res.get("config", {}).get("ka_conns", 0)) + table(head, rows))


def details_memory(res):
    mem = res.get("memory", {})
    rows = [[label, mem[s]["master_rss"], mem[s]["master_uss"],
             fmt(mem[s]["worker_rss"]), fmt(mem[s]["worker_uss"]),
             mem[s]["total_pss"]] for s, label in DETAIL if s in mem]
    if not rows:
        return None
    return ("### Memory at idle, %d workers (kB)\n\n" % res.get("workers", 2)
            + table(["server", "master RSS", "master USS", "worker RSS",
                     "worker USS", "total PSS"], rows))


def details_scale(res):
    sizes = scale_sizes(res)
    if not sizes:
        return None
    rows, skipped = [], []
    for size in sizes:
        if "skipped" in size:
            skipped.append(size["skipped"])  # the master's "N workers need"
            rows.append([size["workers"]] + ["skipped"] + ["—"] * 7)
            continue
        w = size.get("worker_uss_kb")
        rows.append([size["workers"], _range(size["ready_ms"], ""),
                     fmt(med(size, "exec_to_ready_ms")),
                     _range(size["reload_ms"], "")
                     if size.get("reload_ms") else "—",
                     fmt(size.get("master_rss_kb")),
                     fmt(size.get("master_uss_kb")),
                     fmt(size.get("master_cpu_pct"), "%"),
                     fmt(med(size, "worker_uss_kb")) if w else "—",
                     fmt(med(size, "stop_ms"))])
    sc = res.get("scale", {})
    n = max(len(s.get("rounds", [])) for s in sizes)
    text = ("### Scale: echo workers (median [min–max] of %d round%s; "
            "memory and CPU from the first, idle for %s s)\n\n" % (
                n, "" if n == 1 else "s",
                fmt(sc.get("idle_s") or sizes[0].get("idle_s"))) + table(
            ["workers", "all ready ms (\"master pid N starting\" → last "
             "\"ready\")", "from exec", "full rolling reload ms (\"got "
             "SIGHUP\" → \"reload complete\")", "master RSS kB",
             "master USS kB", "master idle CPU", "worker USS kB (median)",
             "graceful stop ms"], rows))
    if skipped:
        text += ("\n\nSkipped (the master refuses a pool that does not fit "
                 "its RLIMIT_NOFILE, which it raises to the hard limit; the "
                 "bench does not raise that): %s." % "; ".join(skipped))
    return text


def details_logs(res):
    runs = logs_runs(res)
    if not runs:
        return None
    rows = [[r["workers"], r["records"], fmt(r["records_per_s"],
                                             "records/s"),
             fmt(r["master_cpu_pct"], "%")] for r in runs]
    return ("### Log forwarding (chaos workers logging as fast as they "
            "can, the master writing a --log-file; all records arrived)\n\n"
            + table(["workers", "records each", "records/s through the "
                     "master", "master CPU (of one core)"], rows))


def details_reuseport(res):
    rp = res.get("reuseport", [])
    if not rp:
        return None
    rows = [[r["workers"], r["conn"], r["mode"], fmt(r["rps"], "req/s"),
             " ".join(str(c) for c in r["counts"]), fmt(r["stddev"]),
             fmt(r["cv"]), fmt(r["status_stddev"])] for r in rp]
    return ("### Spread across workers: shared socket vs --reuse-port\n\n" +
            table(["workers", "connections", "listener", "req/s",
                   "responses per worker (X-Pid)", "stddev", "CV",
                   "stddev from status"], rows))


def details_jsonrpc(res):
    j = res.get("jsonrpc")
    if not j:
        return None
    return ("### jsonrpc\n\n%d connections × %d pipelined pings, %s times "
            "each, 2 workers: %s req/s (median of %d)." % (
                j.get("conns", 4), j.get("depth", 200),
                j.get("rounds", "100"), fmt(med(res, "jsonrpc", "rps"),
                                            "req/s"), j["rps"]["n"]))


def details_hostile(res):
    h = res.get("hostile")
    if not h:
        return None
    rows = []
    s = h.get("stuck_log")
    if s:
        rows.append(["stuck log: stderr a pipe nobody reads, 4 workers "
                     "printing 2 MB each, %d SIGHUPs, %d `ctl status` calls"
                     % (s["sighups"], s["calls"]),
                     "ctl status ms p50 / p99 / max: %s / %s / %s; records "
                     "the master reported dropped: %d" % (
                         fmt(s["ctl_status_ms_p50"]),
                         fmt(s["ctl_status_ms_p99"]),
                         fmt(s["ctl_status_ms_max"]),
                         s["dropped_records_reported"])])
    for part, what in (("emfile", "EMFILE: RLIMIT_NOFILE at the master's fd "
                        "count + 4, 10 idle control connections"),
                       ("orphan", "an orphan flooding a dead worker's "
                        "stdout")):
        e = h.get(part)
        if e:
            extra = ("" if part == "emfile" else
                     "; log grew %d bytes, ctl status %s" % (
                         e["log_growth_bytes"],
                         "answered" if e["ctl_status_ok"] else "FAILED"))
            rows.append([what, "master CPU over %s s: %s%s" % (
                fmt(e["window_s"]), fmt(e["master_cpu_pct"], "%"), extra)])
    o = h.get("output")
    if o:
        rows.append(["%d workers printing %d lines of %d KiB" % (
            o["workers"], o["lines"], o["line_bytes"] // 1024),
            "master peak RSS %d kB (sampled every 20 ms); `ctl output 0` "
            "%d bytes" % (o["master_rss_kb_peak"], o["ctl_output_bytes"])])
    return ("### The master under attack (bench/hostile.py)\n\n" +
            table(["situation", "measured"], rows))


def details_deploy(res):
    dep = res.get("deploy", {})
    if not dep.get("ms"):
        return None
    ms = dep["ms"]
    return ("### Deploying a new worker module (rename, SIGHUP)\n\n" +
            table(["workers", "SIGHUP → every worker on the new version "
                   "(ms: p50 [min–max])", "rounds"],
                  [[dep["workers"], "%s [%s–%s]" % (
                      fmt(ms["median"]), fmt(ms["min"]), fmt(ms["max"])),
                    ms["n"]]]))


def details_upgrade(res):
    up = res.get("upgrade", {})
    if not up.get("rounds") or not up.get("in_a_row"):
        return None
    def pct(r):
        return "?" if r.get("lowest_pct") is None else "%.0f%%" % r["lowest_pct"]

    rows = [["forkpool: SIGUSR2 under %d keep-alive connections, round %d" % (
        up["conns"], i + 1),
        "dropped %d, reset %d, refused %d, errors %d (%d ok); lowest 50 ms "
        "%s of before; last old worker gone %s ms, \"upgrade complete\" "
        "%s ms" % (
            r["dropped"], r["reset_new"], r["refused"], r["errors"], r["ok"],
            pct(r), fmt(r["old_gone_ms"]), fmt(r["complete_ms"]))]
        for i, r in enumerate(up["rounds"])]
    rows += [["nginx: USR2, then QUIT to the old master, round %d" % (i + 1),
              "dropped %d, reset %d, refused %d, errors %d (%d ok); lowest "
              "50 ms %s of before; last old worker gone %s ms" % (
                  r["dropped"], r["reset_new"], r["refused"], r["errors"],
                  r["ok"], pct(r), fmt(r["old_gone_ms"]))]
             for i, r in enumerate(up.get("nginx", []))]
    a = up["in_a_row"]
    rows.append(["%d upgrades in a row" % a["n"],
                 "old workers gone p50 %s ms; master fds %d → %d, RSS %s → "
                 "%s KiB; same pid: %s" % (
                     fmt(a["old_gone_ms"]["median"]), a["fds_before"],
                     a["fds_after"], a["rss_kib_before"], a["rss_kib_after"],
                     "yes" if a["same_pid"] else "no")])
    return ("### Binary upgrade in place (rename, SIGUSR2), -w %d\n\n" %
            up["workers"] + table(["situation", "measured"], rows))


def details_messages(res):
    ms, ev = res.get("messages"), res.get("events")
    rows = []
    if ms:
        rows.append(["messages master → worker (%d × %d bytes, 128 in "
                     "flight)" % (ms["n"], ms["size"]),
                     _range(ms["m2w_per_s"], "msgs/s") + " msgs/s"])
        rows.append(["messages worker → master",
                     _range(ms["w2m_per_s"], "msgs/s") + " msgs/s"])
    if ev:
        for key, what in (("without", "no events client"),
                          ("with_events", "`ctl events` attached")):
            if key in ev:
                rows.append(["scale 1 → %d, %s: master CPU, time to all "
                             "ready" % (ev["workers"], what),
                             "%s ms, %s ms" % (
                                 fmt(ev[key]["master_cpu_ms"]["median"]),
                                 fmt(ev[key]["wall_ms"]["median"]))])
    if not rows:
        return None
    return ("### Library: messages and events (medians)\n\n" +
            table(["measured", "value"], rows))


DETAILS = [details_throughput, details_overhead, details_syscalls,
           details_echo,
           details_respawn, lambda res: details_lifecycle(res, "reload"),
           lambda res: details_lifecycle(res, "shutdown"), details_memory,
           details_scale, details_logs, details_reuseport, details_jsonrpc,
           details_hostile, details_deploy, details_upgrade,
           details_messages]


def render_details(res):
    return "\n\n".join(p for p in (fn(res) for fn in DETAILS) if p)


def render_goals(res):
    """The goals of issue 7, met or not, from the results."""
    rows = []

    def add(goal, value, ok):
        if value is not None:
            rows.append([goal, value, "met" if ok else "**not met**"])

    thr = res.get("throughput", {})
    for c in ("c64", "c8"):
        fp = med(thr, "forkpool", c, "rps")
        ng = med(thr, "nginx", c, "rps")
        if fp and ng:
            add("http throughput ≥ 1.1× nginx's (2 workers, %s conns)" %
                c[1:], "%.2f×" % (fp / ng), fp >= 1.1 * ng)
        fp = med(thr, "forkpool", c, "p99_ms")
        ng = med(thr, "nginx", c, "p99_ms")
        if fp and ng:
            add("http p99 ≤ nginx's (2 workers, %s conns)" % c[1:],
                "%s vs %s ms" % (fmt(fp), fmt(ng)), fp <= ng)
    sc = res.get("syscalls", {}).get("forkpool")
    if sc:
        add("http ≤ 2.5 syscalls per request (strace -c -f, one worker)",
            fmt(sc["per_request"]), sc["per_request"] <= 2.5)
    ov = res.get("overhead", {})
    a, b = med(ov, "forkpool", "rps"), med(ov, "bare-http", "rps")
    if a and b:
        add("http ≥ 0.98× bare http (1 worker, alternating)",
            "%.3f×" % (a / b), a / b >= 0.98)
    r = med(res.get("respawn", {}), "forkpool", "ready_ms")
    if r is not None:
        add("respawn: kill → ready p50 < 2 ms", "%.2f ms" % r, r < 2)
    size = scale_size(res, 256)
    if size:
        t = med(size, "ready_ms")
        add("256 workers ready < 1 s", "%.0f ms" % t, t < 1000)
        if size.get("master_cpu_pct") is not None:
            cpu, rss = size["master_cpu_pct"], size["master_rss_kb"]
            add("master idle CPU < 0.5 % with 256 workers", "%.2f %%" % cpu,
                cpu < 0.5)
            add("master RSS < 4 MiB with 256 workers", "%d kB" % rss,
                rss < 4096)
    for key, what in (("reload", "rolling reload"),
                      ("shutdown", "graceful shutdown")):
        d = dropped(res.get(key, {}).get("forkpool"))
        if d is not None:
            add("zero dropped requests on %s under keep-alive load" % what,
                "%d" % d, d == 0)
    if not rows:
        return ""
    return "## Goals\n\n" + table(["goal", "measured", ""], rows)


def render_tables(res):
    out = [render_goals(res), "",
           "## Summary (medians; (×) = forkpool ÷ that server; ↑ higher is "
           "better, ↓ lower is better)", "", render_summary(res), "",
           "## Details", "", render_details(res)]
    if res.get("errors"):
        out += ["", "Scenarios that failed: " + "; ".join(
            "%s: %s" % (k, v.splitlines()[0] if v else "")
            for k, v in res["errors"].items())]
    return "\n".join(out)
