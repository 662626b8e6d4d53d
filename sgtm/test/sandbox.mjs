// Runs a GTM server template's sandboxed JavaScript under Node.js, with working versions of the
// sGTM APIs it requires and GTM's permission checks (read from ___SERVER_PERMISSIONS___).
//
// Google offers no command-line runner for templates (they run only inside GTM), so this is
// ours. The APIs follow developers.google.com/tag-platform/tag-manager/server-side/api:
// sendHttpRequest(url, options, body) resolves {statusCode, headers, body} and rejects
// {reason: 'failed' | 'timed_out'}; getCookieValues(name, decode) returns a list; JSON.parse
// returns undefined on bad input; getContainerVersion() has previewMode and debugMode.
// No dependencies: Node's own vm, http and https.

import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import vm from 'node:vm';

// Which permission each API needs; the others (utilities) need none.
export const API_PERMISSION = {
  getAllEventData: 'read_event_data',
  getEventData: 'read_event_data',
  getCookieValues: 'get_cookies',
  getContainerVersion: 'read_container_data',
  logToConsole: 'logging',
  sendHttpRequest: 'send_http',
  setCookie: 'set_cookies',
};
export const UTILITY_APIS = ['JSON', 'Promise', 'getType', 'makeInteger', 'makeNumber', 'makeString',
  'encodeUriComponent', 'decodeUriComponent', 'computeEffectiveTldPlusOne', 'generateRandom',
  'getTimestampMillis', 'parseUrl'];

// Second-level labels under which a registrable domain has three labels. GTM's
// computeEffectiveTldPlusOne uses the whole Public Suffix List; this stand-in knows the common
// ones, enough for the tests (it only feeds the subdomain index of a minted _fbp / _fbc).
const TWO_LABEL_SUFFIXES = new Set(['co.uk', 'org.uk', 'ac.uk', 'com.au', 'net.au', 'co.nz', 'co.jp',
  'com.br', 'com.mx', 'co.za', 'com.tr', 'co.in']);

/** eTLD+1 of a host or URL, as GTM's computeEffectiveTldPlusOne (with a small suffix list). */
export function effectiveTldPlusOne(domainOrUrl) {
  let host = String(domainOrUrl || '');
  try {
    host = new URL(host).hostname;
  } catch {
    host = host.split('/')[0].split(':')[0];
  }
  const labels = host.toLowerCase().split('.').filter(Boolean);
  const keep = labels.length >= 3 && TWO_LABEL_SUFFIXES.has(labels.slice(-2).join('.')) ? 3 : 2;
  return labels.slice(-keep).join('.');
}

/** GTM's parseUrl: the parts of a URL, searchParams as given (not decoded), undefined if invalid. */
function parseUrl(url) {
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    return undefined;
  }
  const searchParams = {};
  for (const pair of parsed.search.replace(/^\?/, '').split('&')) {
    if (!pair) continue;
    const at = pair.indexOf('=');
    const key = at === -1 ? pair : pair.slice(0, at);
    const value = at === -1 ? '' : pair.slice(at + 1);
    if (key in searchParams) {
      searchParams[key] = [].concat(searchParams[key], value);
    } else {
      searchParams[key] = value;
    }
  }
  return { href: parsed.href, origin: parsed.origin, protocol: parsed.protocol, username: parsed.username,
    password: parsed.password, host: parsed.host, hostname: parsed.hostname, port: parsed.port,
    pathname: parsed.pathname, search: parsed.search, searchParams, hash: parsed.hash };
}

/** The template's sections by name: {INFO: '...', SANDBOXED_JS_FOR_SERVER: '...', ...}. */
export function readTemplate(path) {
  const sections = {};
  let name = null;
  for (const line of fs.readFileSync(path, 'utf8').split('\n')) {
    const header = /^___([A-Z_]+)___$/.exec(line);
    if (header) {
      name = header[1];
      sections[name] = [];
    } else if (name) {
      sections[name].push(line);
    }
  }
  for (const key of Object.keys(sections)) sections[key] = sections[key].join('\n').trim();
  return sections;
}

