// A series' frames in one request — WADO-RS Pixel Data resource (PS3.18 10.4.1.1.6),
// `.../series/{uid}/pixeldata` — handed to Cornerstone's image loader as they arrive.
//
// A volume asked for frame by frame is 300 requests for a CT: the server and the browser then
// spend more time on requests than on pixels. Here the volume's frames come in one streamed
// response, split by each part's Content-Length (nothing is searched for a boundary), and the
// image loader for `wadors:` ids takes a frame from it when one is expected, or asks for the
// frame alone as before (when the stream fails, ends without it, or never had it).
import * as core from '@cornerstonejs/core';
import { createImage, wadors } from '@cornerstonejs/dicom-image-loader';
import { DICOMWEB } from '../api';

interface Frame {
  pixelData: Uint8Array;
  transferSyntax: string;
}

interface Expected {
  promise: Promise<Frame>;
  resolve: (frame: Frame) => void;
  reject: (error: Error) => void;
}

const ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*';
const CRLFCRLF = [13, 10, 13, 10];
const expected = new Map<string, Expected>();

class Cancelled extends Error {}

/** The part of a frame's URL both sides agree on: from `/studies/` on. */
function keyOf(url: string): string {
  const at = url.indexOf('/studies/');
  return at >= 0 ? url.slice(at) : url;
}

function expect(key: string): Expected {
  let resolve!: (frame: Frame) => void;
  let reject!: (error: Error) => void;
  const promise = new Promise<Frame>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => undefined); // a frame nobody asked for yet may be rejected unobserved
  const entry = { promise, resolve, reject };
  expected.set(key, entry);
  return entry;
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
      chunk = pending.subarray(end + CRLFCRLF.length);
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

/**
 * Fetches the frames of `imageIds` (one series) in one request; the loader takes them from it.
 * Returns a function that stops it (the frames not yet arrived are then not loaded at all).
 */
export function streamSeriesPixelData(studyUid: string, seriesUid: string, imageIds: string[]): () => void {
  const keys = imageIds.map((id) => keyOf(id));
  for (const key of keys) if (!expected.has(key)) expect(key);
  const controller = new AbortController();
  const stop = (error: Error) => {
    for (const key of keys) {
      const entry = expected.get(key);
      if (entry) {
        expected.delete(key);
        entry.reject(error);
      }
    }
  };
  (async () => {
    const response = await fetch(`${DICOMWEB}/studies/${studyUid}/series/${seriesUid}/pixeldata`, {
      headers: { Accept: ACCEPT },
      credentials: 'same-origin',
      signal: controller.signal,
    });
    const boundary = /boundary="?([^";]+)"?/i.exec(response.headers.get('content-type') ?? '')?.[1];
    if (!response.ok || !response.body || !boundary) throw new Error(`pixel data: HTTP ${response.status}`);
    await readParts(response.body, boundary, (headers, data) => {
      const key = keyOf(headers.get('content-location') ?? '');
      const entry = expected.get(key);
      if (!entry) return; // a frame already in the cache
      entry.resolve({ pixelData: data, transferSyntax: transferSyntaxOf(headers.get('content-type') ?? '') });
    }, controller.signal);
    stop(new Error('not in the series pixel data')); // what did not come is asked for alone
  })().catch((error: unknown) => {
    stop(controller.signal.aborted ? new Cancelled('cancelled') : (error as Error));
  });
  return () => {
    controller.abort();
    stop(new Cancelled('cancelled'));
  };
}

type LoadImage = (imageId: string, options?: Record<string, unknown>) => { promise: Promise<unknown>; cancelFn?: () => void };

/** Cornerstone's `wadors:` loader, taking expected frames from the streams above. */
export function registerPixelDataLoader(): void {
  const single = wadors.loadImage as unknown as LoadImage;
  const loader: LoadImage = (imageId, options = {}) => {
    const key = keyOf(imageId);
    const entry = expected.get(key);
    if (!entry) return single(imageId, options);
    const start = performance.now();
    const promise = entry.promise.then(
      async ({ pixelData, transferSyntax }) => {
        expected.delete(key);
        const image = (await createImage(imageId, pixelData, transferSyntax,
          options as Parameters<typeof createImage>[3])) as unknown as Record<string, unknown>;
        image.loadTimeInMS = performance.now() - start;
        image.transferSyntaxUID = transferSyntax;
        image.imageQualityStatus = core.Enums.ImageQualityStatus.FULL_RESOLUTION;
        return image;
      },
      (error: Error) => {
        if (error instanceof Cancelled) throw error;
        return single(imageId, options).promise;
      },
    );
    return { promise, cancelFn: undefined };
  };
  core.imageLoader.registerImageLoader('wadors', loader as unknown as Parameters<typeof core.imageLoader.registerImageLoader>[1]);
}
