// Preload for the Portkey gateway in tier-3 tests: nothing leaves the machine.
//
// The gateway must only ever talk to the emulator on loopback. Some of its routes ignore the
// custom host (openai GET /v1/batches/{id}/output always dials api.openai.com), and a bug could
// do the same elsewhere. This preload refuses, before any DNS lookup or socket is made:
//   - fetch() to a host that is not a loopback address or "localhost";
//   - net/tls socket connects to such a host (what undici, ioredis and ws use underneath);
//   - dns lookups of such a name.
// Every refusal is written to stderr as a line starting with "[offhost-guard] BLOCKED", which
// the tests look for. Load with: node --import <this file> ...
import dns from 'node:dns';
import net from 'node:net';

const TAG = '[offhost-guard]';
const report = (what) => {
  process.stderr.write(`${TAG} BLOCKED ${what}\n`);
};

function isLoopback(host) {
  if (host === undefined || host === null || host === '') return true; // Node defaults to localhost
  const h = String(host).replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (h === '::1' || h === '0:0:0:0:0:0:0:1') return true;
  const v4 = h.startsWith('::ffff:') ? h.slice(7) : h;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4);
}

const originalFetch = globalThis.fetch;
globalThis.fetch = async function guardedFetch(input, init) {
  const href =
    typeof input === 'string' || input instanceof URL ? String(input) : input && input.url;
  let url;
  try {
    url = new URL(href);
  } catch {
    return originalFetch.call(this, input, init);
  }
  if (!isLoopback(url.hostname)) {
    report(`fetch ${url.protocol}//${url.host}${url.pathname}`);
    throw new TypeError('fetch failed', {
      cause: new Error(`non-loopback blocked: ${url.host}`),
    });
  }
  return originalFetch.call(this, input, init);
};

const originalConnect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function guardedConnect(...args) {
  let options = args[0];
  if (Array.isArray(options)) options = options[0];
  let host;
  if (options && typeof options === 'object') {
    host = options.path ? 'localhost' : options.host;
  } else if (typeof options === 'string' && !/^\d+$/.test(options)) {
    host = 'localhost'; // a unix socket path
  } else {
    host = typeof args[1] === 'string' ? args[1] : undefined;
  }
  if (!isLoopback(host)) {
    report(`connect ${host}`);
    throw new Error(`non-loopback connect blocked: ${host}`);
  }
  return originalConnect.apply(this, args);
};

function guardLookup(original) {
  return function guardedLookup(hostname, ...rest) {
    if (!isLoopback(hostname)) {
      report(`dns ${hostname}`);
      const callback = rest.find((arg) => typeof arg === 'function');
      const error = Object.assign(new Error(`non-loopback lookup blocked: ${hostname}`), {
        code: 'ENOTFOUND',
        hostname,
      });
      if (callback) {
        process.nextTick(callback, error);
        return {};
      }
      return Promise.reject(error);
    }
    return original.call(this, hostname, ...rest);
  };
}
dns.lookup = guardLookup(dns.lookup);
dns.promises.lookup = guardLookup(dns.promises.lookup);
