"""heartbeat in Python: Vigil's default watchdog policy. It never gives up.

The same decisions as the Rust plugin in plugins/heartbeat (the shipped
scenario policies/scenarios/heartbeat.toml runs against both, and a test
compares every verdict, reasons included). A connected session is healthy.
When a session stops being connected (an *outage*), the watchdog escalates
in its own steps, whatever the probes counted:

1. reload the page (cheap: keeps the browser and the profile);
2. restart the browser, `restart_after_ms` after the reload, then again
   with a doubling back-off (`backoff_ms`, 2x, 4x, ...) capped at
   `backoff_max_ms` (15 min): a slow, visible, endless retry;
3. between restarts, reload the page every `reload_every_ms`;
4. restore from a backup only when the profile itself is damaged
   (critical files missing, or `restore_after_launch_failures` launches in
   a row in which Chromium refused the profile), or after
   `restore_after_restarts` restarts that did not reconnect. Once per
   outage.

It answers give-up only when `give_up_after_restarts` is set (0, the
default, means never). A session that needs a new login is left alone.

The outage's steps live in the policy's memory, as 8-byte little-endian
numbers under the same keys as the Rust plugin's, so an outage carries on
when the policy file switches between the two.
"""

from dataclasses import dataclass, fields

import wit_world
from componentize_py_types import Err
from wit_world.imports import clock, config, memory
from wit_world.imports.types import (
    Facts,
    SessionState,
    Verdict,
    Verdict_Degraded,
    Verdict_GiveUp,
    Verdict_Healthy,
    Verdict_ReloadPage,
    Verdict_RestartBrowser,
    Verdict_RestoreFromBackup,
)

U64_MAX = (1 << 64) - 1


def setting(key: str, default: int) -> int:
    """An integer of the policy file's [config]; the default if absent,
    not an integer, or negative."""
    value = config.get(key)
    if isinstance(value, config.Value_Integer) and value.value >= 0:
        return value.value
    return default


@dataclass
class Settings:
    restart_after_ms: int = 20_000
    backoff_ms: int = 30_000
    backoff_max_ms: int = 900_000
    reload_every_ms: int = 60_000
    restore_after_restarts: int = 5
    restore_after_launch_failures: int = 3
    give_up_after_restarts: int = 0

    @staticmethod
    def from_config() -> "Settings":
        defaults = Settings()
        return Settings(
            **{f.name: setting(f.name, getattr(defaults, f.name)) for f in fields(Settings)}
        )


# Memory keys, in the order of Outage's fields.
KEYS = ["outage-since-ms", "last-reload-ms", "restarts", "last-restart-ms", "restored"]


@dataclass
class Outage:
    """What the watchdog remembers of the current outage (all zero: none)."""

    since_ms: int = 0
    last_reload_ms: int = 0
    restarts: int = 0
    last_restart_ms: int = 0
    restored: bool = False

    def forget(self) -> None:
        self.since_ms = self.last_reload_ms = self.restarts = self.last_restart_ms = 0
        self.restored = False

    def values(self) -> list[int]:
        return [
            self.since_ms,
            self.last_reload_ms,
            self.restarts,
            self.last_restart_ms,
            int(self.restored),
        ]

    @staticmethod
    def load() -> "Outage":
        def read(key: str) -> int:
            raw = memory.get(key)
            return int.from_bytes(raw, "little") if raw is not None and len(raw) == 8 else 0

        since, reload, restarts, restart, restored = (read(k) for k in KEYS)
        return Outage(since, reload, restarts, restart, restored != 0)

    def save(self) -> None:
        for key, value in zip(KEYS, self.values()):
            if value == 0:
                memory.remove(key)
            else:
                try:
                    memory.set(key, value.to_bytes(8, "little"))
                except Err:
                    pass  # a full memory forgets the outage, never the verdict


