// Copies the dist files the console serves from node_modules (filled by
// `npm ci`) into static/vendor/, with each package's licence. Run by the
// Makefile and the Dockerfile; static/vendor/ is not committed.
import { cpSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, "node_modules");
const vendor = join(here, "static", "vendor");

// [package, file in the package, name served under /static/vendor/]
const FILES = [
  ["htmx.org", "dist/htmx.min.js", "htmx.min.js"],
  ["htmx.org", "LICENSE", "licenses/htmx.org.txt"],
  ["uplot", "dist/uPlot.iife.min.js", "uPlot.iife.min.js"],
  ["uplot", "dist/uPlot.min.css", "uPlot.min.css"],
  ["uplot", "LICENSE", "licenses/uplot.txt"],
  ["@json-editor/json-editor", "dist/jsoneditor.js", "jsoneditor.js"],
  ["@json-editor/json-editor", "LICENSE", "licenses/json-editor.txt"],
  ["@picocss/pico", "css/pico.min.css", "pico.min.css"],
  ["@picocss/pico", "LICENSE.md", "licenses/pico.txt"],
];

rmSync(vendor, { recursive: true, force: true });
for (const [pkg, file, served] of FILES) {
  const target = join(vendor, served);
  mkdirSync(dirname(target), { recursive: true });
  cpSync(join(modules, pkg, file), target);
}
console.log(`copied ${FILES.length} files into ${vendor}`);
