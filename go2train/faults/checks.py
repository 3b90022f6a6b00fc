"""The invariants checked after a campaign (docs/RELIABILITY.md), one function per check.

:func:`gather` collects the evidence once (the campaign's fault records, ``events.jsonl``,
``worker.log`` per worker, the render hook's log, the chunk records, the monitor's samples); each
``check_*`` function reads it and returns one row ``{"check", "ok", "figures"}`` of the table that
:func:`table` prints. :func:`run_checks` runs them in the table's order. ``check_work_lost`` adds a
``lost`` entry to the fault records it can measure (it is part of the JSON result).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from go2train.faults.monitor import Monitor
from go2train.faults.plan import (
    EPISODES,
    KINDS,
    N_ENVS,
    N_STEPS,
    RESUME_POINT_MINUTES,
    WORKER_KINDS,
)
from go2train.faults.worklog import parse_worker_log
from go2train.run import checkpoint
from go2train.run.files import read_json, read_jsonl
from go2train.run.layout import RunDir, chunk_name

RSS_LIMIT_MB = 60.0
RSS_GROWTH_LIMIT_MB = 5.0

Row = dict[str, Any]


@dataclass
class Evidence:
    """What the checks read: the campaign's own records and the run directory after the end."""

    rd: RunDir
    records: list[dict[str, Any]]  # one per injected fault (the campaign's)
    n_faults: int
    aborted: str | None
    target: int | None
    ended_by: str | None
    final_state: Any
    duration: float
    sup_kills: set[int]
    mon: Monitor
    orphans: list[dict[str, Any]]
    events: list[dict[str, Any]] = field(default_factory=list)
    sessions: dict[int, dict[str, Any]] = field(default_factory=dict)  # worker.log, per pid
    hook: list[dict[str, Any]] = field(default_factory=list)  # chaos/render.jsonl
    recs: dict[int, dict[str, Any]] = field(default_factory=dict)  # chunk records, by milestone
    by_kind: Counter = field(default_factory=Counter)

    def of(self, name: str) -> list[dict[str, Any]]:
        """The events named ``name``, in order."""
        return [e for e in self.events if e.get("event") == name]

    @property
    def chunks(self) -> list[int]:
        return sorted(self.recs)

    @property
    def start_order(self) -> list[int]:
        return [e["pid"] for e in self.of("start") if e.get("pid")]

    def manifest_names(self) -> list[str]:
        """Every checkpoint with a manifest: the chunks, then the resume point if there is one."""
        names = [chunk_name(m) for m in self.rd.checkpoints()]
        if (self.rd.models / "resume.json").exists():
            names.append(checkpoint.RESUME)
        return names


def gather(ev: Evidence) -> Evidence:
    """Fill in what the run directory says (events, worker.log, hook log, chunk records, counts)."""
    rd = ev.rd
    ev.events = read_jsonl(rd.events)
    ev.sessions = parse_worker_log(rd.worker_log)
    ev.hook = read_jsonl(rd.root / "chaos" / "render.jsonl")
    for m in rd.chunk_records():
        d = read_json(rd.chunk_metrics(m))
        if isinstance(d, dict):
            ev.recs[m] = d
    ev.by_kind = Counter(r["kind"] for r in ev.records)
    ev.by_kind["render_fail"] = sum(1 for h in ev.hook if h.get("fail"))
    return ev


def row(name: str, ok: Any, figures: str) -> Row:
    return {"check": name, "ok": bool(ok), "figures": figures}


# ---------------------------------------------------------------- 1-3: the faults
def check_injected(ev: Evidence) -> Row:
    by_kind = ev.by_kind
    kinds_txt = ", ".join(f"{k} {by_kind[k]}" for k in KINDS if by_kind[k])
    worker_faults = sum(by_kind[k] for k in WORKER_KINDS)
    return row("faults injected", len(ev.records) == ev.n_faults and not ev.aborted,
               f"{len(ev.records)}/{ev.n_faults} ({kinds_txt}); worker faults {worker_faults}, "
               f"supervisor kills {by_kind['sup_kill']}" + (f"; ABORTED: {ev.aborted}" if ev.aborted else ""))


