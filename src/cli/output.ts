/**
 * Buffered writing to stdout that respects back-pressure, so large maps stream out with
 * bounded memory.
 */

/** Accumulates text and flushes it in large chunks. */
export class Output {
  private parts: string[] = [];
  private size = 0;

  /** `stream`: where it writes; a printer that writes there directly flushes this first. */
  constructor(readonly stream: NodeJS.WritableStream = process.stdout) {}

  /** Queues `text`; flushes when 64 KiB are pending. */
  async write(text: string): Promise<void> {
    this.parts.push(text);
    this.size += text.length;
    if (this.size >= 65536) await this.flush();
  }

  /** Writes everything pending and waits for the stream to drain if it asked to. */
  async flush(): Promise<void> {
    if (this.parts.length === 0) return;
    const chunk = this.parts.join('');
    this.parts = [];
    this.size = 0;
    if (!this.stream.write(chunk)) {
      await new Promise<void>((resolve) => this.stream.once('drain', resolve));
    }
  }
}
