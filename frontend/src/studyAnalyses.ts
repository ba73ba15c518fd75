// The analyses of a study on its page: each run with its status (progress while it runs), the
// key values once done, whether a physician has reviewed it, and what was written back to the
// archive; users allowed to run analyses start the tools that need no more than a series, and
// users who sign reports mark a finished result as reviewed. Results are decision support:
// the page says "needs review" until someone has verified them.
import { getJson, sendJson, type User } from './api';
import { Tag, num, str, type DicomJson } from './dicom';
import { formatNumber, t } from './i18n';
import { clear, h, setMessage, toast } from './ui/dom';

interface Analysis {
  id: number; tool: string; status: 'queued' | 'running' | 'done' | 'failed' | 'cancelled'; stage: string;
  progress: number; error: string; requires_review: boolean; verified: boolean; verified_by: string | null;
  created_by: string; created_at: string; outputs: { kind: string; series_description?: string }[];
  result?: Record<string, unknown>;
}
interface ToolInfo { name: string; title: string; modality: string; parameters: { required: boolean }[] }

const enc = encodeURIComponent;

/** The headline values of a finished result, as the reader would quote them. */
function headline(a: Analysis): string {
  const r = a.result ?? {};
  const n = (v: unknown, d = 0) => (typeof v === 'number' ? formatNumber(v, d) : '—');
  if (a.tool === 'calcium') return t('analysis.value.calcium', { score: n(r.agatston_total, 1), drs: String(r.cac_drs ?? '—') });
  if (a.tool === 'cardiac') {
    const lv = (r.lv ?? {}) as Record<string, unknown>;
    return t('analysis.value.cardiac', { ef: n(lv.ef_percent, 1), edv: n(lv.edv_ml, 0) });
  }
  if (a.tool === 'vessels') {
    const s = (r.stenosis ?? {}) as Record<string, unknown>;
    return t('analysis.value.vessels', { stenosis: n(s.stenosis_percent, 0) });
  }
  return '';
}

export async function renderStudyAnalyses(section: HTMLElement, studyUid: string, series: DicomJson[],
                                          user: User): Promise<() => void> {
  let timer: number | undefined;
  let stopped = false;
  const list = h('ul', { class: 'analysis-list', id: 'analysis-list' });
  const canRun = user.permissions.includes('run_analysis');
  const canVerify = user.permissions.includes('sign_report') || user.permissions.includes('create_report');
  const { tools } = await getJson<{ tools: ToolInfo[] }>('/analyses/tools');
  const title = (name: string) => tools.find((tl) => tl.name === name)?.title ?? name;

  const draw = async () => {
    const { analyses } = await getJson<{ analyses: Analysis[] }>(`/analyses/studies/${enc(studyUid)}`);
    // the results of finished runs (headline values), a few at most
    await Promise.all(analyses.filter((a) => a.status === 'done').slice(0, 10).map(async (a) => {
      a.result = (await getJson<Analysis>(`/analyses/studies/${enc(studyUid)}/${a.id}`)).result;
    }));
    clear(list);
    if (!analyses.length) list.append(h('li', { class: 'muted', i18n: 'analysis.none' }));
    for (const a of analyses) {
      const state = h('span', { class: `badge analysis-${a.status}` });
      if (a.status === 'running' || a.status === 'queued') {
        setMessage(state, 'analysis.running', { stage: a.stage || t('analysis.status.queued'), percent: Math.round(a.progress) });
      } else setMessage(state, `analysis.status.${a.status}` as const);
      const review = a.status !== 'done' ? null : a.verified
        ? h('span', { class: 'badge on', i18n: 'analysis.verifiedBy', i18nParams: { name: a.verified_by ?? '' } })
        : h('span', { class: 'badge warn', i18n: 'analysis.needsReview' });
      const verify = a.status === 'done' && !a.verified && canVerify
        ? h('button', { type: 'button', class: 'small', i18n: 'analysis.verify' }) : null;
      verify?.addEventListener('click', async () => {
        verify.disabled = true;
        try {
          await sendJson('POST', `/analyses/studies/${enc(studyUid)}/${a.id}/verify`);
          await draw();
        } catch (e) {
          toast('analysis.failed', { message: (e as Error).message }, 'error');
          verify.disabled = false;
        }
      });
      const outputs = a.outputs.map((o) => o.series_description || o.kind).join(', ');
      list.append(h('li', { class: 'analysis', data: { tool: a.tool, status: a.status, id: String(a.id) } },
        h('strong', {}, title(a.tool)), ' ', state, ' ', review, ' ', verify,
        a.status === 'done' ? h('div', { class: 'analysis-value' }, headline(a)) : null,
        a.status === 'failed' ? h('div', { class: 'status error' }, a.error) : null,
        outputs ? h('div', { class: 'muted', i18n: 'analysis.outputs', i18nParams: { list: outputs } }) : null,
        h('div', { class: 'muted small' }, `${new Date(a.created_at).toLocaleString()} · ${a.created_by}`)));
    }
    if (!stopped && analyses.some((a) => a.status === 'running' || a.status === 'queued')) {
      timer = window.setTimeout(() => void draw().catch(() => undefined), 1500);
    }
  };

  section.append(h('h2', { i18n: 'analysis.title' }), list);
  if (canRun) {
    const modalitiesHere = new Set(series.map((s) => str(s, Tag.Modality)));
    const runnable = tools.filter((tl) => !tl.parameters.some((p) => p.required) && tl.name !== 'measure'
      && (tl.modality === 'any' || modalitiesHere.has(tl.modality)));
    const volumeSeries = series.filter((s) => (num(s, Tag.NumberOfSeriesRelatedInstances) ?? 0) >= 3
      && ['CT', 'MR'].includes(str(s, Tag.Modality)));
    if (runnable.length && volumeSeries.length) {
      const tool = h('select', { id: 'analysis-tool', i18nAriaLabel: 'analysis.tool' },
        ...runnable.map((tl) => h('option', { value: tl.name }, tl.title)));
      const which = h('select', { id: 'analysis-series', i18nAriaLabel: 'analysis.series' },
        ...volumeSeries.map((s) => h('option', { value: str(s, Tag.SeriesInstanceUID) },
          `${str(s, Tag.Modality)} ${str(s, Tag.SeriesNumber)} ${str(s, Tag.SeriesDescription)}`.trim())));
      const run = h('button', { type: 'button', id: 'analysis-run', class: 'primary', i18n: 'analysis.run' });
      run.addEventListener('click', async () => {
        run.disabled = true;
        try {
          await sendJson('POST', `/analyses/studies/${enc(studyUid)}/${enc(tool.value)}`, { series: which.value, params: {} });
          toast('analysis.started');
          await draw();
        } catch (e) {
          toast('analysis.failed', { message: (e as Error).message }, 'error');
        } finally {
          run.disabled = false;
        }
      });
      section.append(h('div', { class: 'row analysis-run' }, tool, which, run));
    }
  }
  await draw();
  return () => {
    stopped = true;
    if (timer !== undefined) clearTimeout(timer);
  };
}