/** {publicId: {paramKey: string | string[] | boolean}} from ___SERVER_PERMISSIONS___. */
export function permissionsOf(sections) {
  // GTM's typed values: 1 string, 2 list, 3 map (mapKey / mapValue side by side), 8 boolean.
  const value = (v) => {
    if (v.type === 2) return v.listItem.map(value);
    if (v.type === 3) return Object.fromEntries(v.mapKey.map((k, i) => [value(k), value(v.mapValue[i])]));
    return v.type === 8 ? v.boolean : v.string;
  };
  const granted = {};
  for (const entry of JSON.parse(sections.SERVER_PERMISSIONS)) {
    const params = {};
    for (const p of entry.instance.param) params[p.key] = value(p.value);
    granted[entry.instance.key.publicId] = params;
  }
  return granted;
}

/**
 * GTM's URL match patterns: same scheme; the host equal, or `*.example.com` for any subdomain
 * of example.com; `:*` after the host for any port; a path ending in `*` or `/` matches every
 * path below it, otherwise the path must be equal.
 */
export function urlAllowed(url, patterns) {
  let target;
  try {
    target = new URL(url);
  } catch {
    return false;
  }
  return patterns.some((pattern) => {
    const m = /^(https?):\/\/([^/:]+)(:\*|:\d+)?(\/.*)?$/.exec(pattern);
    if (!m || `${m[1]}:` !== target.protocol) return false;
    const [, , host, port, path = '/'] = m;
    const hostOk = host.startsWith('*.')
      ? target.hostname.endsWith(host.slice(1)) && target.hostname.length > host.length - 1
      : target.hostname === host;
    const portOk = port === ':*' || (port ? `:${target.port}` === port : target.port === '');
    const pathOk = path.endsWith('*') ? target.pathname.startsWith(path.slice(0, -1))
      : path.endsWith('/') ? target.pathname.startsWith(path) : target.pathname === path;
    return hostOk && portOk && pathOk;
  });
}

function getType(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value;
}

/** A real HTTP request, as sGTM's sendHttpRequest makes it (Promise form and callback form). */
function httpRequest(url, options, body) {
  return new Promise((resolve, reject) => {
    const target = new URL(url);
    const lib = target.protocol === 'https:' ? https : http;
    const headers = { ...(options.headers || {}) };
    if (body !== undefined) headers['Content-Length'] = Buffer.byteLength(body);
    const request = lib.request(target, { method: options.method || 'GET', headers }, (response) => {
      const chunks = [];
      response.on('data', (chunk) => chunks.push(chunk));
      response.on('end', () => {
        clearTimeout(timer);
        resolve({ statusCode: response.statusCode, headers: response.headers,
          body: Buffer.concat(chunks).toString('utf8') });
      });
    });
    const timer = setTimeout(() => {
      request.destroy();
      reject({ reason: 'timed_out' });
    }, options.timeout || 15000);
    request.on('error', () => {
      clearTimeout(timer);
      reject({ reason: 'failed' });
    });
    if (body !== undefined) request.write(body);
    request.end();
  });
}

/**
 * Working sGTM APIs for one run.
 * scenario: {eventData, cookies: {name: value | [values]}, previewMode, extraAllowedUrls}
 * record: {console: [], attemptedConsole: [], requests: [], cookiesSet: []}, filled as the template
 * runs (cookiesSet: each setCookie call as {name, value, options}).
 */
