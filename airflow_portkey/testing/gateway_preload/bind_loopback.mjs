// Preload for the Portkey gateway in tier-3 tests: listen on 127.0.0.1 only.
//
// @portkey-ai/gateway 1.15.2 calls serve({fetch, port}) with no hostname, so Node binds every
// interface ("::"); the gateway has no flag for the address. Every listen(port) call made
// without a host is given 127.0.0.1. Load with: node --import <this file> ...
import net from 'node:net';

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number' || (typeof args[0] === 'string' && /^\d+$/.test(args[0]))) {
    if (args[1] === undefined || args[1] === null) {
      args[1] = '127.0.0.1';
    } else if (typeof args[1] === 'function') {
      args.splice(1, 0, '127.0.0.1');
    }
  } else if (args[0] && typeof args[0] === 'object' && !args[0].path && !args[0].host) {
    args[0] = { ...args[0], host: '127.0.0.1' };
  }
  return listen.apply(this, args);
};
