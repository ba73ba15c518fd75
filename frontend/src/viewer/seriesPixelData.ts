// Cornerstone's `wadors:` image loader, taking the frames a volume expects from the series'
// pixel data stream (../pixelDataStream.ts) and asking for any other frame alone, as before.
import * as core from '@cornerstonejs/core';
import { createImage, wadors } from '@cornerstonejs/dicom-image-loader';
import { Cancelled, takeExpected } from '../pixelDataStream';

type LoadImage = (imageId: string, options?: Record<string, unknown>) => { promise: Promise<unknown>; cancelFn?: () => void };

/** Registers the loader (after the DICOM image loader registered its own). */
export function registerPixelDataLoader(): void {
  const single = wadors.loadImage as unknown as LoadImage;
  const loader: LoadImage = (imageId, options = {}) => {
    const expectedFrame = takeExpected(imageId);
    if (!expectedFrame) return single(imageId, options);
    const start = performance.now();
    const promise = expectedFrame.then(
      async ({ pixelData, transferSyntax }) => {
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