def _sup_kill_effect(ev: Evidence, r: dict[str, Any]) -> list[str]:
    bad = []
    if r.get("new_supervisor") is None:
        bad.append(f"#{r['i']} sup_kill: daemon start failed")
    warnings = ev.of("warning")
    w = r.get("worker")
    finished = w in ev.sessions and bool(ev.sessions[w]["done"])  # ended its chunk on its own first
    if w and not finished and not any(x.get("kind") == "orphan_worker" and f"pid {w} " in x.get("message", "")
                                      for x in warnings):
        bad.append(f"#{r['i']} sup_kill: orphan worker {w} not stopped by the new supervisor")
    if r.get("render") and not any(x.get("kind") == "orphan_render" for x in warnings):
        bad.append(f"#{r['i']} sup_kill: orphan renderer {r['render']} not stopped")
    return bad


def _fault_effect(ev: Evidence, r: dict[str, Any], exit_of: dict[Any, dict], hung: set[int]) -> list[str]:
    """What is wrong with one fault's effect (empty when it had the expected one)."""
    k, pid = r["kind"], r.get("pid")
    ex = exit_of.get(pid) if pid else None
    if k in ("segv", "kill"):
        want = "SIGSEGV" if k == "segv" else "SIGKILL"
        if not ex or ex.get("signal") != want or ex.get("reason") != "crash":
            return [f"#{r['i']} {k} pid {pid}: exit {ex and (ex.get('reason'), ex.get('signal'))}"]
    elif k == "save_crash":
        if not ex or ex.get("signal") != "SIGSEGV" or f"failpoint {r['spec']} fires" not in (ex.get("stderr_tail") or ""):
            return [f"#{r['i']} save_crash pid {pid}: exit {ex and (ex.get('reason'), ex.get('signal'))}"]
    elif k == "hang":
        if not ex or ex.get("reason") != "hang" or not any(h.get("pid") == pid for h in ev.of("hang")):
            return [f"#{r['i']} hang pid {pid}: exit {ex and ex.get('reason')}"]
    elif k == "stopcont":
        if ex and ex.get("reason") == "hang" and pid not in hung:
            return [f"#{r['i']} stopcont pid {pid}: killed as hung"]
    elif k == "corrupt":
        if not ex or ex.get("signal") != "SIGKILL":
            return [f"#{r['i']} corrupt pid {pid}: exit {ex and ex.get('signal')}"]
    elif k == "sup_kill":
        return _sup_kill_effect(ev, r)
    return []


def check_detected(ev: Evidence) -> Row:
    exit_of = {e.get("pid"): e for e in ev.of("exit")}
    hung = {r["pid"] for r in ev.records if r["kind"] == "hang" and r.get("pid")}  # hung on purpose later
    bad = [b for r in ev.records for b in _fault_effect(ev, r, exit_of, hung)]
    renders = ev.of("render")
    failed_renders = [e for e in renders if not e.get("ok")]
    hook_fails = [h for h in ev.hook if h.get("fail")]
    injected_seen = [e for e in failed_renders if "injected render failure" in (e.get("error") or "")]
    if len(injected_seen) != len(hook_fails):
        bad.append(f"render failures: hook failed {len(hook_fails)}, supervisor saw {len(injected_seen)}")
    real_render_fail = [e for e in failed_renders if "injected render failure" not in (e.get("error") or "")
                        and "stopped" not in (e.get("error") or "")]
    ok_renders = [e for e in renders if e.get("ok")]
    return row("faults detected", not bad,
               f"{len(ev.records) - len(bad)}/{len(ev.records)} faults had their expected effect; renders: "
               f"{len(ok_renders)} ok, {len(injected_seen)} injected failures, {len(real_render_fail)} other failures"
               + (f"; {'; '.join(bad[:5])}" if bad else ""))


def check_restarts(ev: Evidence) -> Row:
    exits, restarts, fatals = ev.of("exit"), ev.of("restart"), ev.of("fatal")
    failures = [e for e in exits if e.get("reason") in ("crash", "hang", "failure")]
    reasons = Counter(e.get("reason") for e in exits)
    return row("restarts", len(restarts) == len(failures) and not fatals,
               f"{len(restarts)} restarts for {len(failures)} worker failures; exits: "
               + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
               + f"; {len(ev.sup_kills)} supervisor restarts (daemon start)"
               + (f"; FATAL: {fatals[-1].get('reason')}" if fatals else ""))


# ---------------------------------------------------------------- 4-9: the run directory
def check_target(ev: Evidence) -> Row:
    chunks = ev.chunks
    return row("target reached", ev.ended_by == "DONE" and ev.final_state == "DONE" and ev.target in ev.recs
               and max(chunks, default=0) == ev.target,
               f"state {ev.final_state} via {ev.ended_by}; target chunk {ev.target}, newest chunk "
               f"{max(chunks, default=None)}; {ev.duration / 60:.1f} min")


