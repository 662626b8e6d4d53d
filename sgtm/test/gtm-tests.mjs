#!/usr/bin/env node
// Runs the template's ___TESTS___ scenarios the way GTM's template editor does ("Run tests"),
// with the test APIs GTM documents (developers.google.com/tag-platform/tag-manager/templates/tests):
// mock, runCode, assertApi(...).wasCalled / wasNotCalled / wasCalledWith, assertThat(...),
// callLater, fail. Each scenario runs `setup` then its `code` in a fresh sandbox; the template
// runs with the mocked APIs and GTM's permission checks.
//
//   node sgtm/test/gtm-tests.mjs [path/to/template.tpl]
//
// Prints one JSON line: {"scenarios": [{"name", "passed", "error"}], "passed": n, "failed": n}
// and exits 1 when a scenario failed.

import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeApis, makeRequire, permissionsOf, readTemplate, runSandboxed } from './sandbox.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
let currentFailures = null; // the running scenario's, for errors thrown inside promise callbacks
process.on('unhandledRejection', (error) => {
  (currentFailures || []).push(`unhandled: ${error && error.message ? error.message : show(error)}`);
});

/**
 * The YAML GTM writes for ___TESTS___: `scenarios:` with `- name:` / `code: |-` entries, then
 * `setup: |-`. Only that shape; anything else is an error rather than a guess.
 */
export function parseTests(text) {
  const lines = text.split('\n');
  const result = { scenarios: [], setup: '' };
  let i = 0;
  const unquote = (v) => {
    const t = v.trim();
    if (t.startsWith("'") && t.endsWith("'")) return t.slice(1, -1).replace(/''/g, "'");
    if (t.startsWith('"') && t.endsWith('"')) return JSON.parse(t);
    return t;
  };
  // A `|-` block: the following lines indented deeper than `indent`, blank lines kept.
  const block = (indent) => {
    const body = [];
    while (i < lines.length && (lines[i].trim() === '' || lines[i].search(/\S/) > indent)) body.push(lines[i++]);
    while (body.length && body[body.length - 1].trim() === '') body.pop();
    const depth = Math.min(...body.filter((l) => l.trim()).map((l) => l.search(/\S/)));
    return body.map((l) => l.slice(depth)).join('\n');
  };
  const scalar = (value, indent) => (/^\|[-+]?$/.test(value.trim()) ? block(indent) : unquote(value));
  while (i < lines.length) {
    const line = lines[i++];
    if (line.trim() === '') continue;
    let m;
    if ((m = /^scenarios:\s*(\[\])?$/.exec(line))) continue;
    if ((m = /^- name:(.*)$/.exec(line))) {
      let name = m[1];
      while (i < lines.length && /^ {4}\S/.test(lines[i])) name += ` ${lines[i++].trim()}`; // folded
      result.scenarios.push({ name: unquote(name), code: '' });
    } else if ((m = /^ {2}code:(.*)$/.exec(line)) && result.scenarios.length) {
      result.scenarios[result.scenarios.length - 1].code = scalar(m[1], 2);
    } else if ((m = /^setup:(.*)$/.exec(line))) {
      result.setup = scalar(m[1], 0);
    } else {
      throw new Error(`___TESTS___ line ${i}: not the shape GTM writes: ${line}`);
    }
  }
  return result;
}

function deepEqual(a, b) {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) {
    return Number.isNaN(a) && Number.isNaN(b);
  }
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  return ka.length === kb.length && ka.every((k) => deepEqual(a[k], b[k]));
}

const show = (v) => (v === undefined ? 'undefined' : JSON.stringify(v));

function assertThat(actual, opt) {
  const check = (ok, what) => {
    if (!ok) throw new Error(`${opt ? `${opt}: ` : ''}expected ${show(actual)} ${what}`);
  };
  return {
    isEqualTo: (e) => check(deepEqual(actual, e), `to equal ${show(e)}`),
    isNotEqualTo: (e) => check(!deepEqual(actual, e), `not to equal ${show(e)}`),
    isTrue: () => check(actual === true, 'to be true'),
    isFalse: () => check(actual === false, 'to be false'),
    isUndefined: () => check(actual === undefined, 'to be undefined'),
    isDefined: () => check(actual !== undefined, 'to be defined'),
    isNull: () => check(actual === null, 'to be null'),
    isNotNull: () => check(actual !== null, 'not to be null'),
    isGreaterThan: (e) => check(actual > e, `to be greater than ${e}`),
    isLessThan: (e) => check(actual < e, `to be less than ${e}`),
    contains: (...items) => check(items.every((x) => actual.indexOf(x) !== -1), `to contain ${show(items)}`),
    doesNotContain: (...items) => check(items.every((x) => actual.indexOf(x) === -1), `not to contain ${show(items)}`),
  };
}

async function runScenario(js, permissions, setup, scenario) {
  const mocks = {};
  const calls = [];
  const later = [];
  const failures = [];
  currentFailures = failures;
  const realApis = makeApis(permissions, {}, { console: [], attemptedConsole: [], requests: [] });
  const apis = new Proxy({}, {
    get: (_, name) => {
      if (name in mocks) return mocks[name];
      if (name === 'sendHttpRequest') return () => { throw new Error('sendHttpRequest is not mocked'); };
      return realApis[name];
    },
  });
  const callLater = (fn) => later.push(fn);
  const globals = {
    // Test code requires utilities (JSON, Promise) and callLater, as in GTM.
    require: (name) => (name === 'callLater' ? callLater : realApis[name]),
    mock: (name, impl) => {
      mocks[name] = typeof impl === 'function' ? impl : () => impl;
    },
    runCode: (data) => {
      const record = (name) => () => calls.push({ name, args: [] });
      const withCallbacks = Object.assign({}, data, { gtmOnSuccess: record('gtmOnSuccess'), gtmOnFailure: record('gtmOnFailure') });
      return runSandboxed(js, makeRequire(permissions, apis, calls), withCallbacks);
    },
    assertApi: (name) => {
      const made = calls.filter((c) => c.name === name);
      return {
        wasCalled: () => { if (!made.length) throw new Error(`expected ${name} to be called`); },
        wasNotCalled: () => { if (made.length) throw new Error(`expected ${name} not to be called`); },
        wasCalledWith: (...args) => {
          if (!made.some((c) => deepEqual(c.args, args))) throw new Error(`expected ${name} to be called with ${show(args)}`);
        },
      };
    },
    assertThat,
    fail: (message) => { throw new Error(message || 'fail()'); },
  };
  try {
    runSandboxed(`${setup}\n${scenario.code}`, globals.require, {}, globals);
    // Mocked promises settle in microtasks; callLater runs after them, as in GTM.
    await new Promise((resolve) => setImmediate(resolve));
    while (later.length) {
      try {
        later.shift()();
      } catch (error) {
        failures.push(error.message);
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
  } catch (error) {
    failures.push(error.message);
  }
  return { name: scenario.name, passed: failures.length === 0, error: failures.join('; ') || undefined };
}

async function main() {
  const sections = readTemplate(process.argv[2] || path.join(here, '..', 'template.tpl'));
  const permissions = permissionsOf(sections);
  const tests = parseTests(sections.TESTS);
  const results = [];
  for (const scenario of tests.scenarios) {
    results.push(await runScenario(sections.SANDBOXED_JS_FOR_SERVER, permissions, tests.setup, scenario));
  }
  const passed = results.filter((r) => r.passed).length;
  process.stdout.write(`${JSON.stringify({ scenarios: results, passed, failed: results.length - passed })}\n`);
  process.exit(passed === results.length ? 0 : 1);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) main();
