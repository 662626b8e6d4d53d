___TERMS_OF_SERVICE___

By creating or modifying this file you agree to Google Tag Manager's Community
Template Gallery Developer Terms of Service available at
https://developers.google.com/tag-manager/gallery-tos (or such other URL as
Google may provide), as modified from time to time.


___INFO___

{
  "type": "TAG",
  "id": "cvt_temp_public_id",
  "version": 1,
  "securityGroups": [],
  "displayName": "capi (Meta Conversions API)",
  "categories": [
    "ADVERTISING",
    "CONVERSIONS"
  ],
  "brand": {
    "id": "capi",
    "displayName": "capi"
  },
  "description": "Forwards each event to your capi Cloud Function (POST {url}/events with X-Api-Key), which validates, enriches, hashes and sends it to Meta's Conversions API. Succeeds on 200/202; fails on any other answer, no answer, or (optionally) a rejected event.",
  "containerContexts": [
    "SERVER"
  ]
}


___TEMPLATE_PARAMETERS___

[
  {
    "type": "TEXT",
    "name": "url",
    "displayName": "capi function URL",
    "simpleValueType": true,
    "help": "The URL of your capi_events function, e.g. https://capi-events-abc123-ew.a.run.app (gcloud functions describe capi-events --gen2 --region=REGION --format='value(serviceConfig.uri)'). The tag posts to {url}/events; a URL that already ends in /events is used as it is. The template may only call *.run.app and *.cloudfunctions.net: for a custom domain, edit the template's 'Sends HTTP requests' permission.",
    "valueValidators": [
      {
        "type": "NON_EMPTY"
      },
      {
        "type": "REGEX",
        "args": [
          "^https://\\S+$"
        ],
        "errorMessage": "An https:// URL, e.g. https://capi-events-abc123-ew.a.run.app"
      }
    ]
  },
  {
    "type": "TEXT",
    "name": "ingestKey",
    "displayName": "Ingest key",
    "simpleValueType": true,
    "help": "The key capi checks (the capi-ingest-key secret), sent as the X-Api-Key header. Put it in a Constant variable and pick it here with {{...}}. GTM has no secret field: whoever can edit or preview this container can read it. The tag never logs it.",
    "valueValidators": [
      {
        "type": "NON_EMPTY"
      }
    ]
  },
  {
    "type": "TEXT",
    "name": "testEventCode",
    "displayName": "Test event code",
    "simpleValueType": true,
    "help": "Optional. Events Manager > your dataset > Test events > the TEST... code: every event goes to Test events instead of being counted. Sent as test_event_code; it replaces one the event data carries. Empty it before going live."
  },
  {
    "type": "CHECKBOX",
    "name": "forwardCookies",
    "checkboxText": "Add the _fbp and _fbc cookies",
    "simpleValueType": true,
    "defaultValue": true,
    "help": "Reads Meta's browser cookies _fbp and _fbc from the incoming request and adds them as x-fb-ck-fbp / x-fb-ck-fbc when the event data has neither those keys nor fbp / fbc. They raise Meta's match rate; they are sent unhashed, as Meta expects. Also adds _fbi, the cookie of Meta's Parameter Builder holding the browser's own IP address (IPv6 when it has one), as x-fb-ck-fbi: capi then sends that address to Meta instead of the request's."
  },
  {
    "type": "CHECKBOX",
    "name": "setCookies",
    "checkboxText": "Set the _fbp and _fbc cookies (first-party, 90 days)",
    "simpleValueType": true,
    "defaultValue": true,
    "help": "Mints _fbp when the browser has none, builds _fbc from a new fbclid in the page URL (a new click replaces an old _fbc), sends them to capi, and sets both again as first-party cookies of your site (domain auto, path /, Secure, SameSite Lax, 90 days, readable by the Meta Pixel) with exactly the values capi sent to Meta. capi decides consent: the cookies are set only for an event capi forwarded (or stored for replay), never when consent denied it. Reads _fbp and _fbc itself, so it forwards them even with the box above unchecked. No other cookie is ever set."
  },
  {
    "type": "CHECKBOX",
    "name": "failOnRejected",
    "checkboxText": "Fail the tag when capi rejects the event",
    "simpleValueType": true,
    "defaultValue": true,
    "help": "capi answers 200 even when it rejected the event (its rejected list says why, e.g. event_time older than 7 days) or Meta refused that one event (failed). Checked: the tag then fails, so it shows up in preview and in tag failure reports. A skipped event (consent denied, not in FORWARD_EVENTS, duplicate) is always a success."
  },
  {
    "type": "TEXT",
    "name": "timeoutMs",
    "displayName": "Timeout (milliseconds)",
    "simpleValueType": true,
    "defaultValue": "15000",
    "help": "How long to wait for capi's answer, 1 to 60000 ms (empty: 15000; more: 60000). Keep it above capi's META_RETRY_BUDGET_SECONDS plus FIRESTORE_TIMEOUT_SECONDS (12 s by default), or a slow Meta is reported as a failure although capi delivers or stores the event.",
    "valueValidators": [
      {
        "type": "REGEX",
        "args": [
          "^\\s*([1-9][0-9]*)?\\s*$"
        ],
        "errorMessage": "A whole number of milliseconds, e.g. 15000, or empty for 15000"
      }
    ]
  }
]