def check_contiguous(ev: Evidence) -> Row:
    chunks = ev.chunks
    expect = list(range(EPISODES, (max(chunks) if chunks else 0) + 1, EPISODES))
    manifests = ev.rd.checkpoints()
    corrupted = Counter(r["corrupted"]["name"] for r in ev.records if r.get("corrupted"))
    done = Counter(d for s in ev.sessions.values() for d in s["done"])
    wrong_done = {chunk_name(c): done[chunk_name(c)] for c in expect
                  if done[chunk_name(c)] != 1 + corrupted[chunk_name(c)]}
    extra_done = sorted(set(done) - {chunk_name(c) for c in expect})
    return row("chunks contiguous, each once", chunks == expect and manifests == expect and not wrong_done
               and not extra_done and bool(expect),
               f"{len(chunks)} chunk records {chunks[:1]}..{chunks[-1:]} step {EPISODES}, {len(manifests)} chunk "
               f"manifests; 'done' once each ({sum(corrupted.values())} redone after a corruption: twice)"
               + (f"; records {chunks} != {expect}" if chunks != expect else "")
               + (f"; manifests {manifests}" if manifests != expect else "")
               + (f"; done counts {wrong_done}" if wrong_done else "")
               + (f"; unexpected {extra_done}" if extra_done else ""))


def check_checksums(ev: Evidence) -> Row:
    names = ev.manifest_names()
    bad_sums = []
    for n in names:
        try:
            m = checkpoint.verify(ev.rd, n)
            if n != checkpoint.RESUME:
                rec = ev.recs.get(m["chunk"], {})
                if rec.get("episodes_total") != m.get("episodes_total") or rec.get("timesteps_total") != m.get("timesteps"):
                    bad_sums.append(f"{n}: manifest totals differ from its chunk record")
        except checkpoint.DamagedCheckpoint as exc:
            bad_sums.append(f"{n}: {exc}")
    tmp_left = [p.name for p in ev.rd.models.glob(".*.tmp")]
    return row("checksums valid", not bad_sums and not tmp_left,
               f"{len(names)} manifests verified (sha256 + size of every file)"
               + (f"; {'; '.join(bad_sums[:3])}" if bad_sums else "")
               + (f"; temp files left {tmp_left}" if tmp_left else ""))


def _damaged_problems(ev: Evidence, r: dict[str, Any], damaged_dirs: list) -> list[str]:
    """One corruption: its bytes sit in exactly one damaged/ entry, logged as moved, by the first
    worker started after it, which did not load it."""
    c = r["corrupted"]
    hits = [d for d in damaged_dirs if d.name.startswith(c["name"] + ".")
            and (d / c["file"]).exists() and checkpoint.sha256_file(d / c["file"]) == c["sha256"]]
    if len(hits) != 1:
        return [f"{c['name']}/{c['file']}: {len(hits)} copies in damaged/"]
    problems = []
    moved_lines = [m for s in ev.sessions.values() for m in s["moved"]]
    if not any(m["dest"] == str(hits[0]) for m in moved_lines):
        problems.append(f"{c['name']}: no 'moved to {hits[0]}' line in worker.log")
    after = [s for pid, s in ev.sessions.items() if s["t_first"] >= r["wall"] - 0.5 and pid != r.get("pid")]
    first = min(after, key=lambda s: s["t_first"]) if after else None
    if first is None or not any(m["name"] == c["name"] for m in first["moved"]):
        problems.append(f"{c['name']}: the next worker did not move it aside")
    elif first["resumed"] and first["resumed"][0] == c["name"]:
        problems.append(f"{c['name']}: loaded by worker {first['pid']}")
    return problems


def check_damaged(ev: Evidence) -> Row:
    rd = ev.rd
    damaged_dirs = sorted(p for p in rd.damaged.iterdir() if p.is_dir()) if rd.damaged.is_dir() else []
    corrupted = [r for r in ev.records if r.get("corrupted")]
    problems = [p for r in corrupted for p in _damaged_problems(ev, r, damaged_dirs)]
    if len(damaged_dirs) != len(corrupted):
        problems.append(f"{len(damaged_dirs)} damaged entries for {len(corrupted)} corruptions: "
                        + ", ".join(d.name for d in damaged_dirs[:6]))
    return row("damaged never loaded", not problems,
               f"{len(corrupted)} corrupted -> {len(damaged_dirs)} in models/damaged/ with the corrupted bytes, "
               f"0 deleted, 0 loaded" if not problems else "; ".join(problems[:4]))


