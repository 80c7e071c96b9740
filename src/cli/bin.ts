#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS node
/**
 * The `vdisk` executable: runs the CLI and sets the exit status.
 *
 * The launcher line drops `NODE_EXTRA_CA_CERTS`: Node 20 reads and parses that CA bundle
 * at every start (70 ms of a 100 ms start-up on the machines this was measured on), and
 * vdisk opens no network connection, so the certificates can never matter to it. It needs
 * an `env` that knows `-S` (GNU coreutils 8.30+, BSD and macOS); elsewhere run
 * `node dist/cli/bin.js`.
 */
import { main } from './main.js';
import { watchStdoutErrors } from './stdout-errors.js';
import { finish } from './finish.js';

watchStdoutErrors();
finish(await main(process.argv.slice(2)));
