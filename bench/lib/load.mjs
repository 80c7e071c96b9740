// Other processes' load on the machine while a workload's timed runs go on: the machine's
// busy CPU time (/proc/stat) less the harness's own and its finished children's.
import { readFileSync } from 'node:fs';

/**
 * Busy CPU time of the whole machine so far (/proc/stat, in seconds), the CPU time of this
 * process's finished children (/proc/self/stat `cutime` + `cstime`: the kernel sums each
 * reaped child's exact time, its own children's included, and rounds only the total to a
 * clock tick), and the clock.
 */
export function cpuSnap() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1, 9).map(Number);
  const self = readFileSync('/proc/self/stat', 'utf8');
  // Fields after the command's ")": state is field 3, cutime 16 and cstime 17.
  const g = self.slice(self.lastIndexOf(')') + 2).split(' ').map(Number);
  // user nice system idle iowait irq softirq steal
  return { busyS: (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / 100, childrenS: ((g[13] ?? NaN) + (g[14] ?? NaN)) / 100, ms: Date.now() };
}

/**
 * CPU used by other processes between snapshots `c0` and `c1` ({@link cpuSnap}), in cores
 * on average: the machine's busy time less the harness's own since `h0`
 * (`process.cpuUsage()`) and its children's (every run, with GNU time around it). The
 * children's time is the kernel's sum, not the runs' GNU time figures: those are cut to
 * 10 ms each (a 35 ms run's CPU time loses up to a third), which made short workloads look
 * disturbed (BENCHMARKS.md, fourteenth round). Null when it cannot be told.
 */
export function otherLoad(c0, c1, h0) {
  const h = process.cpuUsage(h0);
  const ours = c1.childrenS - c0.childrenS + (h.user + h.system) / 1e6;
  const elapsedS = (c1.ms - c0.ms) / 1000;
  if (!(elapsedS > 0) || !Number.isFinite(ours)) return null;
  return Math.max(0, (c1.busyS - c0.busyS - ours) / elapsedS);
}
