// activity in JavaScript: Vigil's default keepalive policy.
//
// The same decisions as the Rust plugin in plugins/activity (the shipped
// scenario policies/scenarios/activity.toml runs against both, and a test
// compares every action). While a session's page is open (connected or
// degraded) it asks for a mouse move, a key press and a screen wake lock on
// every tick, so the web app sees a user and the browser does not throttle
// the tab. The mouse alternates between two nearby points so each tick
// really moves it; the tick count lives in the policy's memory (8 bytes,
// little endian, as the Rust plugin keeps it).
//
// Config (all optional): `key` (default "Shift"), `mouse_x`, `mouse_y`
// (default 200, 200), `wake_lock` (default true).

import { get as configGet } from 'vigil:policy/config@0.2.0';
import { get as memoryGet, set as memorySet } from 'vigil:policy/memory@0.2.0';

// How far the mouse moves between ticks, in CSS pixels.
const JIGGLE = 7;

/** A u32 of the [config]; the default if absent, not an integer or out of range. */
function coordinate(key, fallback) {
  const value = configGet(key);
  return value?.tag === 'integer' && value.val >= 0n && value.val < 1n << 32n ? Number(value.val) : fallback;
}

/** The decision: a plain function of the session's state and the tick count. */
function activity(state, tick) {
  if (state !== 'connected' && state !== 'degraded') {
    return [{ tag: 'nothing' }];
  }
  const key = configGet('key');
  const offset = tick % 2n === 0n ? 0 : JIGGLE;
  const actions = [
    {
      tag: 'mouse-move',
      val: { x: coordinate('mouse_x', 200) + offset, y: coordinate('mouse_y', 200) + offset },
    },
    { tag: 'key-press', val: key?.tag === 'text' && key.val !== '' ? key.val : 'Shift' },
  ];
  const wakeLock = configGet('wake_lock');
  if (!(wakeLock?.tag === 'boolean' && wakeLock.val === false)) {
    actions.push({ tag: 'wake-lock' });
  }
  return actions;
}

export function tick(facts) {
  const stored = memoryGet('tick');
  const tick =
    stored !== undefined && stored.length === 8
      ? new DataView(stored.buffer, stored.byteOffset, 8).getBigUint64(0, true)
      : 0n;
  const next = new Uint8Array(8);
  new DataView(next.buffer).setBigUint64(0, BigInt.asUintN(64, tick + 1n), true);
  try {
    memorySet('tick', next);
  } catch {
    // A full memory only costs the jiggle, never the keepalive itself.
  }
  return activity(facts.state, tick);
}
