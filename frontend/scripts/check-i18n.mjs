// Every catalogue has exactly the English keys, with the same {placeholders}, and every key the
// code names literally exists. Run by `npm run build`.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

// ./locales/<code>.json and ./locales/<area>/<code>.json: each folder a complete set
const root = new URL('../src/i18n/locales/', import.meta.url).pathname;
const placeholders = (s) => [...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort().join(',');
const problems = [];
const folders = [root, ...readdirSync(root).map((f) => join(root, f)).filter((f) => statSync(f).isDirectory())];
const en = {};
for (const dir of folders) {
  const area = dir === root ? '' : `${dir.slice(root.length)}/`;
  const areaEn = JSON.parse(readFileSync(join(dir, 'en.json'), 'utf8'));
  for (const key of Object.keys(areaEn)) {
    if (key in en) problems.push(`${area}en.json: ${key} is also in another area`);
    en[key] = areaEn[key];
  }
  const files = readdirSync(dir).filter((f) => f.endsWith('.json'));
  for (const code of ['en', 'es', 'fr', 'de', 'zh', 'ja', 'ar', 'hi', 'pt']) {
    if (!files.includes(`${code}.json`)) problems.push(`no catalogue ${area}${code}.json`);
  }
  for (const file of files) {
    const messages = JSON.parse(readFileSync(join(dir, file), 'utf8'));
    for (const key of Object.keys(areaEn)) {
      if (!(key in messages)) problems.push(`${area}${file}: missing ${key}`);
      else if (typeof messages[key] !== 'string' || !messages[key].trim()) problems.push(`${area}${file}: empty ${key}`);
      else if (placeholders(messages[key]) !== placeholders(areaEn[key])) problems.push(`${area}${file}: ${key} has {${placeholders(messages[key])}}, English {${placeholders(areaEn[key])}}`);
    }
    for (const key of Object.keys(messages)) if (!(key in areaEn)) problems.push(`${area}${file}: unknown key ${key}`);
  }
}
// keys named in the code: i18n: 'x.y', t('x.y'), setMessage(el, 'x.y'), toast('x.y'), label: 'x.y' ...
const src = new URL('../src/', import.meta.url).pathname;
const walk = (d) => readdirSync(d).flatMap((f) => (statSync(join(d, f)).isDirectory() ? walk(join(d, f)) : [join(d, f)]));
const used = /(?:i18n(?:Title|Placeholder|AriaLabel)?: |\bt\(|setMessage\([\w.]+, |toast\(|label: |action: |title: |body: )'([a-z0-9]+\.[A-Za-z0-9_.]+)'/g;
for (const file of walk(src).filter((f) => f.endsWith('.ts'))) {
  for (const m of readFileSync(file, 'utf8').matchAll(used)) {
    if (!(m[1] in en)) problems.push(`${file.slice(src.length)}: names unknown message ${m[1]}`);
  }
}
if (problems.length) {
  console.error(problems.join('\n'));
  process.exit(1);
}
console.log(`i18n: ${folders.length} areas, ${Object.keys(en).length} messages in each language`);
