// A series' frames in one request — WADO-RS Pixel Data resource (PS3.18 10.4.1.1.6),
// `.../series/{uid}/pixeldata` — kept as they arrive for Cornerstone's image loader
// (viewer/seriesPixelData.ts).
//
// A volume asked for frame by frame is 300 requests for a CT: the server and the browser then
// spend more time on requests than on pixels. Here the frames come in one streamed response,
// split by each part's Content-Length (nothing is searched for a boundary). No Cornerstone in
// this module: the page starts the stream while the viewer's code is still loading.
export interface Frame {
  pixelData: Uint8Array;
  transferSyntax: string;
}

interface Expected {
  series: string;
  promise: Promise<Frame>;
  resolve: (frame: Frame) => void;
  reject: (error: Error) => void;
}

interface Stream {
  arrived: Map<string, Frame>;
  expecting: boolean; // the viewer said which frames it wants: keep no others
  done: boolean;
  controller: AbortController;
}

const ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*';
const expected = new Map<string, Expected>();
const streams = new Map<string, Stream>();

export class Cancelled extends Error {}

/** The part of a frame's URL both sides agree on: from `/studies/` on. */
export function keyOf(url: string): string {
  const at = url.indexOf('/studies/');
  return at >= 0 ? url.slice(at) : url;
}

function transferSyntaxOf(contentType: string): string {
  const m = /transfer-syntax=([^;\s]+)/i.exec(contentType);
  return m ? m[1].replace(/"/g, '') : '1.2.840.10008.1.2.1';
}

function indexOfHeaderEnd(bytes: Uint8Array): number {
  for (let i = 0; i + 3 < bytes.length; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) return i;
  }
  return -1;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (!a.length) return b;
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Reads a multipart/related body part by part; each part must say its Content-Length. */
async function readParts(
  body: ReadableStream<Uint8Array>,
  boundary: string,
  onPart: (headers: Map<string, string>, data: Uint8Array) => void,
  signal: AbortSignal,
): Promise<void> {
  const reader = body.getReader();
  const closing = `--${boundary}--`;
  let pending: Uint8Array = new Uint8Array(0);
  let part: { headers: Map<string, string>; data: Uint8Array; filled: number } | null = null;
  for (;;) {
    if (signal.aborted) throw new Cancelled('cancelled');
    const { value, done } = await reader.read();
    if (done) break;
    let chunk: Uint8Array = value;
    while (chunk.length) {
      if (part) {
        const n = Math.min(part.data.length - part.filled, chunk.length);
        part.data.set(chunk.subarray(0, n), part.filled);
        part.filled += n;
        chunk = chunk.subarray(n);
        if (part.filled === part.data.length) {
          onPart(part.headers, part.data);
          part = null;
        }
        continue;
      }
      pending = concat(pending, chunk);
      chunk = new Uint8Array(0);
      const end = indexOfHeaderEnd(pending);
      if (end < 0) {
        if (pending.length > 65536) throw new Error('a part header longer than 64 KiB');
        break;
      }
      const text = new TextDecoder('latin1').decode(pending.subarray(0, end));
      chunk = pending.subarray(end + 4);
      pending = new Uint8Array(0);
      if (text.includes(closing)) return;
      const headers = new Map<string, string>();
      for (const line of text.split('\r\n')) {
        const colon = line.indexOf(':');
        if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
      }
      const length = Number(headers.get('content-length'));
      if (!Number.isInteger(length) || length < 0) throw new Error('a part without Content-Length');
      part = { headers, data: new Uint8Array(length), filled: 0 };
      if (length === 0) {
        onPart(headers, part.data);
        part = null;
      }
    }
  }
  if (part) throw new Error('the response ended inside a part');
}

function settle(series: string, error: Error): void {
  for (const [key, entry] of expected) {
    if (entry.series !== series) continue;
    expected.delete(key);
    entry.reject(error);
  }
}

/**
 * Starts reading a series' frames (once per series): the frames are kept as they arrive until
 * the image loader takes them (see expectFrames) or the stream is closed.
 */
export function openSeriesPixelData(seriesUid: string, url: string): void {
  if (streams.has(seriesUid)) return;
  const stream: Stream = { arrived: new Map(), expecting: false, done: false, controller: new AbortController() };
  streams.set(seriesUid, stream);
  const { signal } = stream.controller;
  (async () => {
    const response = await fetch(url, {
      headers: { Accept: ACCEPT }, credentials: 'same-origin', signal,
    });
    const boundary = /boundary="?([^";]+)"?/i.exec(response.headers.get('content-type') ?? '')?.[1];
    if (!response.ok || !response.body || !boundary) throw new Error(`pixel data: HTTP ${response.status}`);
    await readParts(response.body, boundary, (headers, data) => {
      const key = keyOf(headers.get('content-location') ?? '');
      const frame = { pixelData: data, transferSyntax: transferSyntaxOf(headers.get('content-type') ?? '') };
      const entry = expected.get(key);
      if (entry) entry.resolve(frame);
      else if (!stream.expecting) stream.arrived.set(key, frame);
    }, signal);
  })().catch((error: unknown) => {
    if (!signal.aborted) console.warn('series pixel data', error);
  }).finally(() => {
    stream.done = true;
    // what did not come is asked for alone
    settle(seriesUid, signal.aborted ? new Cancelled('cancelled') : new Error('not in the series pixel data'));
  });
}

/**
 * The frames (image ids or frame URLs) the image loader should take from the series' stream
 * rather than ask for alone. Returns a function that closes the stream (the frames not yet
 * arrived are then not loaded at all, and what arrived is let go).
 */
export function expectFrames(seriesUid: string, frameIds: string[]): () => void {
  const stream = streams.get(seriesUid);
  if (!stream) throw new Error(`no pixel data stream for series ${seriesUid}`);
  for (const id of frameIds) {
    const key = keyOf(id);
    if (expected.has(key)) continue;
    let resolve!: (frame: Frame) => void;
    let reject!: (error: Error) => void;
    const promise = new Promise<Frame>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    promise.catch(() => undefined); // a frame nobody asked for yet may be rejected unobserved
    const entry = { series: seriesUid, promise, resolve, reject };
    const arrived = stream.arrived.get(key);
    if (arrived) {
      stream.arrived.delete(key);
      resolve(arrived);
    } else if (stream.done) {
      reject(new Error('not in the series pixel data'));
      continue;
    }
    expected.set(key, entry);
  }
  stream.expecting = true;
  stream.arrived.clear(); // frames not expected (already in the cache) are not needed
  return () => closeSeriesPixelData(seriesUid);
}

export function closeSeriesPixelData(seriesUid: string): void {
  const stream = streams.get(seriesUid);
  if (!stream) return;
  streams.delete(seriesUid);
  stream.controller.abort();
  stream.arrived.clear();
  settle(seriesUid, new Cancelled('cancelled'));
}

/** The expected frame of this image id, taken (once) by the image loader; undefined: ask alone. */
export function takeExpected(imageId: string): Promise<Frame> | undefined {
  const key = keyOf(imageId);
  const entry = expected.get(key);
  if (!entry) return undefined;
  return entry.promise.finally(() => expected.delete(key));
}

/** Closes the streams no viewer expects frames from (started for a volume that was not shown). */
export function closeIdleStreams(): void {
  for (const [series, stream] of [...streams]) if (!stream.expecting) closeSeriesPixelData(series);
}
