/** A reading of the machine's and this process's children's CPU time (load.mjs). */
export interface CpuSnap {
  readonly busyS: number;
  readonly childrenS: number;
  readonly ms: number;
}
export function cpuSnap(): CpuSnap;
export function otherLoad(c0: CpuSnap, c1: CpuSnap, h0: NodeJS.CpuUsage): number | null;
