#!/usr/bin/env node
// Runs capi's tag template once, as sGTM would for one event, with real HTTP.
//
//   node sgtm/test/run-template.mjs scenario.json      (or the scenario on stdin)
//
// scenario: {"data": {the tag's fields}, "eventData": {...}, "cookies": {"_fbp": "..."},
//            "previewMode": true, "extraAllowedUrls": ["http://127.0.0.1:*/*"],
//            "template": "path/to/template.tpl" (default: the repository's)}
// extraAllowedUrls does what a user does for a custom domain: it adds URL patterns to the
// template's send_http permission (here, to reach capi on loopback).
//
// Prints one JSON line: {"outcome": "success" | "failure" | "none" | "error", "calls": [...],
// "console": [lines GTM would show], "attemptedConsole": [every logToConsole call],
// "requests": [{url, method, timeout, headerNames}], "cookiesSet": [{name, value, options}],
// "error": "..."}.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeApis, makeRequire, permissionsOf, readTemplate, runSandboxed } from './sandbox.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const GRACE_MS = 100; // after the first outcome, to catch a template calling both

async function main() {
  const source = process.argv[2] ? fs.readFileSync(process.argv[2], 'utf8') : fs.readFileSync(0, 'utf8');
  const scenario = JSON.parse(source);
  const sections = readTemplate(scenario.template || path.join(here, '..', 'template.tpl'));
  const permissions = permissionsOf(sections);
  const record = { console: [], attemptedConsole: [], requests: [], cookiesSet: [] };
  const calls = [];
  const outcomes = [];
  let settle;
  const settled = new Promise((resolve) => {
    settle = resolve;
  });
  const data = {
    ...scenario.data,
    gtmOnSuccess: () => {
      outcomes.push('success');
      settle();
    },
    gtmOnFailure: () => {
      outcomes.push('failure');
      settle();
    },
  };
  const result = { outcome: 'none', calls: outcomes, ...record };
  try {
    runSandboxed(sections.SANDBOXED_JS_FOR_SERVER, makeRequire(permissions, makeApis(permissions, scenario, record), calls), data);
    const deadline = (Number(scenario.data?.timeoutMs) || 15000) + 5000;
    await Promise.race([settled, new Promise((resolve) => setTimeout(resolve, deadline))]);
    await new Promise((resolve) => setTimeout(resolve, GRACE_MS));
    if (outcomes.length) result.outcome = outcomes[0];
  } catch (error) {
    result.outcome = 'error';
    result.error = String(error && error.message ? error.message : error);
  }
  Object.assign(result, record, { calls: outcomes, apis: [...new Set(calls.map((c) => c.name))] });
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

main().then(() => process.exit(0));
