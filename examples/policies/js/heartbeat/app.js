// heartbeat in JavaScript: Vigil's default watchdog policy. It never gives up.
//
// The same decisions as the Rust plugin in plugins/heartbeat (the shipped
// scenario policies/scenarios/heartbeat.toml runs against both, and a test
// compares every verdict, reasons included). A connected session is
// healthy. When a session stops being connected (an *outage*), the
// watchdog escalates in its own steps, whatever the probes counted:
//
// 1. reload the page (cheap: keeps the browser and the profile);
// 2. restart the browser, `restart_after_ms` after the reload, then again
//    with a doubling back-off (`backoff_ms`, 2x, 4x, ...) capped at
//    `backoff_max_ms` (15 min): a slow, visible, endless retry;
// 3. between restarts, reload the page every `reload_every_ms`;
// 4. restore from a backup only when the profile itself is damaged
//    (critical files missing, or `restore_after_launch_failures` launches
//    in a row in which Chromium refused the profile), or after
//    `restore_after_restarts` restarts that did not reconnect. Once per
//    outage.
//
// It answers give-up only when `give_up_after_restarts` is set (0, the
// default, means never). A session that needs a new login is left alone.
//
// WIT u64 values (times, config integers) are BigInts in JavaScript; the
// arithmetic stays in BigInt so it is exactly the Rust plugin's. The
// outage's steps live in the policy's memory as 8-byte little-endian
// numbers under the Rust plugin's keys, so an outage carries on when the
// policy file switches between the two.

import { nowMs } from 'vigil:policy/clock@0.2.0';
import { get as configGet } from 'vigil:policy/config@0.2.0';
import { get as memoryGet, set as memorySet, remove as memoryRemove } from 'vigil:policy/memory@0.2.0';

const U64_MAX = (1n << 64n) - 1n;

/** An integer of the policy file's [config]; the default if absent, not an integer, or negative. */
function setting(key, fallback) {
  const value = configGet(key);
  return value?.tag === 'integer' && value.val >= 0n ? value.val : fallback;
}

function settingsFromConfig() {
  return {
    restartAfterMs: setting('restart_after_ms', 20_000n),
    backoffMs: setting('backoff_ms', 30_000n),
    backoffMaxMs: setting('backoff_max_ms', 900_000n),
    reloadEveryMs: setting('reload_every_ms', 60_000n),
    restoreAfterRestarts: setting('restore_after_restarts', 5n),
    restoreAfterLaunchFailures: setting('restore_after_launch_failures', 3n),
    giveUpAfterRestarts: setting('give_up_after_restarts', 0n),
  };
}

// Memory keys, one per field of an outage.
const KEYS = {
  sinceMs: 'outage-since-ms',
  lastReloadMs: 'last-reload-ms',
  restarts: 'restarts',
  lastRestartMs: 'last-restart-ms',
  restored: 'restored',
};

/** What the watchdog remembers of the current outage (all zero: none). */
function noOutage() {
  return { sinceMs: 0n, lastReloadMs: 0n, restarts: 0n, lastRestartMs: 0n, restored: 0n };
}

function loadOutage() {
  const outage = noOutage();
  for (const [field, key] of Object.entries(KEYS)) {
    const bytes = memoryGet(key);
    if (bytes !== undefined && bytes.length === 8) {
      outage[field] = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
    }
  }
  return outage;
}

function saveOutage(outage) {
  for (const [field, key] of Object.entries(KEYS)) {
    if (outage[field] === 0n) {
      memoryRemove(key);
      continue;
    }
    const bytes = new Uint8Array(8);
    new DataView(bytes.buffer).setBigUint64(0, outage[field], true);
    try {
      memorySet(key, bytes);
    } catch {
      // A full memory forgets the outage, never the verdict.
    }
  }
}

const sameOutage = (a, b) => Object.keys(KEYS).every((field) => a[field] === b[field]);
const minus = (a, b) => (a > b ? a - b : 0n);
const min = (a, b) => (a < b ? a : b);
const secs = (ms) => (ms + 999n) / 1000n;

