// Node's fetch (undici) through the proxy named by HTTPS_PROXY / HTTP_PROXY, as an agent would.
// Usage: node fetch.mjs URL [METHOD] [BODY] [--absolute]; prints {"status", "body"} or {"error"} as JSON.
// --absolute: plain-http URLs as absolute-form requests (proxyTunnel: false) instead of CONNECT.
import { EnvHttpProxyAgent, fetch } from "undici";

const args = process.argv.slice(2);
const absolute = args.includes("--absolute");
const [url, method = "GET", body] = args.filter((a) => a !== "--absolute");
const dispatcher = new EnvHttpProxyAgent(absolute ? { proxyTunnel: false } : {});
try {
  const response = await fetch(url, { method, body, dispatcher });
  process.stdout.write(JSON.stringify({ status: response.status, body: await response.text() }));
} catch (err) {
  process.stdout.write(JSON.stringify({ error: String(err?.cause?.message ?? err?.message ?? err) }));
} finally {
  await dispatcher.close();
}