___SANDBOXED_JS_FOR_SERVER___

// capi tag: forwards this event to a capi function (POST {url}/events), which validates,
// enriches, hashes and sends it to Meta's Conversions API. Source and docs: capi's
// docs/sgtm.md ("Connect server-side GTM").
const computeEffectiveTldPlusOne = require('computeEffectiveTldPlusOne');
const decodeUriComponent = require('decodeUriComponent');
const generateRandom = require('generateRandom');
const getAllEventData = require('getAllEventData');
const getContainerVersion = require('getContainerVersion');
const getCookieValues = require('getCookieValues');
const getTimestampMillis = require('getTimestampMillis');
const getType = require('getType');
const JSON = require('JSON');
const logToConsole = require('logToConsole');
const makeInteger = require('makeInteger');
const makeString = require('makeString');
const parseUrl = require('parseUrl');
const sendHttpRequest = require('sendHttpRequest');
const setCookie = require('setCookie');

// capi may retry Meta for up to META_RETRY_BUDGET_SECONDS (10 s) after a 2 s profile lookup
// before it answers 202: the default waits longer than that, so a slow Meta is not a failure.
const DEFAULT_TIMEOUT_MS = 15000;
const MAX_TIMEOUT_MS = 60000;
// Meta's browser cookies, as Meta's own tag and the Pixel write them: first-party, readable by
// the Pixel (not HttpOnly), 90 days (a cookie set by the server is not cut to 7 days by Safari).
const FB_COOKIES = ['_fbp', '_fbc'];
const COOKIE_OPTIONS = {domain: 'auto', path: '/', secure: true, samesite: 'Lax', 'max-age': 7776000, httpOnly: false};

const containerVersion = getContainerVersion();
const inPreview = !!(containerVersion && (containerVersion.previewMode || containerVersion.debugMode));

// One JSON line per step, in preview and debug only. A line never holds the ingest key or the
// event's data: only names, ids, statuses and capi's answer (which names fields, never values).
function log(line) {
  if (!inPreview) {
    return;
  }
  line.tag = 'capi';
  logToConsole(JSON.stringify(line));
}

function eventsUrl(base) {
  let url = makeString(base || '').trim();
  while (url.length > 0 && url.charAt(url.length - 1) === '/') {
    url = url.substring(0, url.length - 1);
  }
  if (url.length === 0) {
    return '';
  }
  if (url.substring(url.length - 7) === '/events') {
    return url;
  }
  return url + '/events';
}

// The field is text (GTM has no number field): empty, not a number or not positive means the
// default; more than a minute is capped.
function timeoutFrom(text) {
  const value = makeInteger(text);
  if (getType(value) !== 'number' || !(value > 0)) {
    return DEFAULT_TIMEOUT_MS;
  }
  return value > MAX_TIMEOUT_MS ? MAX_TIMEOUT_MS : value;
}

function countOf(value) {
  if (getType(value) === 'array') {
    return value.length;
  }
  if (getType(value) === 'number') {
    return value;
  }
  return 0;
}

// Meta's browser cookies, added under the names Meta's own sGTM tag reads, when the event data
// does not carry them already.
function addCookie(body, key, alias, cookieName, added) {
  if (body[key] || body[alias]) {
    return;
  }
  const values = getCookieValues(cookieName);
  if (values && values.length > 0 && values[0]) {
    body[key] = makeString(values[0]);
    added.push(key);
  }
}

function firstCookie(name) {
  const values = getCookieValues(name);
  return values && values.length > 0 && values[0] ? makeString(values[0]) : '';
}

// The fbclid of the page URL, or ''.
function clickIdOf(pageUrl) {
  const parsed = pageUrl ? parseUrl(makeString(pageUrl)) : undefined;
  let value = parsed && parsed.searchParams ? parsed.searchParams.fbclid : undefined;
  if (getType(value) === 'array') {
    value = value[0];
  }
  return value ? decodeUriComponent(makeString(value)) : '';
}

