#!/usr/bin/env node
// `node tools/plain_entry.mjs <out-dir>`: after worker-build, makes the worker's default export a
// plain object whose `fetch` calls the wasm directly, with the same recovery from a wasm trap.
//
// worker-build 0.8.7's glue exports the fetch handler as a `WorkerEntrypoint` class behind a
// `Proxy`: for each request the runtime constructs the class (a native `WorkerEntrypoint` too),
// the proxy builds a second proxy around the instance, and every property the runtime and the
// handler read (`fetch`, `this.env`, `this.ctx`) goes through a trap, `fetch` wrapped in yet
// another proxy. A plain `{ fetch(request, env, ctx) }` costs none of that. What the proxies
// are for is kept: the wasm is reinitialised before a call after a trap, and a trap in the call
// is recorded. The Durable Object classes keep their proxies (one instance per object).
//
// The glue is minified, so its names are found by the code around them; if worker-build's
// output ever differs, this fails the build rather than leave the glue half changed.

import fs from 'node:fs';
import path from 'node:path';

const file = path.join(process.argv[2], 'index.js');
let js = fs.readFileSync(file, 'utf8');
const id = '[\\w$]+';

function find(re, what) {
  const m = js.match(re);
  if (!m) throw new Error(`${file}: cannot find ${what}; worker-build's glue changed (tools/plain_entry.mjs)`);
  return m;
}

// class N extends WorkerEntrypoint {}; N.prototype.fetch = function (t) { return wasmFetch.call(this, t, this.env, this.ctx) }
const [, entry, , wasmFetch] = find(
  new RegExp(`var (${id})=class extends ${id}\\{\\};\\1\\.prototype\\.fetch=function\\((${id})\\)\\{return (${id})\\.call\\(this,\\2,this\\.env,this\\.ctx\\)\\};`),
  'the entrypoint class',
);
// checkReinitialize(): reinitialises the wasm after a trap.
const [, reinit] = find(new RegExp(`function (${id})\\(\\)\\{${id}\\.criticalError&&\\(console\\.log\\("Reinitializing Wasm application"\\)`), 'checkReinitialize');
// handleMaybeCritical(e): records a trap.
const [, critical] = find(new RegExp(`function (${id})\\((${id})\\)\\{\\2 instanceof WebAssembly\\.RuntimeError&&`), 'handleMaybeCritical');
// The default export: a proxy of the entrypoint class.
const [, exported] = find(new RegExp(`export\\{[^}]*\\b(${id}) as default\\}`), 'the default export');
const proxied = `${exported}=new Proxy(${entry},`;
const at = js.indexOf(proxied);
if (at < 0 || js.indexOf(proxied, at + 1) >= 0) throw new Error(`${file}: cannot find the default export's proxy (tools/plain_entry.mjs)`);
const end = js.indexOf(')', at + proxied.length);
// The same as the proxy's `apply` trap for a plain function: reinitialise, call, record a trap.
const plain =
  `${exported}={fetch($request,$env,$ctx){${reinit}();` +
  `try{return ${wasmFetch}($request,$env,$ctx)}catch($error){throw ${critical}($error),$error}}}`;
js = js.slice(0, at) + plain + js.slice(end + 1);
fs.writeFileSync(file, js);
