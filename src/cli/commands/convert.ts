/**
 * `vdisk convert -O raw [-p] SRC DST`.
 */
import { InvalidArgumentError } from '../../errors.js';
import type { Image } from '../../image.js';
import { convertToRaw } from '../../ops/convert-raw.js';
import { ProgressBar } from '../progress.js';

/** Options of the convert command after parsing. */
export interface ConvertCommandOptions {
  readonly outputFormat: string;
  readonly progress: boolean;
}

/** Runs the convert command. */
export async function runConvert(img: Image, destination: string, opts: ConvertCommandOptions): Promise<void> {
  if (opts.outputFormat !== 'raw') {
    throw new InvalidArgumentError('ARG_OUTPUT_FORMAT', `output format '${opts.outputFormat}' is not supported (only raw)`, {
      field: '-O', value: opts.outputFormat, limit: 'raw',
    });
  }
  const bar = opts.progress ? new ProgressBar() : null;
  try {
    await convertToRaw(img, destination, bar === null ? {} : { onProgress: (d, t) => bar.update(d, t) });
  } finally {
    bar?.finish();
  }
}
