/**
 * A progress bar for long operations: percent, throughput and time left, redrawn in place
 * at most ten times a second — only on a terminal; otherwise it prints nothing.
 */

/** Draws progress on `stream` when it is a TTY. */
export class ProgressBar {
  private readonly started = Date.now();
  private lastDraw = 0;
  private drawn = false;

  constructor(private readonly stream: NodeJS.WriteStream = process.stdout) {}

  /** Whether anything will be drawn. */
  get active(): boolean {
    return this.stream.isTTY === true;
  }

  /** Reports `done` of `total` bytes. */
  update(done: number, total: number): void {
    if (!this.active) return;
    const now = Date.now();
    if (now - this.lastDraw < 100 && done < total) return;
    this.lastDraw = now;
    this.drawn = true;
    this.stream.write('\r' + renderProgress(done, total, (now - this.started) / 1000));
  }

  /** Ends the line. */
  finish(): void {
    if (this.active && this.drawn) this.stream.write('\n');
  }
}

/** One line of progress: bar, percent, throughput, time left. */
export function renderProgress(done: number, total: number, seconds: number): string {
  const frac = total === 0 ? 1 : Math.min(1, done / total);
  const width = 30;
  const filled = Math.round(frac * width);
  const rate = seconds > 0 ? done / seconds : 0;
  const left = rate > 0 ? (total - done) / rate : NaN;
  return (
    `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(frac * 100).toFixed(1).padStart(5)}%  ` +
    `${(rate / 2 ** 20).toFixed(1)} MiB/s  ${Number.isFinite(left) ? clock(left) : '--:--'} left `
  );
}

function clock(s: number): string {
  const t = Math.ceil(s);
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  const sec = t % 60;
  const mm = String(m).padStart(2, '0');
  const ss = String(sec).padStart(2, '0');
  return h > 0 ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}