// The part after fb.{index}.{ms}. of an fbc: the click id (a Parameter Builder value adds
// a fifth segment, its appendix, which is not part of the click id).
function clickIdInFbc(fbc) {
  const parts = makeString(fbc).split('.');
  return parts.length >= 4 ? parts[3] : '';
}

// setCookies: an _fbp minted when the browser has none (Stape's generateFbp), an _fbc built
// from a new fbclid (a new click replaces the old one), both sent to capi, which answers with
// the values it sent to Meta for the tag to set (onResponse). Minted values that capi does not
// forward (consent denied, rejected) are never set.
function prepareFbCookies(body, minted) {
  const pageUrl = body.page_location;
  // Meta's rule: the labels of the registrable domain minus one (example.com: 1); 1 when unknown.
  const site = pageUrl ? computeEffectiveTldPlusOne(makeString(pageUrl)) : '';
  const subdomainIndex = site ? makeString(site).split('.').length - 1 : 1;
  const now = getTimestampMillis();
  if (!body['x-fb-ck-fbp'] && !body.fbp) {
    const fbp = firstCookie('_fbp');
    body['x-fb-ck-fbp'] = fbp || 'fb.' + subdomainIndex + '.' + now + '.' + generateRandom(1000000000, 2147483647);
    if (!fbp) {
      minted.push('_fbp');
    }
  }
  const clickId = clickIdOf(pageUrl);
  const fbc = body['x-fb-ck-fbc'] || body.fbc || firstCookie('_fbc');
  if (clickId && clickIdInFbc(fbc) !== clickId) {
    body['x-fb-ck-fbc'] = 'fb.' + subdomainIndex + '.' + now + '.' + clickId;
    minted.push('_fbc');
  } else if (fbc && !body['x-fb-ck-fbc'] && !body.fbc) {
    body['x-fb-ck-fbc'] = fbc;
  }
}

// capi's set_cookies: for each event it forwarded or stored, the fbp / fbc it sent to Meta.
// Only _fbp and _fbc are ever set, whatever the answer holds.
function setFbCookies(answer) {
  const set = [];
  const entries = getType(answer.set_cookies) === 'array' ? answer.set_cookies : [];
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i];
    if (getType(entry) !== 'object') {
      continue;
    }
    for (let j = 0; j < FB_COOKIES.length; j++) {
      const name = FB_COOKIES[j];
      if (getType(entry[name]) === 'string' && entry[name] && set.indexOf(name) === -1) {
        setCookie(name, entry[name], COOKIE_OPTIONS);
        set.push(name);
      }
    }
  }
  return set;
}

const eventData = getAllEventData();
const body = {};
for (let key in eventData) {
  body[key] = eventData[key];
}
const cookiesAdded = [];
if (data.forwardCookies) {
  addCookie(body, 'x-fb-ck-fbp', 'fbp', '_fbp', cookiesAdded);
  addCookie(body, 'x-fb-ck-fbc', 'fbc', '_fbc', cookiesAdded);
  // Meta's Parameter Builder keeps the browser's own address (IPv6 when it has one) in _fbi;
  // capi prefers it to the request's address for client_ip_address.
  addCookie(body, 'x-fb-ck-fbi', 'x-fb-ck-fbi', '_fbi', cookiesAdded);
}
const cookiesMinted = [];
if (data.setCookies) {
  prepareFbCookies(body, cookiesMinted);
}
if (data.testEventCode) {
  body.test_event_code = makeString(data.testEventCode);
}

const url = eventsUrl(data.url);
const ingestKey = makeString(data.ingestKey || '').trim();
const timeout = timeoutFrom(data.timeoutMs);
const about = {event_name: body.event_name, event_id: body.event_id};

function finish(success, line) {
  line.outcome = success ? 'success' : 'failure';
  line.event_name = about.event_name;
  line.event_id = about.event_id;
  log(line);
  if (success) {
    data.gtmOnSuccess();
  } else {
    data.gtmOnFailure();
  }
}

