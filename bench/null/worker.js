// The runtime's lower bound for any request a Worker answers itself: no
// Durable Object hop, no storage, no parsing. Every request gets `304`
// with a fixed ETag (a first poll without `If-None-Match` gets `200` and
// an empty page), so interval polling can be replayed against it.
// Whatever a request costs here is workerd's own (HTTP, isolate entry,
// response) plus the kernel's: no Worker can answer for less.
import { DurableObject } from 'cloudflare:workers';

const ETAG = '"null"';

export default {
  fetch(request) {
    if (request.method === 'POST') return new Response('{"id":1,"ts":0}', { status: 201 });
    if (request.headers.get('If-None-Match') === ETAG) {
      return new Response(null, { status: 304, headers: { ETag: ETAG, 'Cache-Control': 'no-cache' } });
    }
    return new Response('{"messages":[],"last_id":0}', {
      headers: { 'Content-Type': 'application/json', ETag: ETAG, 'Cache-Control': 'no-cache' },
    });
  },
};

// The config every bench Worker shares names a Durable Object class.
export class NullRoom extends DurableObject {}
