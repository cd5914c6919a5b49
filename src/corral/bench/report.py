"""One Rich table of a suite's figures, with Corral's as a share of the floors measured in
the same run and as a ratio to each peer's."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def _pp(d: dict[str, Any] | None, unit: str = "ms") -> str:
    return f"{d['p50']} / {d['p99']} {unit}" if d else "—"


def _share(part: float | None, whole: float | None) -> str:
    return f"{100 * part / whole:.0f} %" if part and whole else ""


def _times(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else ""


def table(result: dict[str, Any]) -> Table:
    t = Table(title=f"corral bench ({result['db']}, {result['machine']['cpus']} CPUs)",
              title_justify="left")  # fmt: skip
    for col, justify in (("scenario", "left"), ("measure", "left"), ("value", "right"),
                         ("against", "left")):  # fmt: skip
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    sc, peers = result["scenarios"], result["peers"]
    floors = sc.get("floors", {})
    spawn_s = floors.get("spawn", {}).get("per_s")
    http = floors.get("http", {})

    def row(name: str, measure: str, value: str, against: str = "") -> None:
        t.add_row(name, measure, value, against)

    for name, r in sc.items():
        if "error" in r or "skipped" in r:
            row(name, "error" if "error" in r else "skipped", "", r.get("error") or r["skipped"])
            continue
        if name == "floors":
            s = r["spawn"]
            row(
                name,
                f"spawn `true` from asyncio, {s['in_flight']} in flight",
                f"{s['per_s']:.0f} /s",
                f"{s['cpu_ms_per_spawn']} ms CPU per spawn",
            )
            row(
                name,
                "bare FastAPI POST on uvicorn, one process",
                f"{http['per_s']:.0f} req/s",
                f"one at a time {_pp(http['sequential_ms'])}",
            )
        elif name == "dispatch":
            outcome = ", ".join(f"{n} {s}" for s, n in sorted(r["states"].items()))
            row(
                name,
                f"{r['params']['jobs']} x `true`, {r['params']['workers']} workers x "
                f"{r['params']['max_concurrent_tasks']} slots",
                outcome,
            )
            row(
                name,
                "end to end",
                f"{r['jobs_per_s']:.0f} jobs/s",
                f"= {_share(r['jobs_per_s'], spawn_s)} of the spawn floor" if spawn_s else "",
            )
            row(name, "submit rate", f"{r['submit_per_s']:.0f} jobs/s")
            row(name, "submit→start p50 / p99", _pp(r["submit_to_start_ms"]))
            row(name, "submit→end p50 / p99", _pp(r["submit_to_end_ms"]))
            for role, ms in r["cpu_ms_per_job"].items():
                row(name, f"CPU per job: {role}", f"{ms} ms")
            for role, mib in r["rss_mib"].items():
                row(name, f"RSS: {role}", f"{mib} MiB")
        elif name == "roundtrip":
            row(name, "submit→end p50 / p99 (coordinator's clock)", _pp(r["submit_to_end_ms"]))
            p50 = r["client_submit_to_result_ms"].get("p50")
            bare = http.get("sequential_ms", {}).get("p50")
            row(
                name,
                "submit→result p50 / p99 (client's clock)",
                _pp(r["client_submit_to_result_ms"]),
                f"= {p50 / bare:.0f}x one bare POST" if p50 and bare else "",
            )
        elif name == "calls":
            row(
                name, f"{r['params']['tasks']} no-op calls in one map", f"{r['tasks_per_s']:.0f} /s"
            )
            row(name, "one call at a time p50 / p99", _pp(r["roundtrip_ms"]))
            row(name, "CPU per call: total", f"{r['cpu_ms_per_task']['total']} ms")
        elif name == "kill":
            row(
                name,
                f"SIGKILL → running again elsewhere, p50 / p99 ({len(r['kills'])} kills)",
                _pp(r["kill_to_running_again_s"], "s"),
                "default settings",
            )
        elif name == "fleet":
            p = r["params"]
            row(
                name,
                "simulated workers connected",
                f"{r['connected_after_roundtrips']:,}",
                f"of {p['simulated_workers']:,}; ramp {r['ramp_s']} s, "
                f"{p['generator_processes']} generator processes",
            )
            row(
                name,
                "coordinator CPU, steady state",
                f"{r['coordinator_cores']} cores",
                f"over {p['steady_s']:.0f} s; {r['heartbeats_per_s']} heartbeats/s; "
                f"generators {r['generators_cores']} cores",
            )
            row(
                name,
                "coordinator RSS",
                f"{r['coordinator_rss_mib']} MiB",
                f"{r['coordinator_rss_idle_mib']} MiB before the fleet",
            )
            row(
                name,
                "real worker: submit→end p50 / p99",
                _pp(r["roundtrip_submit_to_end_ms"]),
                f"client's clock {_pp(r['roundtrip_client_ms'])}",
            )
        row(name, "scenario took", f"{r['scenario_s']} s")
    for name, r in peers.items():
        if "skipped" in r:
            row(name, "skipped", "", r["skipped"])
            continue
        label = f"{name} {r.get('version', '')}"
        corral_calls = sc.get("calls", {}).get("tasks_per_s")
        row(
            label,
            f"{r['tasks']} no-op tasks end to end",
            f"{r['noop_tasks_per_s']:.0f} /s",
            f"Corral calls/{name}: {_times(corral_calls, r['noop_tasks_per_s'])}"
            if corral_calls
            else f"{r['noop_cpu_ms_per_task']} ms CPU per task",
        )
        corral_rt = sc.get("roundtrip", {}).get("client_submit_to_result_ms", {}).get("p50")
        row(
            label,
            "no-op round trip p50 / p99",
            _pp(r["roundtrip_ms"]),
            f"Corral `true` round trip/{name}: {_times(corral_rt, r['roundtrip_ms'].get('p50'))}"
            if corral_rt
            else "",
        )
        corral_pj = sc.get("dispatch", {}).get("jobs_per_s")
        row(
            label,
            f"{r['process_tasks']} tasks running `true`",
            f"{r['process_tasks_per_s']:.0f} /s",
            f"Corral/{name}: {_times(corral_pj, r['process_tasks_per_s'])}" if corral_pj else "",
        )
    return t
