#!/usr/bin/env node
// Generates, at build time, the cl100k_base decode table the worker loads from its static
// assets when an embeddings `input` arrives as token ids (src/tokens.rs has the format). The
// vocabulary comes from the npm package js-tiktoken (pinned in package.json), so the build needs
// no download beyond the registry; the table (about 1 MB) is never committed nor built into
// the wasm.
//
//   node tools/cl100k_table.mjs <assets dir>                      the worker's table
//   node tools/cl100k_table.mjs <assets dir> --tiktoken-cache <dir>  also tiktoken's cache file,
//                                   so Python clients (tiktoken, LangChain) work offline
//
// The vocabulary is checked against the SHA-256 that tiktoken pins for OpenAI's own file, so a
// changed or corrupted package fails the build instead of decoding wrongly.

import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import ranks from 'js-tiktoken/ranks/cl100k_base';

const TABLE_FILE = 'cl100k_base.tokens';
const TIKTOKEN_URL = 'https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken';
// tiktoken_ext/openai_public.py, cl100k_base's expected_hash.
const TIKTOKEN_SHA256 = '223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7';

/** Rank → token bytes, from js-tiktoken's compressed form: "<tag> <first rank> <b64> <b64> ...". */
function mergeableRanks() {
  const tokens = [];
  for (const line of ranks.bpe_ranks.split('\n')) {
    if (!line) continue;
    const [, first, ...encoded] = line.split(' ');
    const offset = Number.parseInt(first, 10);
    encoded.forEach((b64, i) => {
      tokens[offset + i] = Buffer.from(b64, 'base64');
    });
  }
  return tokens;
}

/** The `.tiktoken` file OpenAI publishes: "<b64> <rank>" lines in rank order. */
function tiktokenFile(tokens) {
  return Buffer.from(tokens.map((t, rank) => `${t.toString('base64')} ${rank}\n`).join(''));
}

/** The worker's format: u32 count, count + 1 u32 offsets, then the bytes (little-endian). */
function workerTable(tokens, special) {
  const all = [...tokens];
  for (const [text, id] of Object.entries(special)) all[id] = Buffer.from(text);
  const count = all.length;
  const offsets = Buffer.alloc(4 * (count + 2));
  offsets.writeUInt32LE(count, 0);
  let at = 0;
  for (let t = 0; t < count; t++) {
    offsets.writeUInt32LE(at, 4 * (t + 1));
    at += all[t]?.length ?? 0; // a gap between ranks and special tokens: empty, "no such token"
  }
  offsets.writeUInt32LE(at, 4 * (count + 1));
  return Buffer.concat([offsets, ...all.filter(Boolean)]);
}

/** Writes atomically: a concurrent build never reads half a file. */
function write(file, bytes) {
  mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, bytes);
  renameSync(tmp, file);
}

function main(argv) {
  const [assetsDir, flag, cacheDir] = argv;
  if (!assetsDir || (flag !== undefined && (flag !== '--tiktoken-cache' || !cacheDir))) {
    throw new Error('usage: node tools/cl100k_table.mjs <assets dir> [--tiktoken-cache <dir>]');
  }
  const tokens = mergeableRanks();
  if (tokens.length !== 100256 || tokens.some((t) => !t || t.length === 0)) {
    throw new Error(`js-tiktoken's cl100k_base has ${tokens.length} ranks with gaps; expected 100256 without`);
  }
  const published = tiktokenFile(tokens);
  const sha = createHash('sha256').update(published).digest('hex');
  if (sha !== TIKTOKEN_SHA256) throw new Error(`cl100k_base from js-tiktoken does not match OpenAI's file (sha256 ${sha})`);

  const table = workerTable(tokens, ranks.special_tokens);
  const tableFile = path.join(assetsDir, TABLE_FILE);
  if (!sameFile(tableFile, table)) write(tableFile, table);
  if (cacheDir) {
    // tiktoken looks its cache up by the SHA-1 of the URL it would download from.
    const name = createHash('sha1').update(TIKTOKEN_URL).digest('hex');
    write(path.join(cacheDir, name), published);
  }
}

function sameFile(file, bytes) {
  try {
    return readFileSync(file).equals(bytes);
  } catch {
    return false;
  }
}

main(process.argv.slice(2));