def backoff(settings: Settings, n: int) -> int:
    """The pause before restart number n + 1, after n restarts."""
    doublings = min(max(n - 1, 0), 20)
    return min(min(settings.backoff_ms << doublings, U64_MAX), settings.backoff_max_ms)


def secs(ms: int) -> int:
    return -(-ms // 1000)


def judge(facts: Facts, settings: Settings, now_ms: int, outage: Outage) -> Verdict:
    """The decision: a plain function of the facts, the settings, the time
    and the outage so far (which it updates)."""
    if facts.state == SessionState.NEEDS_LOGIN:
        return Verdict_Degraded("needs a new login; a restart cannot fix that")
    if facts.state == SessionState.CONNECTED and facts.consecutive_probe_failures == 0:
        outage.forget()
        return Verdict_Healthy()
    if facts.state not in (SessionState.CONNECTED, SessionState.DEGRADED):
        # Starting, restoring, launching, stopped, failed: the session's own
        # life is in charge, not the watchdog.
        return Verdict_Healthy()
    if outage.since_ms == 0:
        outage.since_ms = max(now_ms, 1)
    down = secs(max(now_ms - outage.since_ms, 0))
    detail = facts.last_probe_detail

    if not outage.restored:
        damage = None
        if facts.missing_critical_files:
            damage = f"the profile lost {', '.join(facts.missing_critical_files)}"
        elif (
            settings.restore_after_launch_failures > 0
            and facts.launch_failures >= settings.restore_after_launch_failures
        ):
            damage = f"the browser refused the profile {facts.launch_failures} times in a row"
        elif (
            settings.restore_after_restarts > 0
            and outage.restarts >= settings.restore_after_restarts
            and max(now_ms - outage.last_restart_ms, 0) >= backoff(settings, outage.restarts)
        ):
            damage = f"{outage.restarts} restarts did not reconnect it in {down} s"
        if damage is not None:
            outage.restored = True
            outage.last_restart_ms = now_ms
            return Verdict_RestoreFromBackup(f"{damage}: {detail}")
    if facts.launch_failures > 0:
        # The browser is not running: the host paces its own relaunches.
        return Verdict_RestartBrowser(
            f"the browser did not start {facts.launch_failures} time(s) in a row: {detail}"
        )
    if outage.last_reload_ms == 0:
        outage.last_reload_ms = now_ms
        return Verdict_ReloadPage(f"not connected: {detail}")
    if outage.restarts == 0:
        next_restart = outage.last_reload_ms + settings.restart_after_ms
    else:
        next_restart = outage.last_restart_ms + backoff(settings, outage.restarts)
    if now_ms < next_restart:
        wait = secs(next_restart - now_ms)
        if (
            settings.reload_every_ms > 0
            and max(now_ms - outage.last_reload_ms, 0) >= settings.reload_every_ms
        ):
            outage.last_reload_ms = now_ms
            return Verdict_ReloadPage(
                f"not connected for {down} s (next restart in {wait} s): {detail}"
            )
        return Verdict_Degraded(f"not connected for {down} s; next restart in {wait} s: {detail}")
    if settings.give_up_after_restarts > 0 and outage.restarts >= settings.give_up_after_restarts:
        return Verdict_GiveUp(
            f"{outage.restarts} restarts did not reconnect it in {down} s "
            f"(give_up_after_restarts = {settings.give_up_after_restarts}): {detail}"
        )
    outage.restarts += 1
    outage.last_restart_ms = now_ms
    outage.last_reload_ms = now_ms
    return Verdict_RestartBrowser(
        f"not connected for {down} s: restart {outage.restarts} "
        f"(the next in {secs(backoff(settings, outage.restarts))} s if needed): {detail}"
    )


class WitWorld(wit_world.WitWorld):
    def check(self, facts: Facts) -> Verdict:
        outage = Outage.load()
        before = outage.values()
        verdict = judge(facts, Settings.from_config(), clock.now_ms(), outage)
        if outage.values() != before:
            outage.save()
        return verdict
