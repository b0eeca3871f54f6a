// restore-default in JavaScript: Vigil's default restore policy.
//
// The same decisions as the Rust plugin in plugins/restore-default (the
// shipped scenario policies/scenarios/restore.toml runs against both, and a
// test compares every plan, reasons included). Use the profile on disk when
// every required critical file is present and non-empty and no live process
// holds the profile's lock. Otherwise restore the newest verified backup
// whose restore has not already failed (so a failed restore moves on to the
// next older one). Otherwise start fresh, which means a new login. A
// profile held by a live process is never touched: the plan is to wait and
// decide again.
//
// Config (all optional): `required` (list of profile-relative paths,
// default ["Default/IndexedDB", "Default/Local Storage"]), `wait_ms`
// (default 30000). WIT u64 values (ages, wait_ms) are BigInts here.

import { get as configGet } from 'vigil:policy/config@0.2.0';

function settings() {
  const required = configGet('required');
  const waitMs = configGet('wait_ms');
  return {
    required: required?.tag === 'text-list' ? required.val : ['Default/IndexedDB', 'Default/Local Storage'],
    waitMs: waitMs?.tag === 'integer' && waitMs.val > 0n ? waitMs.val : 30_000n,
  };
}

/** The decision: a plain function of what is on disk and in storage. */
function plan(inventory, backups, { required, waitMs }) {
  if (inventory.exists && inventory.lock === 'held') {
    return {
      choice: { tag: 'wait', val: waitMs },
      reason: "a live process holds the profile's lock; not touching it",
    };
  }
  const missing = required.filter(
    (path) => !inventory.criticalFiles.some((f) => f.path === path && f.present && f.nonEmpty),
  );
  if (inventory.exists && missing.length === 0) {
    return { choice: { tag: 'use-disk' }, reason: 'the profile on disk has every critical file' };
  }
  const whyNotDisk = inventory.exists
    ? `the profile on disk lacks ${missing.join(', ')}`
    : 'there is no profile on disk';
  let newest;
  for (const backup of backups) {
    if (backup.verified && !backup.restoreFailed && (newest === undefined || backup.ageMs < newest.ageMs)) {
      newest = backup;
    }
  }
  if (newest !== undefined) {
    return {
      choice: { tag: 'restore-backup', val: newest.id },
      reason: `${whyNotDisk}; restoring the newest usable backup ${newest.id} (${newest.ageMs / 60_000n} min old)`,
    };
  }
  return {
    choice: { tag: 'start-fresh' },
    reason: `${whyNotDisk} and no verified backup is left to try; a new login is needed`,
  };
}

export function decide(sessionId, inventory, backups) {
  return plan(inventory, backups, settings());
}
