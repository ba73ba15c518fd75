// Vite build of the Voxa web application, served by `voxa serve` at /app/ (src/voxa/web/routes/webapp.py).
//
// Cornerstone3D notes: @cornerstonejs/dicom-image-loader starts its decoders as module web
// workers (`new Worker(new URL('./decodeImageFrameWorker.js', import.meta.url), {type: 'module'})`)
// that load WASM codecs lazily, hence `worker.format = 'es'`, no inlining of assets (the .wasm
// files stay files), and the loader excluded from dev pre-bundling (which would break the
// worker URL). dicom-parser is CommonJS: pre-bundled in dev, converted by Rollup in builds.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { gzipSync } from 'node:zlib';
import { defineConfig, type Plugin } from 'vite';

const BASE = '/app/';

function filesUnder(dir: string): string[] {
  const found: string[] = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) found.push(...filesUnder(path));
    else found.push(path);
  }
  return found;
}

/**
 * After the bundle is written: the service worker (src/sw.js with the app shell's file list
 * and a version derived from it) and a .gz twin of every compressible file, which the
 * server sends to clients that accept gzip.
 */
function shellAndCompression(): Plugin {
  let OUT_DIR = 'dist';
  return {
    name: 'voxa-sw-and-gzip',
    apply: 'build',
    configResolved(config) {
      OUT_DIR = config.build.outDir;
    },
    closeBundle() {
      const files = filesUnder(OUT_DIR).map((f) => relative(OUT_DIR, f).split('\\').join('/'));
      const html = readFileSync(join(OUT_DIR, 'index.html'), 'utf8');
      // the shell: index.html, what it references, the manifest, the icons and the locales
      const referenced = [...html.matchAll(/(?:src|href)="\/app\/([^"]+)"/g)].map((m) => m[1]);
      const shell = new Set(['', 'manifest.webmanifest', ...referenced]);
      for (const f of files) {
        if (f.startsWith('icons/') || /^assets\/(index|locale-[a-z]+)-[\w-]+\.(js|css)$/.test(f)) shell.add(f);
      }
      const hash = createHash('sha256');
      for (const f of [...files].sort()) if (f !== 'sw.js') hash.update(f).update(readFileSync(join(OUT_DIR, f)));
      const version = hash.digest('hex').slice(0, 16);
      const template = readFileSync('src/sw.js', 'utf8');
      const sw = template
        .replace('__VOXA_SHELL__', JSON.stringify([...shell].sort().map((f) => BASE + f)))
        .replace('__VOXA_VERSION__', JSON.stringify(version));
      writeFileSync(join(OUT_DIR, 'sw.js'), sw);
      for (const f of [...files, 'sw.js']) {
        if (!/\.(js|mjs|css|html|json|webmanifest|svg|wasm)$/.test(f)) continue;
        const data = readFileSync(join(OUT_DIR, f));
        if (data.length < 1024) continue;
        const gz = gzipSync(data, { level: 9 });
        if (gz.length < data.length * 0.9) writeFileSync(join(OUT_DIR, f + '.gz'), gz);
      }
      writeFileSync(join(OUT_DIR, '.voxa-build.json'), JSON.stringify({ version, files: files.length }) + '\n');
    },
  };
}

/**
 * The Emscripten codecs name Node's fs and path for use under Node only; in the browser they
 * are never called. An empty module instead of Vite's "externalized" stub and its warnings.
 */
function noNodeBuiltins(): Plugin {
  const EMPTY = '\0voxa-empty-node-builtin';
  return {
    name: 'voxa-no-node-builtins',
    enforce: 'pre',
    resolveId(id, importer) {
      if ((id === 'fs' || id === 'path') && importer?.includes('@cornerstonejs/codec-')) return EMPTY;
      return null;
    },
    load(id) {
      return id === EMPTY ? 'export default {};' : null;
    },
  };
}

export default defineConfig({
  base: BASE,
  build: {
    outDir: 'dist',
    target: 'es2022',
    assetsInlineLimit: 0,
    chunkSizeWarningLimit: 6000,
    reportCompressedSize: false,
    sourcemap: false,
    rollupOptions: {
      output: {
        // catalogues get a recognisable name: the service worker keeps them with the shell
        chunkFileNames: (chunk) =>
          chunk.facadeModuleId?.includes('/i18n/locales/') ? 'assets/locale-[name]-[hash].js' : 'assets/[name]-[hash].js',
      },
    },
  },
  worker: { format: 'es', plugins: () => [noNodeBuiltins()] },
  optimizeDeps: {
    exclude: ['@cornerstonejs/dicom-image-loader'],
    include: ['dicom-parser'],
  },
  server: {
    // `npm run dev` against a local `voxa serve` (same origin for cookies through the proxy)
    proxy: Object.fromEntries(
      ['/dicom-web', '/auth', '/login', '/logout', '/measurements', '/ohif', '/wado', '/studies', '/health'].map((p) => [
        p,
        { target: process.env.VOXA_URL ?? 'http://127.0.0.1:8042', changeOrigin: false },
      ]),
    ),
  },
  plugins: [noNodeBuiltins(), shellAndCompression()],
});
