"""restore-default in Python: Vigil's default restore policy.

The same decisions as the Rust plugin in plugins/restore-default (the
shipped scenario policies/scenarios/restore.toml runs against both, and a
test compares every plan, reasons included). Use the profile on disk when
every required critical file is present and non-empty and no live process
holds the profile's lock. Otherwise restore the newest verified backup whose
restore has not already failed (so a failed restore moves on to the next
older one). Otherwise start fresh, which means a new login. A profile held
by a live process is never touched: the plan is to wait and decide again.

Config (all optional): `required` (list of profile-relative paths, default
["Default/IndexedDB", "Default/Local Storage"]), `wait_ms` (default 30000).
"""

import wit_world
from wit_world.imports import config
from wit_world.imports.types import (
    Backup,
    Choice_RestoreBackup,
    Choice_StartFresh,
    Choice_UseDisk,
    Choice_Wait,
    Inventory,
    LockState,
    Plan,
)


def settings() -> tuple[list[str], int]:
    required = config.get("required")
    wait_ms = config.get("wait_ms")
    return (
        required.value
        if isinstance(required, config.Value_TextList)
        else ["Default/IndexedDB", "Default/Local Storage"],
        wait_ms.value if isinstance(wait_ms, config.Value_Integer) and wait_ms.value > 0 else 30_000,
    )


def plan(inventory: Inventory, backups: list[Backup], required: list[str], wait_ms: int) -> Plan:
    """The decision: a plain function of what is on disk and in storage."""
    if inventory.exists and inventory.lock == LockState.HELD:
        return Plan(
            Choice_Wait(wait_ms), "a live process holds the profile's lock; not touching it"
        )
    missing = [
        path
        for path in required
        if not any(f.path == path and f.present and f.non_empty for f in inventory.critical_files)
    ]
    if inventory.exists and not missing:
        return Plan(Choice_UseDisk(), "the profile on disk has every critical file")
    why_not_disk = (
        f"the profile on disk lacks {', '.join(missing)}"
        if inventory.exists
        else "there is no profile on disk"
    )
    usable = [b for b in backups if b.verified and not b.restore_failed]
    if usable:
        newest = min(usable, key=lambda b: b.age_ms)
        return Plan(
            Choice_RestoreBackup(newest.id),
            f"{why_not_disk}; restoring the newest usable backup {newest.id} "
            f"({newest.age_ms // 60_000} min old)",
        )
    return Plan(
        Choice_StartFresh(),
        f"{why_not_disk} and no verified backup is left to try; a new login is needed",
    )


class WitWorld(wit_world.WitWorld):
    def decide(self, session_id: str, inventory: Inventory, backups: list[Backup]) -> Plan:
        return plan(inventory, backups, *settings())
