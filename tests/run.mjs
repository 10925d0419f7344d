// Runs test files as `node --test` does (each file in its own process, `concurrency` files at a
// time, the spec reporter, exit status 1 when a test fails), but starts the files that took
// longest in the previous run first. Most of the end-to-end suite's time is spent waiting on the
// clock (a rate-limit window, retry-afters, cooldowns, timeouts), not computing, so several files
// run at once on two cores; the run then lasts about as long as its longest file, provided that
// file does not start last, which `node --test` (files in name order) cannot promise.
//
//   node tests/run.mjs [--concurrency N] [--times FILE] DIR|FILE...
//
// The times (milliseconds per file, summed over its top-level tests) are written to FILE after
// every run; without it, or for a file it does not list yet, files start in name order.

import { readdirSync, readFileSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { run } from 'node:test';
import { spec } from 'node:test/reporters';

function parseArgs(argv) {
  const options = { concurrency: 2, times: undefined, paths: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--concurrency') {
      options.concurrency = Number(argv[++i]);
      if (!Number.isInteger(options.concurrency) || options.concurrency < 1) throw new Error(`--concurrency must be a positive integer, got '${argv[i]}'`);
    } else if (arg === '--times') {
      options.times = argv[++i];
      if (!options.times) throw new Error('--times needs a file');
    } else {
      options.paths.push(arg);
    }
  }
  if (options.paths.length === 0) throw new Error('usage: node tests/run.mjs [--concurrency N] [--times FILE] DIR|FILE...');
  return options;
}

/** The `*.test.mjs` files under each path (a directory's, in name order; a file as it is). */
function testFiles(paths) {
  return paths.flatMap((p) => {
    const resolved = path.resolve(p);
    if (!statSync(resolved).isDirectory()) return [resolved];
    return readdirSync(resolved)
      .filter((f) => f.endsWith('.test.mjs'))
      .sort()
      .map((f) => path.join(resolved, f));
  });
}

function readTimes(file) {
  if (!file) return {};
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    return {};
  }
}

const options = parseArgs(process.argv.slice(2));
const root = process.cwd();
const key = (file) => path.relative(root, file);
const previous = readTimes(options.times);
// Longest first. A file without a time (new, or the first run) comes before the timed ones, since
// it may be long; such files keep their name order (Array.prototype.sort is stable).
const lastTime = (file) => previous[key(file)] ?? Number.MAX_VALUE;
const files = testFiles(options.paths).sort((a, b) => lastTime(b) - lastTime(a));

const times = {};
const stream = run({ files, concurrency: options.concurrency });
const record = ({ nesting, file, details }) => {
  if (nesting === 0 && file) times[key(file)] = (times[key(file)] ?? 0) + details.duration_ms;
};
stream.on('test:pass', record);
stream.on('test:fail', (data) => {
  process.exitCode = 1;
  record(data);
});
stream.on('end', () => {
  if (!options.times) return;
  mkdirSync(path.dirname(options.times), { recursive: true });
  writeFileSync(options.times, `${JSON.stringify(times, null, 1)}\n`);
});
stream.compose(spec).pipe(process.stdout);
