#!/usr/bin/env node
/**
 * The `vdisk` executable: runs the CLI and sets the exit status.
 */
import { main } from './main.js';

process.exitCode = await main(process.argv.slice(2));
