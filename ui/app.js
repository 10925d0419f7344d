// The admin page's shell: sign-in, the navigation (built from the PAGES table) and a hash router
// (`#/keys`, `#/spend`, ...). Each page is a function that renders into the main element.

import { api, session, saveSession, clearSession } from './api.js';
import { h, clear, notice } from './dom.js';
import { keysPage } from './keys.js';
import { spendPage, logsPage } from './spend.js';
import { modelsPage } from './models.js';
import { partyPage } from './parties.js';
import { usagePage } from './usage.js';

/**
 * Every page: `roles` says who sees it (the master key, a virtual key). Teams, users and
 * customers list whatever the gateway's `/team/list`, `/user/list` and `/customer/list` answer.
 */
const PAGES = [
  { id: 'usage', title: 'My usage', roles: ['key'], render: usagePage },
  { id: 'keys', title: 'Keys', roles: ['master'], render: keysPage },
  { id: 'spend', title: 'Spend', roles: ['master'], render: spendPage },
  { id: 'logs', title: 'Logs', roles: ['master', 'key'], render: logsPage },
  { id: 'models', title: 'Models', roles: ['master', 'key'], render: modelsPage },
  { id: 'teams', title: 'Teams', roles: ['master'], render: partyPage('team') },
  { id: 'users', title: 'Users', roles: ['master'], render: partyPage('user') },
  { id: 'customers', title: 'Customers', roles: ['master'], render: partyPage('customer') },
];

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
let rendering = 0;

function pagesFor(role) {
  return PAGES.filter((p) => p.roles.includes(role));
}

async function show() {
  const s = session();
  if (!s) return signIn();
  const pages = pagesFor(s.role);
  const id = location.hash.replace(/^#\/?/, '').split('?')[0];
  const page = pages.find((p) => p.id === id) || pages[0];
  clear(nav, pages.map((p) => h('a', { href: `#/${p.id}`, 'aria-current': p === page ? 'page' : null }, p.title)));
  clear(who, h('span', { class: 'role' }, s.role === 'master' ? 'Admin' : 'Virtual key'), h('button', { type: 'button', class: 'link', onclick: signOut }, 'Sign out'));
  const ticket = ++rendering;
  const section = h('section', { class: 'page', 'data-page': page.id }, h('h1', {}, page.title));
  clear(main, section);
  document.title = `${page.title} · databricks-gateway`;
  try {
    await page.render(section, { role: s.role, stale: () => ticket !== rendering });
  } catch (e) {
    if (ticket !== rendering) return;
    // The key stopped working (deleted, blocked, regenerated, expired): sign in again.
    if (e.status === 401) {
      clearSession();
      return signIn(`Signed out: ${e.message}`);
    }
    section.append(notice('error', e.message));
  }
}

function signOut() {
  clearSession();
  location.hash = '';
  show();
}

function signIn(reason) {
  clear(nav);
  clear(who);
  const key = h('input', { type: 'password', id: 'signin-key', name: 'key', autocomplete: 'off', required: true, placeholder: 'sk-…', spellcheck: 'false' });
  const master = h('input', { type: 'radio', name: 'role', value: 'master', checked: true });
  const virtual = h('input', { type: 'radio', name: 'role', value: 'key' });
  const status = h('div', { class: 'status' }, reason ? notice('error', reason) : null);
  const submit = async (event) => {
    event.preventDefault();
    const value = key.value.trim();
    if (!value) return;
    const role = virtual.checked ? 'key' : 'master';
    clear(status);
    try {
      // Each role's own check: the master key may list keys; a virtual key may read itself.
      if (role === 'master') await api('/key/list', { key: value, query: { size: 1 } });
      else await api('/key/info', { key: value });
      saveSession(value, role);
      location.hash = role === 'master' ? '#/keys' : '#/usage';
      show();
    } catch (e) {
      const hint =
        e.status === 403 && role === 'master'
          ? ' This is a virtual key: choose “Virtual key”.'
          : e.status === 400 && role === 'key'
            ? ' This looks like the master key: choose “Admin”.'
            : '';
      clear(status, notice('error', `Cannot sign in: ${e.message}${hint}`));
    }
  };
  document.title = 'Sign in · databricks-gateway';
  clear(
    main,
    h(
      'section',
      { class: 'page signin', 'data-page': 'signin' },
      h('h1', {}, 'Sign in'),
      h(
        'form',
        { onsubmit: submit, class: 'card' },
        h('fieldset', { class: 'roles' }, h('legend', {}, 'Sign in as'), h('label', {}, master, ' Admin (master key)'), h('label', {}, virtual, ' Virtual key (its own usage)')),
        h('label', { for: 'signin-key' }, 'Key'),
        key,
        h('p', { class: 'hint' }, 'Kept in this tab only (sessionStorage) and sent as a header; closing the tab signs you out.'),
        h('button', { type: 'submit', class: 'primary' }, 'Sign in'),
        status,
      ),
    ),
  );
  key.focus();
}

window.addEventListener('hashchange', show);
show();