function onResponse(response) {
  const status = response.statusCode;
  const answer = JSON.parse(makeString(response.body || ''));
  const line = {status: status};
  if (getType(answer) !== 'object') {
    line.reason = status === 403
      ? 'Google refused the call before capi ran: deploy capi with --allow-unauthenticated (the tag cannot send an identity token)'
      : 'the answer is not capi\'s JSON: check the URL (the function URL, with or without /events)';
    return finish(false, line);
  }
  line.forwarded = answer.forwarded;
  line.stored = answer.stored;
  line.skipped = answer.skipped;
  line.rejected = answer.rejected;
  line.failed = answer.failed;
  line.messages = answer.messages;
  line.event_ids = answer.event_ids;
  line.fbtrace_id = answer.fbtrace_id;
  if (answer.error) {
    line.error = answer.error;
    line.message = answer.message;
    line.field = answer.field;
  }
  if (status !== 200 && status !== 202) {
    line.reason = status === 401
      ? 'capi refused the ingest key: check the ingestKey field against the capi-ingest-key secret'
      : 'capi answered ' + status;
    return finish(false, line);
  }
  if (status === 202) {
    line.note = 'Meta failed for now; capi stored the event and its replay will deliver it';
  }
  if (data.setCookies) {
    line.cookies_set = setFbCookies(answer);
  }
  const refused = countOf(answer.rejected) + countOf(answer.failed);
  if (refused > 0 && data.failOnRejected) {
    line.reason = 'the event was rejected (see rejected / failed); turn off failOnRejected to count this as a success';
    return finish(false, line);
  }
  return finish(true, line);
}

function onError(error) {
  const reason = error && error.reason;
  finish(false, {
    reason: reason === 'timed_out'
      ? 'no answer within ' + timeout + ' ms (timeoutMs)'
      : 'could not reach capi (' + makeString(reason) + '): check the URL and that the function is deployed',
  });
}

if (!url || !ingestKey) {
  finish(false, {reason: !url ? 'the url field is empty' : 'the ingestKey field is empty'});
} else {
  const request = {request: url, timeout_ms: timeout, cookies_added: cookiesAdded,
                   event_name: about.event_name, event_id: about.event_id};
  const headers = {'Content-Type': 'application/json', 'X-Api-Key': ingestKey};
  if (data.setCookies) {
    // Asks capi for set_cookies in its answer (capi decides consent; the tag only sets).
    headers['X-Capi-Set-Cookies'] = '1';
    request.cookies_minted = cookiesMinted;
  }
  log(request);
  sendHttpRequest(url, {
    method: 'POST',
    headers: headers,
    timeout: timeout,
  }, JSON.stringify(body)).then(onResponse, onError);
}


___SERVER_PERMISSIONS___

[
  {
    "instance": {
      "key": {
        "publicId": "read_event_data",
        "versionId": "1"
      },
      "param": [
        {
          "key": "eventDataAccess",
          "value": {
            "type": 1,
            "string": "any"
          }
        }
      ]
    },
    "clientAnnotations": {
      "isEditedByUser": true
    },
    "isRequired": true
  },
  {
    "instance": {
      "key": {
        "publicId": "send_http",
        "versionId": "1"
      },
      "param": [
        {
          "key": "allowedUrls",
          "value": {
            "type": 1,
            "string": "specific"
          }
        },
        {
          "key": "urls",
          "value": {
            "type": 2,
            "listItem": [
              {
                "type": 1,
                "string": "https://*.run.app/*"
              },
              {
                "type": 1,
                "string": "https://*.cloudfunctions.net/*"
              }
            ]
          }
        }
      ]
    },
    "clientAnnotations": {
      "isEditedByUser": true
    },
    "isRequired": true
  },
  {
    "instance": {
      "key": {
        "publicId": "get_cookies",
        "versionId": "1"
      },
      "param": [
        {
          "key": "cookieAccess",
          "value": {
            "type": 1,
            "string": "specific"
          }
        },
        {
          "key": "cookieNames",
          "value": {
            "type": 2,
            "listItem": [
              {
                "type": 1,
                "string": "_fbp"
              },
              {
                "type": 1,
                "string": "_fbc"
              },
              {
                "type": 1,
                "string": "_fbi"
              }
            ]
          }
        }
      ]
    },
    "clientAnnotations": {
      "isEditedByUser": true
    },
    "isRequired": true
  },
  {
    "instance": {
      "key": {
        "publicId": "set_cookies",
        "versionId": "1"
      },
      "param": [
        {
          "key": "allowedCookies",
          "value": {
            "type": 2,
            "listItem": [
              {
                "type": 3,
                "mapKey": [
                  {
                    "type": 1,
                    "string": "name"
                  },
                  {
                    "type": 1,
                    "string": "domain"
                  },
                  {
                    "type": 1,
                    "string": "path"
                  },
                  {
                    "type": 1,
                    "string": "secure"
                  },
                  {
                    "type": 1,
                    "string": "session"
                  }
                ],
                "mapValue": [
                  {
                    "type": 1,
                    "string": "_fbp"
                  },
                  {
                    "type": 1,
                    "string": "*"
                  },
                  {
                    "type": 1,
                    "string": "*"
                  },
                  {
                    "type": 1,
                    "string": "any"
                  },
                  {
                    "type": 1,
                    "string": "any"
                  }
                ]
              },
              {
                "type": 3,
                "mapKey": [
                  {
                    "type": 1,
                    "string": "name"
                  },
                  {
                    "type": 1,
                    "string": "domain"
                  },
                  {
                    "type": 1,
                    "string": "path"
                  },
                  {
                    "type": 1,
                    "string": "secure"
                  },
                  {
                    "type": 1,
                    "string": "session"
                  }
                ],
                "mapValue": [
                  {
                    "type": 1,
                    "string": "_fbc"
                  },
                  {
                    "type": 1,
                    "string": "*"
                  },
                  {
                    "type": 1,
                    "string": "*"
                  },
                  {
                    "type": 1,
                    "string": "any"
                  },
                  {
                    "type": 1,
                    "string": "any"
                  }
                ]
              }
            ]
          }
        }
      ]
    },
    "clientAnnotations": {
      "isEditedByUser": true
    },
    "isRequired": true
  },
  {
    "instance": {
      "key": {
        "publicId": "read_container_data",
        "versionId": "1"
      },
      "param": []
    },
    "isRequired": true
  },
  {
    "instance": {
      "key": {
        "publicId": "logging",
        "versionId": "1"
      },
      "param": [
        {
          "key": "environments",
          "value": {
            "type": 1,
            "string": "debug"
          }
        }
      ]
    },
    "clientAnnotations": {
      "isEditedByUser": true
    },
    "isRequired": true
  }
]