def check_monotonic(ev: Evidence) -> Row:
    mono = []
    prev = None
    chunks = ev.chunks
    for c in chunks:
        cur = ev.recs[c]
        base_e, base_t = (prev["episodes_total"], prev["timesteps_total"]) if prev else (0, 0)
        if cur["episodes_total"] - cur["episodes"] != base_e:
            mono.append(f"chunk {c}: episodes_total {cur['episodes_total']} - {cur['episodes']} != {base_e}")
        if cur["timesteps_total"] - cur["timesteps"] != base_t or cur["timesteps"] <= 0:
            mono.append(f"chunk {c}: timesteps_total {cur['timesteps_total']} - {cur['timesteps']} != {base_t}")
        if cur["episodes"] < EPISODES * N_ENVS:
            mono.append(f"chunk {c}: only {cur['episodes']} episodes")
        prev = cur
    final_eps = ev.recs[chunks[-1]]["episodes_total"] if chunks else 0
    final_ts = ev.recs[chunks[-1]]["timesteps_total"] if chunks else 0
    return row("chunks monotonic", not mono and bool(chunks),
               f"episodes_total and timesteps_total chain exactly over {len(chunks)} chunks "
               f"(final {final_eps} episodes, {final_ts} timesteps)" if not mono else "; ".join(mono[:3]))


def _newest_manifest(ev: Evidence) -> dict[str, Any]:
    """The valid manifest created last (the final chunk after DONE; after a stop, the resume point
    written by the stopped worker)."""
    newest: dict[str, Any] = {}
    for n in ev.manifest_names():
        try:
            m = checkpoint.verify(ev.rd, n)
        except checkpoint.DamagedCheckpoint:
            continue
        if m.get("created", 0) > newest.get("created", 0):
            newest = m
    return newest


def check_monitor_csv(ev: Evidence) -> Row:
    rows, t_ok, mon_err = 0, True, ""
    try:
        lines = ev.rd.monitor_csv.read_text().splitlines()
        body = lines[2:]
        ts = [float(ln.split(",")[2]) for ln in body]
        rows = len(body)
        t_ok = all(b >= a for a, b in zip(ts, ts[1:]))
        if lines[1] != "r,l,t,dist,fell":
            mon_err = f"header {lines[1]!r}"
    except (OSError, IndexError, ValueError) as exc:
        mon_err = str(exc)
    want_rows = _newest_manifest(ev).get("episodes_total", 0)
    return row("monitor.csv monotonic", rows == want_rows and t_ok and not mon_err,
               f"{rows} rows == final episodes_total {want_rows}; t column non-decreasing: {t_ok}"
               + (f"; {mon_err}" if mon_err else ""))


# ---------------------------------------------------------------- 10-13: cost and processes
def _next_resumed(ev: Evidence, victim: int) -> dict[str, Any] | None:
    """The first worker started after ``victim`` that resumed from something (its session)."""
    order = ev.start_order
    if victim not in order:
        return None
    for p in order[order.index(victim) + 1:]:
        s = ev.sessions.get(p)
        if s and s["resumed"]:
            return s
    return None


def _measure_loss(ev: Evidence, r: dict[str, Any]) -> dict[str, Any] | None:
    """Timesteps the victim of fault ``r`` had reached minus those the next worker resumed from."""
    victim = r.get("worker") if r["kind"] == "sup_kill" else r.get("pid")
    nxt = _next_resumed(ev, victim)
    if nxt is None:
        return None
    resumed_ts = nxt["resumed"][1]
    mine = ev.sessions.get(victim, {})
    at = max([ev.mon.ts_of(victim) or 0, *(mine.get("resume_points") or []),
              (mine.get("resumed") or (None, 0))[1]])
    return {"at": at, "resumed": resumed_ts, "from": nxt["resumed"][0], "lost": max(0, at - resumed_ts)}


