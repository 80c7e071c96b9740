/**
 * The bench's "other load" (bench/lib/load.mjs): the harness's children's CPU time is read
 * from the kernel's sum, to within a clock tick or two, and what is left of the machine's
 * busy time is divided by the elapsed time.
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { cpuSnap, otherLoad } from '../bench/lib/load.mjs';

describe('bench: other processes\' load', () => {
  it("counts a finished child's CPU time (a 300 ms busy loop) among the harness's children", () => {
    const c0 = cpuSnap();
    const r = spawnSync(process.execPath, ['-e', 'const t = process.cpuUsage(); for (;;) { const u = process.cpuUsage(t); if (u.user + u.system >= 300_000) break; }'], { stdio: 'ignore' });
    expect(r.status).toBe(0);
    const c1 = cpuSnap();
    const children = c1.childrenS - c0.childrenS;
    // The loop's 0.3 s of CPU time and Node's start, rounded to 10 ms ticks.
    expect(children).toBeGreaterThanOrEqual(0.29);
    expect(children).toBeLessThan(0.6);
    // The machine was at least that busy meanwhile.
    expect(c1.busyS - c0.busyS).toBeGreaterThanOrEqual(children - 0.03);
  });

  it('divides the busy time left by the elapsed time, never below zero', () => {
    const h0 = process.cpuUsage();
    const c0 = { busyS: 100, childrenS: 10, ms: 1_000_000 };
    // 2 s elapsed; the machine 2.0 s busier, the children 1.0 s: about half a core of other load.
    const load = otherLoad(c0, { busyS: 102, childrenS: 11, ms: 1_002_000 }, h0);
    expect(load).not.toBeNull();
    expect(load as number).toBeGreaterThan(0.45);
    expect(load as number).toBeLessThanOrEqual(0.5);
    expect(otherLoad(c0, { busyS: 100.5, childrenS: 11, ms: 1_002_000 }, h0)).toBe(0);
    expect(otherLoad(c0, { busyS: 102, childrenS: Number.NaN, ms: 1_002_000 }, h0)).toBeNull();
    expect(otherLoad(c0, { busyS: 102, childrenS: 11, ms: 1_000_000 }, h0)).toBeNull();
  });
});