___TESTS___

scenarios:
- name: Success posts the event data, the cookies, the key and the test code to {url}/events
  code: |-
    let sent;
    mock('sendHttpRequest', (url, options, body) => {
      sent = {url: url, options: options, body: JSON.parse(body)};
      return answer(200, {forwarded: 1, event_ids: ['ORDER-1001'], events_received: 1});
    });

    runCode(mockData);

    callLater(() => {
      assertApi('gtmOnSuccess').wasCalled();
      assertApi('gtmOnFailure').wasNotCalled();
      assertThat(sent.url).isEqualTo('https://capi-events-abc123-ew.a.run.app/events');
      assertThat(sent.options.method).isEqualTo('POST');
      assertThat(sent.options.headers['Content-Type']).isEqualTo('application/json');
      assertThat(sent.options.headers['X-Api-Key']).isEqualTo('test-ingest-key');
      assertThat(sent.options.timeout).isEqualTo(15000);
      assertThat(sent.body.event_name).isEqualTo('purchase');
      assertThat(sent.body.event_id).isEqualTo('ORDER-1001');
      assertThat(sent.body.user_data.email_address).isEqualTo('Jane.Doe@Example.com');
      assertThat(sent.body['x-ga-gcs']).isEqualTo('G111');
      assertThat(sent.body['x-fb-ck-fbp']).isEqualTo(FBP);
      assertThat(sent.body['x-fb-ck-fbc']).isEqualTo(FBC);
      assertThat(sent.body.test_event_code).isEqualTo('TEST12345');
    });
- name: Cookies forwarded only when the event data lacks them, and only when asked
  code: |-
    const bodies = [];
    mock('sendHttpRequest', (url, options, body) => {
      bodies.push(JSON.parse(body));
      return answer(200, {forwarded: 1});
    });
    mock('getAllEventData', () => {
      const event = purchase();
      event['x-fb-ck-fbp'] = 'fb.1.1600000000000.111';
      event.fbc = 'fb.1.1600000000000.FromEvent';
      return event;
    });
    runCode(mockData);

    mock('getAllEventData', purchase);
    runCode({url: mockData.url, ingestKey: mockData.ingestKey, forwardCookies: false, failOnRejected: true, timeoutMs: ''});

    callLater(() => {
      assertThat(bodies[0]['x-fb-ck-fbp']).isEqualTo('fb.1.1600000000000.111');
      assertThat(bodies[0]['x-fb-ck-fbc']).isUndefined();
      assertThat(bodies[0].fbc).isEqualTo('fb.1.1600000000000.FromEvent');
      assertThat(bodies[1]['x-fb-ck-fbp']).isUndefined();
      assertThat(bodies[1]['x-fb-ck-fbc']).isUndefined();
      assertThat(bodies[1].test_event_code).isUndefined();
    });
- name: Rejected event fails the tag when failOnRejected is on
  code: |-
    mock('sendHttpRequest', () => answer(200, {forwarded: 0, rejected: [
      {index: 0, event_id: 'ORDER-1001', field: 'event_time', message: 'older than 7 days: Meta does not accept it'}]}));

    runCode(mockData);

    callLater(() => {
      assertApi('gtmOnFailure').wasCalled();
      assertApi('gtmOnSuccess').wasNotCalled();
    });
