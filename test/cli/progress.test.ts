/**
 * The convert progress bar: percent, throughput and time left on a terminal; nothing at all
 * when the stream is not a TTY.
 */
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ProgressBar, renderProgress } from '../../src/cli/progress.js';

function sink(tty: boolean): { stream: NodeJS.WriteStream; text: () => string } {
  const chunks: string[] = [];
  const w = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  }) as unknown as NodeJS.WriteStream;
  (w as { isTTY: boolean }).isTTY = tty;
  return { stream: w, text: () => chunks.join('') };
}

describe('renderProgress', () => {
  it('shows the bar, the percentage, the throughput and the time left', () => {
    const line = renderProgress(512 * 2 ** 20, 1024 * 2 ** 20, 4);
    expect(line).toMatch(/^\[#{15}\.{15}\]  50\.0%  128\.0 MiB\/s  00:04 left $/);
  });

  it('handles the start and a zero-sized total', () => {
    expect(renderProgress(0, 100, 0)).toContain('--:-- left');
    expect(renderProgress(0, 0, 1)).toContain('100.0%');
  });

  it('prints hours when the time left is long', () => {
    expect(renderProgress(2 ** 20, 10000 * 2 ** 20, 1)).toContain('2:46:39 left');
  });
});

describe('ProgressBar', () => {
  it('draws on a terminal and ends the line', () => {
    const s = sink(true);
    const bar = new ProgressBar(s.stream);
    bar.update(10, 100);
    bar.update(100, 100);
    bar.finish();
    expect(s.text()).toMatch(/^\r\[.*100\.0%.*\n$/s);
  });

  it('prints nothing when the stream is not a TTY', () => {
    const s = sink(false);
    const bar = new ProgressBar(s.stream);
    bar.update(10, 100);
    bar.update(100, 100);
    bar.finish();
    expect(s.text()).toBe('');
  });
});
