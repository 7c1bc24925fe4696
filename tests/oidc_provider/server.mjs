// A certified OpenID provider (panva/oidc-provider) for the Portcullis tests, on 127.0.0.1 only.
//
// Started by tests/oidc.py: `node server.mjs`, prints `ready <issuer>` once it listens on a free port.
// Clients (secrets are test values, nothing else uses them):
//   worker / worker-secret    client_credentials, scopes `read write`
//   gateway / gateway-secret  the resource server: introspects tokens (RFC 7662), no grants
// Resources (RFC 8707): https://api.jwt.test issues JWT access tokens (RFC 9068),
// https://api.opaque.test opaque ones. Revocation (RFC 7009) is the provider's own endpoint.
// Test hooks, outside the provider: POST /_test/rotate (a new signing key first, the old one still
// published) and POST /_test/retire (only the newest key published).
import http from 'node:http';
import { exportJWK, generateKeyPair } from 'jose';
import Provider from 'oidc-provider';

const RESOURCES = {
  'https://api.jwt.test': 'jwt',
  'https://api.opaque.test': 'opaque',
};

let keys = [];

async function newKey(n) {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = await exportJWK(privateKey);
  return { ...jwk, kid: `key-${n}`, alg: 'RS256', use: 'sig' };
}

function build(issuer) {
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: 'worker', client_secret: 'worker-secret', grant_types: ['client_credentials'],
        redirect_uris: [], response_types: [], scope: 'read write',
      },
      { client_id: 'gateway', client_secret: 'gateway-secret', grant_types: [], redirect_uris: [], response_types: [] },
    ],
    jwks: { keys },
    scopes: ['read', 'write'],
    cookies: { keys: ['portcullis-test-cookie-key'] },
    ttl: { ClientCredentials: 300 },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true, allowedPolicy: async () => true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => 'https://api.opaque.test',
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resource) => {
          const format = RESOURCES[resource];
          if (!format) throw new Provider.errors.InvalidTarget();
          return { scope: 'read write', audience: resource, accessTokenFormat: format, accessTokenTTL: 300,
            jwt: { sign: { alg: 'RS256' } } };
        },
      },
    },
  });
  provider.on('server_error', (_ctx, err) => console.error('server_error', err));
  return provider;
}

const server = http.createServer();
server.listen(0, '127.0.0.1', async () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  keys = [await newKey(1)];
  let serial = 1;
  let provider = build(issuer);
  server.on('request', async (req, res) => {
    if (req.method === 'POST' && req.url === '/_test/rotate') {
      serial += 1;
      keys = [await newKey(serial), ...keys];
    } else if (req.method === 'POST' && req.url === '/_test/retire') {
      keys = keys.slice(0, 1);
    } else {
      provider.callback()(req, res);
      return;
    }
    // The memory adapter is shared by every Provider instance, so tokens survive the rebuild.
    provider = build(issuer);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ kids: keys.map((k) => k.kid) }));
  });
  process.stdout.write(`ready ${issuer}\n`);
});