- name: Rejected event is a success when failOnRejected is off
  code: |-
    mock('sendHttpRequest', () => answer(200, {forwarded: 0, rejected: [
      {index: 0, event_id: 'ORDER-1001', field: 'event_time', message: 'older than 7 days: Meta does not accept it'}]}));
    mockData.failOnRejected = false;

    runCode(mockData);

    callLater(() => {
      assertApi('gtmOnSuccess').wasCalled();
      assertApi('gtmOnFailure').wasNotCalled();
    });
- name: Event Meta refused on its own (failed) fails the tag when failOnRejected is on
  code: |-
    mock('sendHttpRequest', () => answer(200, {forwarded: 0, failed: [
      {index: 0, event_id: 'ORDER-1001', message: 'Invalid parameter'}]}));

    runCode(mockData);

    callLater(() => assertApi('gtmOnFailure').wasCalled());
- name: Consent skip is a success
  code: |-
    mock('sendHttpRequest', () => answer(200, {forwarded: 0, skipped: [
      {index: 0, event_id: 'ORDER-1001', reason: 'consent'}]}));

    runCode(mockData);

    callLater(() => {
      assertApi('gtmOnSuccess').wasCalled();
      assertApi('gtmOnFailure').wasNotCalled();
    });
- name: Event not in FORWARD_EVENTS is a success
  code: |-
    mock('sendHttpRequest', () => answer(200, {forwarded: 0, skipped: [
      {index: 0, event_id: 'pv-1', reason: 'not in FORWARD_EVENTS'}]}));

    runCode(mockData);

    callLater(() => assertApi('gtmOnSuccess').wasCalled());
- name: Stored for replay (202) is a success
  code: |-
    mock('sendHttpRequest', () => answer(202, {forwarded: 0, stored: 1}));

    runCode(mockData);

    callLater(() => assertApi('gtmOnSuccess').wasCalled());
- name: 5xx fails the tag
  code: |-
    mock('sendHttpRequest', () => answer(503, {error: 'store_unavailable', message: 'Meta failed and the events could not be stored'}));

    runCode(mockData);

    callLater(() => {
      assertApi('gtmOnFailure').wasCalled();
      assertApi('gtmOnSuccess').wasNotCalled();
    });
- name: Wrong key (401) fails the tag
  code: |-
    mock('sendHttpRequest', () => answer(401, {error: 'unauthorized', message: 'wrong ingest key'}));

    runCode(mockData);

    callLater(() => assertApi('gtmOnFailure').wasCalled());
