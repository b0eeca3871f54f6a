"""activity in Python: Vigil's default keepalive policy.

The same decisions as the Rust plugin in plugins/activity (the shipped
scenario policies/scenarios/activity.toml runs against both, and a test
compares every action). While a session's page is open (connected or
degraded) it asks for a mouse move, a key press and a screen wake lock on
every tick, so the web app sees a user and the browser does not throttle
the tab. The mouse alternates between two nearby points so each tick really
moves it; the tick count lives in the policy's memory (8 bytes, little
endian, as the Rust plugin keeps it).

Config (all optional): `key` (default "Shift"), `mouse_x`, `mouse_y`
(default 200, 200), `wake_lock` (default true).
"""

import wit_world
from componentize_py_types import Err
from wit_world.imports import config, memory
from wit_world.imports.types import (
    Action,
    Action_KeyPress,
    Action_MouseMove,
    Action_Nothing,
    Action_WakeLock,
    Facts,
    Point,
    SessionState,
)

# How far the mouse moves between ticks, in CSS pixels.
JIGGLE = 7


def coordinate(key: str, default: int) -> int:
    """A u32 of the [config]; the default if absent, not an integer or out of range."""
    value = config.get(key)
    if isinstance(value, config.Value_Integer) and 0 <= value.value < 1 << 32:
        return value.value
    return default


def activity(state: SessionState, tick: int) -> list[Action]:
    """The decision: a plain function of the session's state and the tick count."""
    if state not in (SessionState.CONNECTED, SessionState.DEGRADED):
        return [Action_Nothing()]
    key = config.get("key")
    key = key.value if isinstance(key, config.Value_Text) and key.value else "Shift"
    offset = 0 if tick % 2 == 0 else JIGGLE
    actions: list[Action] = [
        Action_MouseMove(
            Point(coordinate("mouse_x", 200) + offset, coordinate("mouse_y", 200) + offset)
        ),
        Action_KeyPress(key),
    ]
    wake_lock = config.get("wake_lock")
    if not (isinstance(wake_lock, config.Value_Boolean) and not wake_lock.value):
        actions.append(Action_WakeLock())
    return actions


class WitWorld(wit_world.WitWorld):
    def tick(self, facts: Facts) -> list[Action]:
        raw = memory.get("tick")
        tick = int.from_bytes(raw, "little") if raw is not None and len(raw) == 8 else 0
        try:
            memory.set("tick", ((tick + 1) % (1 << 64)).to_bytes(8, "little"))
        except Err:
            pass  # a full memory only costs the jiggle, never the keepalive itself
        return activity(facts.state, tick)