/** The pause before restart number n + 1, after n restarts. */
function backoff(settings, n) {
  const doublings = min(minus(n, 1n), 20n);
  return min(min(settings.backoffMs << doublings, U64_MAX), settings.backoffMaxMs);
}

/**
 * The decision: a plain function of the facts, the settings, the time and
 * the outage so far (which it updates).
 */
function judge(facts, settings, now, outage) {
  switch (facts.state) {
    case 'needs-login':
      return { tag: 'degraded', val: 'needs a new login; a restart cannot fix that' };
    case 'connected':
      if (facts.consecutiveProbeFailures === 0) {
        Object.assign(outage, noOutage());
        return { tag: 'healthy' };
      }
      break;
    case 'degraded':
      break;
    default:
      // Starting, restoring, launching, stopped, failed: the session's own
      // life is in charge, not the watchdog.
      return { tag: 'healthy' };
  }
  if (outage.sinceMs === 0n) {
    outage.sinceMs = now > 1n ? now : 1n;
  }
  const down = secs(minus(now, outage.sinceMs));
  const detail = facts.lastProbeDetail;
  const launchFailures = BigInt(facts.launchFailures);

  if (outage.restored === 0n) {
    let damage;
    if (facts.missingCriticalFiles.length > 0) {
      damage = `the profile lost ${facts.missingCriticalFiles.join(', ')}`;
    } else if (settings.restoreAfterLaunchFailures > 0n && launchFailures >= settings.restoreAfterLaunchFailures) {
      damage = `the browser refused the profile ${launchFailures} times in a row`;
    } else if (
      settings.restoreAfterRestarts > 0n &&
      outage.restarts >= settings.restoreAfterRestarts &&
      minus(now, outage.lastRestartMs) >= backoff(settings, outage.restarts)
    ) {
      damage = `${outage.restarts} restarts did not reconnect it in ${down} s`;
    }
    if (damage !== undefined) {
      outage.restored = 1n;
      outage.lastRestartMs = now;
      return { tag: 'restore-from-backup', val: `${damage}: ${detail}` };
    }
  }
  if (launchFailures > 0n) {
    // The browser is not running: the host paces its own relaunches.
    return {
      tag: 'restart-browser',
      val: `the browser did not start ${launchFailures} time(s) in a row: ${detail}`,
    };
  }
  if (outage.lastReloadMs === 0n) {
    outage.lastReloadMs = now;
    return { tag: 'reload-page', val: `not connected: ${detail}` };
  }
  const nextRestart =
    outage.restarts === 0n
      ? outage.lastReloadMs + settings.restartAfterMs
      : outage.lastRestartMs + backoff(settings, outage.restarts);
  if (now < nextRestart) {
    const wait = secs(nextRestart - now);
    if (settings.reloadEveryMs > 0n && minus(now, outage.lastReloadMs) >= settings.reloadEveryMs) {
      outage.lastReloadMs = now;
      return {
        tag: 'reload-page',
        val: `not connected for ${down} s (next restart in ${wait} s): ${detail}`,
      };
    }
    return { tag: 'degraded', val: `not connected for ${down} s; next restart in ${wait} s: ${detail}` };
  }
  if (settings.giveUpAfterRestarts > 0n && outage.restarts >= settings.giveUpAfterRestarts) {
    return {
      tag: 'give-up',
      val:
        `${outage.restarts} restarts did not reconnect it in ${down} s ` +
        `(give_up_after_restarts = ${settings.giveUpAfterRestarts}): ${detail}`,
    };
  }
  outage.restarts += 1n;
  outage.lastRestartMs = now;
  outage.lastReloadMs = now;
  return {
    tag: 'restart-browser',
    val:
      `not connected for ${down} s: restart ${outage.restarts} ` +
      `(the next in ${secs(backoff(settings, outage.restarts))} s if needed): ${detail}`,
  };
}

export function check(facts) {
  const outage = loadOutage();
  const before = { ...outage };
  const verdict = judge(facts, settingsFromConfig(), nowMs(), outage);
  if (!sameOutage(before, outage)) {
    saveOutage(outage);
  }
  return verdict;
}