def check_work_lost(ev: Evidence) -> Row:
    sps = ev.mon.max_sps()
    interval_s = RESUME_POINT_MINUTES * 60.0
    rollout = N_STEPS * N_ENVS
    bound = int(sps * interval_s) + rollout
    losses, over, skipped = [], [], 0
    for r in ev.records:
        victim = r.get("worker") if r["kind"] == "sup_kill" else r.get("pid")
        if r["kind"] == "stopcont" or not victim:
            continue
        lost = _measure_loss(ev, r)
        if lost is None:
            skipped += 1
            continue
        r["lost"] = lost
        if r["kind"] == "corrupt":
            continue  # a damaged checkpoint costs the chunk it held: reported, not bounded
        losses.append(lost["lost"])
        if lost["lost"] > bound:
            over.append(f"#{r['i']} {r['kind']}: lost {lost['lost']} (at {lost['at']}, resumed {lost['resumed']} "
                        f"from {lost['from']})")
    corrupt_losses = [r["lost"]["lost"] for r in ev.records if r.get("corrupted") and r.get("lost")]
    return row("work lost per fault", not over and bool(losses) and sps > 0,
               f"max {max(losses, default=0)}, mean {sum(losses) / max(len(losses), 1):.0f} timesteps over "
               f"{len(losses)} worker deaths <= bound {bound} (= {interval_s:g} s x {sps:.0f} steps/s + rollout "
               f"{rollout})" + (f"; corrupted chunks redone: {corrupt_losses}" if corrupt_losses else "")
               + (f"; {skipped} without a later worker" if skipped else "")
               + (f"; OVER: {'; '.join(over[:3])}" if over else ""))


def check_one_worker(ev: Evidence) -> Row:
    mon = ev.mon
    return row("one worker at a time", mon.max_workers <= 1,
               f"max {mon.max_workers} live train-chunk process groups over {mon.scans} process scans"
               + (f"; overlaps {mon.overlaps[:2]}" if mon.overlaps else ""))


def check_orphans(ev: Evidence) -> Row:
    return row("no orphan processes", not ev.orphans,
               f"{len(ev.orphans)} processes name the run dir after the end"
               + (f": {ev.orphans[:2]}" if ev.orphans else ""))


def check_rss(ev: Evidence) -> Row:
    """Every supervisor's RSS below the limit; growth from 10 s after its first sample bounded."""
    growths, longest = [], 0.0
    series = ev.mon.rss_series()
    for samples in series.values():
        if len(samples) < 2:
            continue
        t_first = samples[0][0]
        settled = [s for s in samples if s[0] - t_first >= 10.0]
        longest = max(longest, samples[-1][0] - t_first)
        if len(settled) >= 2:
            growths.append(settled[-1][1] - settled[0][1])
    peak = max([ev.mon.state_peak_rss] + [rss for s in series.values() for _, rss in s])
    growth = max(growths, default=0.0)
    return row("supervisor RSS flat", peak < RSS_LIMIT_MB and growth <= RSS_GROWTH_LIMIT_MB and bool(series),
               f"peak {peak:.1f} MB < {RSS_LIMIT_MB:g}; growth {growth:+.1f} MB (limit {RSS_GROWTH_LIMIT_MB:g}) over "
               f"{len(series)} supervisors, longest {longest / 60:.1f} min")


CHECKS: tuple[Callable[[Evidence], Row], ...] = (
    check_injected, check_detected, check_restarts, check_target, check_contiguous, check_checksums,
    check_damaged, check_monotonic, check_monitor_csv, check_work_lost, check_one_worker, check_orphans,
    check_rss,
)


def run_checks(ev: Evidence) -> list[Row]:
    """Every check, in the table's order (plus a failing "monitor" row if the sampling thread erred)."""
    rows = [check(ev) for check in CHECKS]
    if ev.mon.error:
        rows.append(row("monitor", False, f"sampling thread error: {ev.mon.error}"))
    return rows


# ---------------------------------------------------------------- output
def table(res: dict[str, Any]) -> str:
    """The campaign's result as the printed table (faults by kind, then one line per check)."""
    lines = [f"go2train chaos: seed {res['seed']}, {res['faults_requested']} faults, {res['minutes']:g} min budget, "
             f"{res['duration_s'] / 60:.1f} min, run dir {res['run_dir']}", "",
             f"{'fault kind':<14}{'injected':>9}"]
    lines += [f"{k:<14}{res['by_kind'].get(k, 0):>9}" for k in KINDS]
    lines += [f"{'total':<14}{sum(res['by_kind'].values()):>9}", "",
              f"{'check':<30}{'result':<8}figures"]
    for c in res["checks"]:
        lines.append(f"{c['check']:<30}{'PASS' if c['ok'] else 'FAIL':<8}{c['figures']}")
    lines += ["", "ALL CHECKS PASS" if res["ok"] else "SOME CHECKS FAILED"]
    return "\n".join(lines)
