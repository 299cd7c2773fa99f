// Builds one JavaScript guest into a component with ComponentizeJS (StarlingMonkey), every
// optional WASI feature off, so that the component imports only its world's interfaces.
// Usage: node build.mjs <source.js> <wit-dir> <world> <out.wasm>
import { componentize, version } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';

const [source, wit, world, out] = process.argv.slice(2);
if (!out) {
  console.error('usage: node build.mjs <source.js> <wit-dir> <world> <out.wasm>');
  process.exit(2);
}
const { component } = await componentize({
  sourcePath: resolve(source),
  witPath: resolve(wit),
  worldName: world,
  disableFeatures: ['stdio', 'random', 'clocks', 'http', 'fetch-event'],
});
await writeFile(out, component);
console.log(`componentize-js ${version}: ${out} (${component.length} bytes)`);
