// The sharp peer: the same job as bench_pyvips in a loop, one process per core, libvips single-threaded.
// Usage: node sharp_loop.js SPEC_JSON OUT_DIR --index I. Speaks run_loop_group's protocol: prints "ready"
// after a warm-up pass, waits for "go SECONDS" on stdin, prints one JSON line of figures. With --once it
// writes one output per file and exits (bench_colour).
"use strict";
const fs = require("fs");
const path = require("path");
const readline = require("readline");
const sharp = require("sharp");

sharp.concurrency(1); // one libvips thread per image: the process count is the parallelism
sharp.cache(false);   // a thumbnailer sees each file once; the operation cache only costs memory here

const spec = JSON.parse(process.argv[2]);
const outDir = process.argv[3];
const index = Number(process.argv[process.argv.indexOf("--index") + 1] || 0);
const { width, height, quality } = spec.op;

async function work(file) {
  const data = await fs.promises.readFile(file);
  const out = await sharp(data, { failOn: "warning" })
    .rotate() // EXIF auto-orientation
    .resize(width, height || undefined, { fit: "inside" })
    .flatten({ background: "#ffffff" })
    .jpeg({ quality }) // sharp's default: optimiseCoding true, 4:2:0, sRGB output with the input's profile imported
    .toBuffer();
  await fs.promises.writeFile(path.join(outDir, path.basename(file) + ".jpg"), out);
}

async function main() {
  for (const f of spec.files) await work(f);
  if (process.argv.includes("--once")) return; // bench_colour: one output per file, no timing
  process.stdout.write("ready\n");
  const rl = readline.createInterface({ input: process.stdin });
  const line = await new Promise((resolve) => rl.once("line", resolve));
  rl.close();
  const seconds = Number(line.split(" ")[1]);
  const lat = [];
  const perFile = {};
  let i = index;
  const start = Date.now() / 1000;
  const stop = start + seconds;
  while (Date.now() / 1000 < stop) {
    const f = spec.files[i % spec.files.length];
    const t0 = process.hrtime.bigint();
    await work(f);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    lat.push(ms);
    (perFile[path.basename(f)] ||= []).push(ms);
    i++;
  }
  const end = Date.now() / 1000;
  // VmHWM, not resourceUsage().maxRSS: the latter keeps the forking parent's peak across exec.
  const hwm = /VmHWM:\s+(\d+)/.exec(fs.readFileSync("/proc/self/status", "utf8"));
  const maxrss = hwm ? Number(hwm[1]) : process.resourceUsage().maxRSS; // KiB
  process.stdout.write(JSON.stringify({ jobs: lat.length, lat_ms: lat, start, end, maxrss_kb: maxrss, per_file_ms: perFile }) + "\n");
}

main().catch((e) => { console.error(e && e.stack || String(e)); process.exit(1); });
