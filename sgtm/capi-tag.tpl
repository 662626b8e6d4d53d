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
    "help": "Reads Meta's browser cookies _fbp and _fbc from the incoming request and adds them as x-fb-ck-fbp / x-fb-ck-fbc when the event data has neither those keys nor fbp / fbc. They raise Meta's match rate; they are sent unhashed, as Meta expects."
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
    "help": "How long to wait for capi's answer, 1 to 60000 ms (empty or not a number: 15000; more: 60000). Keep it above capi's META_RETRY_BUDGET_SECONDS plus FIRESTORE_TIMEOUT_SECONDS (12 s by default), or a slow Meta is reported as a failure although capi delivers or stores the event.",
    "valueValidators": [
      {
        "type": "POSITIVE_NUMBER"
      }
    ]
  }
]


___SANDBOXED_JS_FOR_SERVER___

// capi tag: forwards this event to a capi function (POST {url}/events), which validates,
// enriches, hashes and sends it to Meta's Conversions API. Source and docs: capi's README,
// "Connect server-side GTM".
const getAllEventData = require('getAllEventData');
const getContainerVersion = require('getContainerVersion');
const getCookieValues = require('getCookieValues');
const getType = require('getType');
const JSON = require('JSON');
const logToConsole = require('logToConsole');
const makeInteger = require('makeInteger');
const makeString = require('makeString');
const sendHttpRequest = require('sendHttpRequest');

// capi may retry Meta for up to META_RETRY_BUDGET_SECONDS (10 s) after a 2 s profile lookup
// before it answers 202: the default waits longer than that, so a slow Meta is not a failure.
const DEFAULT_TIMEOUT_MS = 15000;
const MAX_TIMEOUT_MS = 60000;

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

const eventData = getAllEventData();
const body = {};
for (let key in eventData) {
  body[key] = eventData[key];
}
const cookiesAdded = [];
if (data.forwardCookies) {
  addCookie(body, 'x-fb-ck-fbp', 'fbp', '_fbp', cookiesAdded);
  addCookie(body, 'x-fb-ck-fbc', 'fbc', '_fbc', cookiesAdded);
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
  log({request: url, timeout_ms: timeout, cookies_added: cookiesAdded,
       event_name: about.event_name, event_id: about.event_id});
  sendHttpRequest(url, {
    method: 'POST',
    headers: {'Content-Type': 'application/json', 'X-Api-Key': ingestKey},
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

  // The fields as the tag editor fills them (checkboxes true/false, numbers as text).
  const mockData = {
    url: 'https://capi-events-abc123-ew.a.run.app/',
    ingestKey: 'test-ingest-key',
    testEventCode: 'TEST12345',
    forwardCookies: true,
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
guide and tests: capi's README, section "Connect server-side GTM".