- name: An answer that is not JSON (wrong URL, Google's 403) fails the tag
  code: |-
    mock('sendHttpRequest', () => Promise.create((resolve) => resolve(
      {statusCode: 200, headers: {}, body: '<html>Error: Forbidden</html>'})));

    runCode(mockData);

    callLater(() => assertApi('gtmOnFailure').wasCalled());
- name: capi unreachable or too slow fails the tag
  code: |-
    mock('sendHttpRequest', () => Promise.create((resolve, reject) => reject({reason: 'failed'})));
    runCode(mockData);
    mock('sendHttpRequest', () => Promise.create((resolve, reject) => reject({reason: 'timed_out'})));
    runCode(mockData);

    callLater(() => {
      assertApi('gtmOnFailure').wasCalled();
      assertApi('gtmOnSuccess').wasNotCalled();
    });
- name: timeoutMs text becomes a number, with a default and a cap
  code: |-
    const timeouts = [];
    mock('sendHttpRequest', (url, options) => {
      timeouts.push(options.timeout);
      return answer(200, {forwarded: 1});
    });
    const texts = ['2500', '', 'soon', '0', '-5', '60000', '60001'];
    for (let i = 0; i < texts.length; i++) {
      mockData.timeoutMs = texts[i];
      runCode(mockData);
    }

    callLater(() => assertThat(timeouts).isEqualTo([2500, 15000, 15000, 15000, 15000, 60000, 60000]));
- name: A URL already ending in /events is used as it is
  code: |-
    let sentTo;
    mock('sendHttpRequest', (url) => {
      sentTo = url;
      return answer(200, {forwarded: 1});
    });
    mockData.url = 'https://europe-west1-shop.cloudfunctions.net/capi-events/events/';

    runCode(mockData);

    callLater(() => assertThat(sentTo).isEqualTo('https://europe-west1-shop.cloudfunctions.net/capi-events/events'));
- name: Logs only in preview, never the key or personal data
  code: |-
    const lines = [];
    mock('logToConsole', (line) => lines.push(line));
    mock('sendHttpRequest', () => answer(200, {forwarded: 0, rejected: [
      {index: 0, event_id: 'ORDER-1001', field: 'event_time', message: 'older than 7 days: Meta does not accept it'}]}));

    runCode(mockData);
    mock('getContainerVersion', () => ({previewMode: true, debugMode: false}));
    runCode(mockData);

    callLater(() => {
      assertThat(lines.length).isEqualTo(2);
      const all = lines.join('\n');
      assertThat(all).contains('older than 7 days', 'event_time', 'ORDER-1001');
      assertThat(all).doesNotContain('test-ingest-key', 'Jane.Doe', '650');
    });
- name: setCookies sets _fbp and _fbc to the values capi sent to Meta, with Meta's attributes
  code: |-
    let headers;
    mock('sendHttpRequest', (url, options) => {
      headers = options.headers;
      return answer(200, {forwarded: 1, set_cookies: [{index: 0, event_id: 'ORDER-1001', _fbp: FBP, _fbc: FBC}]});
    });

    runCode(mockData);

    callLater(() => {
      assertThat(headers['X-Capi-Set-Cookies']).isEqualTo('1');
      assertApi('setCookie').wasCalledWith('_fbp', FBP, COOKIE_OPTIONS);
      assertApi('setCookie').wasCalledWith('_fbc', FBC, COOKIE_OPTIONS);
      assertApi('gtmOnSuccess').wasCalled();
    });
- name: setCookies never sets a cookie when capi skipped the event for consent
  code: |-
    mock('sendHttpRequest', () => answer(200, {forwarded: 0, set_cookies: [], skipped: [
      {index: 0, event_id: 'ORDER-1001', reason: 'consent', consent_signal: 'x-ga-gcs'}]}));
    mock('getCookieValues', () => []);

    runCode(mockData);

    callLater(() => {
      assertApi('setCookie').wasNotCalled();
      assertApi('gtmOnSuccess').wasCalled();
    });
- name: setCookies off, or an answer naming other cookies, never sets anything but _fbp and _fbc
  code: |-
    const names = [];
    mock('setCookie', (name) => names.push(name));
    mock('sendHttpRequest', () => answer(200, {forwarded: 1, set_cookies: [
      {index: 0, _gtmeec: 'e30=', _fbp: FBP, session: 'x'}]}));

    runCode(mockData);
    mockData.setCookies = false;
    runCode(mockData);

    callLater(() => assertThat(names).isEqualTo(['_fbp']));
- name: setCookies mints _fbp when the browser has none, and a new fbclid replaces the old _fbc
  code: |-
    const bodies = [];
    mock('sendHttpRequest', (url, options, body) => {
      bodies.push(JSON.parse(body));
      return answer(200, {forwarded: 1});
    });
    mock('getCookieValues', (name) => name === '_fbc' ? [FBC] : []);
    mock('getTimestampMillis', () => 1700000000123);
    mock('generateRandom', (min, max) => {
      assertThat(min).isEqualTo(1000000000);
      assertThat(max).isEqualTo(2147483647);
      return 1234567890;
    });
    mock('getAllEventData', () => {
      const event = purchase();
      event.page_location = 'https://shop.example.com/landing?utm_source=fb&fbclid=IwAR9NewClick';
      return event;
    });
    runCode(mockData);

    mock('getAllEventData', () => {
      const event = purchase();
      event.page_location = 'https://shop.example.co.uk/landing?fbclid=IwAR2xYz';
      return event;
    });
    runCode(mockData);

    callLater(() => {
      assertThat(bodies[0]['x-fb-ck-fbp']).isEqualTo('fb.1.1700000000123.1234567890');
      assertThat(bodies[0]['x-fb-ck-fbc']).isEqualTo('fb.1.1700000000123.IwAR9NewClick');
      // the same click as the cookie's: the cookie is kept as it is
      assertThat(bodies[1]['x-fb-ck-fbp']).isEqualTo('fb.2.1700000000123.1234567890');
      assertThat(bodies[1]['x-fb-ck-fbc']).isEqualTo(FBC);
      assertApi('setCookie').wasNotCalled();
    });
- name: setCookies survives a page_location that is not a URL (subdomain index 1)
  code: |-
    let sent;
    mock('sendHttpRequest', (url, options, body) => {
      sent = JSON.parse(body);
      return answer(200, {forwarded: 1});
    });
    mock('getCookieValues', () => []);
    mock('computeEffectiveTldPlusOne', () => undefined);
    mock('getTimestampMillis', () => 1700000000123);
    mock('generateRandom', () => 1234567890);
    mock('getAllEventData', () => {
      const event = purchase();
      event.page_location = 'not a url';
      return event;
    });

    runCode(mockData);

    callLater(() => {
      assertThat(sent['x-fb-ck-fbp']).isEqualTo('fb.1.1700000000123.1234567890');
      assertThat(sent['x-fb-ck-fbc']).isUndefined();
      assertApi('gtmOnSuccess').wasCalled();
    });
- name: setCookies keeps the browser's own _fbp and forwards it even without forwardCookies
  code: |-
    let sent;
    mock('sendHttpRequest', (url, options, body) => {
      sent = JSON.parse(body);
      return answer(200, {forwarded: 1});
    });
    mockData.forwardCookies = false;

    runCode(mockData);

    callLater(() => {
      assertThat(sent['x-fb-ck-fbp']).isEqualTo(FBP);
      assertThat(sent['x-fb-ck-fbc']).isEqualTo(FBC);
      assertThat(sent['x-fb-ck-fbi']).isUndefined();
    });
- name: Meta's Parameter Builder IP cookie _fbi is forwarded as x-fb-ck-fbi
  code: |-
    let sent;
    mock('sendHttpRequest', (url, options, body) => {
      sent = JSON.parse(body);
      return answer(200, {forwarded: 1});
    });
    mock('getCookieValues', (name) => name === '_fbi' ? [FBI] : name === '_fbp' ? [FBP] : []);

    runCode(mockData);

    callLater(() => assertThat(sent['x-fb-ck-fbi']).isEqualTo(FBI));
- name: An empty ingest key fails without sending
  code: |-
    mock('sendHttpRequest', () => answer(200, {forwarded: 1}));
    mockData.ingestKey = '';

    runCode(mockData);

    assertApi('sendHttpRequest').wasNotCalled();
    assertApi('gtmOnFailure').wasCalled();
setup: |-
  const JSON = require('JSON');
  const Promise = require('Promise');
  const callLater = require('callLater');

  const FBP = 'fb.1.1700000000000.1234567890';
  const FBC = 'fb.1.1700000000000.IwAR2xYz';
  // Meta's Parameter Builder: the address, then its appendix (client_js/shared/utils/ipUtil.js).
  const FBI = '2001:db8:85a3::8a2e:370:7334.AQYCAQAA';
  const COOKIE_OPTIONS = {domain: 'auto', path: '/', secure: true, samesite: 'Lax', 'max-age': 7776000, httpOnly: false};

  // The fields as the tag editor fills them (checkboxes true/false, numbers as text).
  const mockData = {
    url: 'https://capi-events-abc123-ew.a.run.app/',
    ingestKey: 'test-ingest-key',
    testEventCode: 'TEST12345',
    forwardCookies: true,
    setCookies: true,
    failOnRejected: true,
    timeoutMs: '15000'
  };

  // Event data as the GA4 client builds it (keys from Google's common event data and
  // immutable x-ga-* parameters, shaped like the mock event of Meta's own sGTM tag tests).
  function purchase() {
    return {
      event_name: 'purchase',
      event_id: 'ORDER-1001',
      client_id: '1234567890.1700000000',
      ip_override: '203.0.113.9',
      user_agent: 'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5)',
      page_location: 'https://shop.example.com/checkout/thanks',
      value: 59.9,
      currency: 'EUR',
      transaction_id: 'ORDER-1001',
      items: [{item_id: 'SKU-1', price: 29.95, quantity: 2}],
      user_data: {email_address: 'Jane.Doe@Example.com', phone_number: '(650) 555-1212'},
      'x-ga-protocol_version': '2',
      'x-ga-gcs': 'G111'
    };
  }

  function answer(status, fields) {
    const body = {received: 1, forwarded: 0, stored: 0, skipped: [], rejected: [], event_ids: [], messages: []};
    for (const key in fields) {
      body[key] = fields[key];
    }
    return Promise.create((resolve) => resolve({statusCode: status, headers: {}, body: JSON.stringify(body)}));
  }

  mock('getAllEventData', purchase);
  mock('getCookieValues', (name) => name === '_fbp' ? [FBP] : name === '_fbc' ? [FBC] : []);
  mock('getContainerVersion', () => ({previewMode: false, debugMode: false}));


___NOTES___

The tag template of capi, the Cloud Function for Meta's Conversions API. Setup, failure
guide and tests: capi's docs/sgtm.md ("Connect server-side GTM"; every field in its section
4, "Create the tag and its trigger").