export function makeApis(permissions, scenario, record) {
  const cookieNames = permissions.get_cookies?.cookieAccess === 'any' ? null
    : permissions.get_cookies?.cookieNames || [];
  // set_cookies: allowedCookies is a list of {name, domain, path, secure, session}.
  const settable = (permissions.set_cookies?.allowedCookies || []).map((c) => c.name);
  const urls = [...(permissions.send_http?.urls || []), ...(scenario.extraAllowedUrls || [])];
  const preview = Boolean(scenario.previewMode);
  const debugOnly = permissions.logging?.environments !== 'all';
  return {
    getAllEventData: () => structuredClone(scenario.eventData || {}),
    getCookieValues: (name, decode = true) => {
      if (cookieNames && !cookieNames.includes(name)) {
        throw new Error(`get_cookies permission: cookie ${name} is not allowed`);
      }
      const raw = (scenario.cookies || {})[name];
      const values = raw === undefined ? [] : Array.isArray(raw) ? raw : [raw];
      return values.map((v) => (decode === false ? v : decodeURIComponent(v)));
    },
    getContainerVersion: () => ({ containerId: 'GTM-TEST', version: preview ? 'QUICK_PREVIEW' : '1',
      environmentName: '', debugMode: preview, previewMode: preview }),
    logToConsole: (...args) => {
      const line = args.map((a) => (typeof a === 'string' ? a : JSON.stringify(a))).join(' ');
      record.attemptedConsole.push(line);
      if (preview || !debugOnly) record.console.push(line);
    },
    sendHttpRequest: (url, ...rest) => {
      if (permissions.send_http?.allowedUrls !== 'any' && !urlAllowed(url, urls)) {
        throw new Error(`send_http permission: ${url} is not allowed`);
      }
      const callback = typeof rest[0] === 'function' ? rest.shift() : null;
      const [options = {}, body] = rest;
      record.requests.push({ url, method: options.method, timeout: options.timeout,
        headerNames: Object.keys(options.headers || {}) });
      const promise = httpRequest(url, options, body);
      if (!callback) return promise;
      promise.then((r) => callback(r.statusCode, r.headers, r.body), () => callback(0, {}, ''));
      return undefined;
    },
    setCookie: (name, value, options = {}, noEncode = false) => {
      if (!settable.includes(name)) {
        throw new Error(`set_cookies permission: cookie ${name} is not allowed`);
      }
      (record.cookiesSet || (record.cookiesSet = [])).push({ name, value: noEncode ? value : encodeURIComponent(value),
        options });
    },
    computeEffectiveTldPlusOne: effectiveTldPlusOne,
    decodeUriComponent: (v) => decodeURIComponent(v),
    generateRandom: (min, max) => min + Math.floor(Math.random() * (max - min + 1)),
    getTimestampMillis: () => Date.now(),
    parseUrl,
    JSON: {
      parse: (text) => {
        try {
          return JSON.parse(text);
        } catch {
          return undefined;
        }
      },
      stringify: (value) => JSON.stringify(value),
    },
    Promise: { create: (executor) => new Promise(executor), all: (list) => Promise.all(list) },
    getType,
    makeInteger: (v) => {
      const n = Number(v);
      return Number.isFinite(n) ? Math.trunc(n) : NaN;
    },
    makeNumber: (v) => Number(v),
    makeString: (v) => String(v),
    encodeUriComponent: (v) => encodeURIComponent(v),
  };
}

/**
 * `require` for the template: each API must be known and its permission declared, as GTM
 * refuses otherwise. apis: {name: implementation}; calls: where each call is recorded.
 */
export function makeRequire(permissions, apis, calls) {
  return (name) => {
    if (!(name in API_PERMISSION) && !UTILITY_APIS.includes(name)) {
      throw new Error(`unknown API ${name}: add it to sgtm/test/sandbox.mjs with its permission`);
    }
    const needed = API_PERMISSION[name];
    if (needed && !(needed in permissions)) {
      throw new Error(`${name} needs the ${needed} permission, which the template does not declare`);
    }
    const api = apis[name];
    if (typeof api !== 'function') return api;
    return (...args) => {
      calls.push({ name, args });
      return api(...args);
    };
  };
}

/**
 * Runs sandboxed JavaScript in a fresh V8 context holding none of Node's globals, and without
 * the standard globals sGTM code must `require` instead (JSON, Math, Date, Promise, ...), so a
 * template that forgets a require fails here as it would in GTM.
 */
export function runSandboxed(js, requireFn, data, globals = {}) {
  const context = vm.createContext({ ...globals });
  vm.runInContext(
    'for (const n of ["JSON", "Math", "Date", "Promise", "parseInt", "parseFloat", "isNaN", ' +
      '"encodeURIComponent", "decodeURIComponent", "eval"]) delete globalThis[n];',
    context,
  );
  const fn = vm.runInContext(`(function (require, data) {\n${js}\n})`, context, { filename: 'template.js' });
  return fn(requireFn, data);
}
