// Models and health: the deployments (`/model/info`), whether each is cooling down, and (master
// key, on request: it calls every deployment) the `/health` results.

import { api } from './api.js';
import { h, clear, table, notice, num, when } from './dom.js';

const perMillion = (v) => (v === null || v === undefined ? '—' : `$${(Number(v) * 1e6).toFixed(2)}`);

export async function modelsPage(section, ctx) {
  const box = h('div', {}, h('p', { class: 'loading' }, 'Loading deployments…'));
  const healthBox = h('div', { class: 'health-slot' });
  let deployments = [];
  let health = null;

  const render = () => {
    const result = (d) => {
      if (!health) return h('span', { class: 'muted' }, 'not checked');
      const id = d.model_info.id;
      const ok = health.healthy_endpoints.find((e) => e.model_id === id);
      const bad = health.unhealthy_endpoints.find((e) => e.model_id === id);
      if (ok) return h('span', { class: 'badge ok', title: `${ok.latency_ms} ms` }, `healthy · ${ok.latency_ms} ms`);
      if (bad) return h('span', { class: 'health-error' }, `unhealthy: ${bad.error || 'no answer'}`);
      return '—';
    };
    clear(box, table(
      [
        { label: 'Model', value: (d) => d.model_name },
        { label: 'Deployment', value: (d) => h('code', {}, d.model_info.id) },
        { label: 'Endpoint', value: (d) => d.litellm_params.model },
        { label: 'Mode', value: (d) => d.model_info.mode },
        { label: 'State', value: (d) => (d.model_info.cooldown_until ? h('span', { class: 'badge bad' }, `cooling down until ${when(d.model_info.cooldown_until)}`) : h('span', { class: 'badge ok' }, 'ready')) },
        { label: 'Health', value: result },
        { label: 'RPM / TPM', value: (d) => `${num(d.litellm_params.rpm)} / ${num(d.litellm_params.tpm)}`, className: 'num' },
        { label: 'Input $/1M', value: (d) => perMillion(d.model_info.input_cost_per_token), className: 'num' },
        { label: 'Output $/1M', value: (d) => perMillion(d.model_info.output_cost_per_token), className: 'num' },
        { label: 'Max input', value: (d) => num(d.model_info.max_input_tokens), className: 'num' },
        { label: 'Weight / order', value: (d) => `${d.litellm_params.weight ?? '—'} / ${d.litellm_params.order ?? '—'}` },
        { label: 'Timeout', value: (d) => `${d.litellm_params.timeout} s` },
      ],
      deployments,
      { empty: 'No deployments are configured for this key.', testid: 'models', rowAttrs: (d) => ({ 'data-deployment': d.model_info.id }) },
    ));
  };

  const check = async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    clear(healthBox, h('p', { class: 'loading' }, 'Calling every deployment…'));
    try {
      health = await api('/health');
      clear(healthBox, notice(health.unhealthy_count ? 'error' : 'info', `${health.healthy_count} healthy, ${health.unhealthy_count} unhealthy deployments.`));
      render();
    } catch (e) {
      clear(healthBox, notice('error', `Health check failed: ${e.message}`));
    } finally {
      button.disabled = false;
    }
  };

  section.append(
    h('div', { class: 'toolbar' },
      h('button', { type: 'button', onclick: () => load() }, 'Refresh'),
      ctx.role === 'master' ? h('button', { type: 'button', class: 'primary', onclick: check, 'data-testid': 'run-health' }, 'Run health checks') : null),
    h('p', { class: 'hint' }, ctx.role === 'master' ? 'A health check sends each deployment the smallest request its mode allows (a real, billed call).' : 'The deployments this key may use.'),
    healthBox,
    box,
  );
  const load = async () => {
    try {
      deployments = (await api('/model/info')).data || [];
    } catch (e) {
      clear(box, notice('error', e.message));
      return;
    }
    if (!ctx.stale()) render();
  };
  await load();
}
