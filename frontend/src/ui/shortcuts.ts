// Keyboard shortcuts: one list, used by the viewer's key handler and shown by the help panel.
import type { MessageKey } from '../i18n';

export interface Shortcut {
  keys: string[]; // KeyboardEvent.key values (the first is shown)
  action: MessageKey;
  scope: 'global' | 'list' | 'viewer';
}

export const SHORTCUTS: Shortcut[] = [
  { keys: ['?'], action: 'help.showHelp', scope: 'global' },
  { keys: ['/'], action: 'help.focusSearch', scope: 'list' },
  { keys: ['ArrowDown', 'PageDown'], action: 'help.nextImage', scope: 'viewer' },
  { keys: ['ArrowUp', 'PageUp'], action: 'help.previousImage', scope: 'viewer' },
  { keys: ['Home'], action: 'help.firstImage', scope: 'viewer' },
  { keys: ['End'], action: 'help.lastImage', scope: 'viewer' },
  { keys: [' '], action: 'help.cine', scope: 'viewer' },
  { keys: ['w'], action: 'tool.windowLevel', scope: 'viewer' },
  { keys: ['p'], action: 'tool.pan', scope: 'viewer' },
  { keys: ['z'], action: 'tool.zoom', scope: 'viewer' },
  { keys: ['l'], action: 'tool.length', scope: 'viewer' },
  { keys: ['t'], action: 'tool.rotate', scope: 'viewer' },
  { keys: ['r'], action: 'viewer.rotate90', scope: 'viewer' },
  { keys: ['h'], action: 'viewer.flipH', scope: 'viewer' },
  { keys: ['v'], action: 'viewer.flipV', scope: 'viewer' },
  { keys: ['i'], action: 'viewer.invert', scope: 'viewer' },
  { keys: ['Escape', '0'], action: 'viewer.reset', scope: 'viewer' },
  { keys: ['1', '2', '3', '4', '5'], action: 'help.presets', scope: 'viewer' },
  { keys: ['s'], action: 'mode.stack', scope: 'viewer' },
  { keys: ['m'], action: 'mode.mpr', scope: 'viewer' },
  { keys: ['d'], action: 'mode.volume', scope: 'viewer' },
  { keys: ['ArrowLeft', 'ArrowRight'], action: 'help.switchViewport', scope: 'viewer' },
];

const KEY_NAMES: Record<string, MessageKey> = {
  ArrowDown: 'key.down',
  ArrowUp: 'key.up',
  ArrowLeft: 'key.left',
  ArrowRight: 'key.right',
  PageDown: 'key.pageDown',
  PageUp: 'key.pageUp',
  Home: 'key.home',
  End: 'key.end',
  ' ': 'key.space',
  Escape: 'key.escape',
};

/** The message naming a special key, or null for a key shown as its character. */
export function keyLabel(key: string): MessageKey | null {
  return KEY_NAMES[key] ?? null;
}

/** True when the key press is typing into a field, not a shortcut. */
export function isTyping(event: KeyboardEvent): boolean {
  const el = event.target as HTMLElement | null;
  if (!el) return false;
  return el.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(el.tagName);
}
