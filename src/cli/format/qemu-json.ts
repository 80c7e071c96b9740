/**
 * JSON printed the way QEMU's pretty printer does (4-space indent, `[\n<indent>]` for
 * empty lists). Key order is the object's own order.
 */

/** Serialises `v` as qemu-img's `--output=json` does. */
export function qemuJson(v: unknown, indent = 0): string {
  const pad = (n: number): string => ' '.repeat(4 * n);
  if (Array.isArray(v)) {
    if (v.length === 0) return `[\n${pad(indent)}]`;
    return `[\n${v.map((x) => pad(indent + 1) + qemuJson(x, indent + 1)).join(',\n')}\n${pad(indent)}]`;
  }
  if (v !== null && typeof v === 'object') {
    const entries = Object.entries(v).filter(([, x]) => x !== undefined);
    if (entries.length === 0) return `{\n${pad(indent)}}`;
    return `{\n${entries.map(([k, x]) => `${pad(indent + 1)}${JSON.stringify(k)}: ${qemuJson(x, indent + 1)}`).join(',\n')}\n${pad(indent)}}`;
  }
  return JSON.stringify(v);
}
