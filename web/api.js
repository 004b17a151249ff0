// The page's XRPC client: the same public API every other client uses,
// authenticated with the API token from this browser's local storage, sent
// in the Authorization header only (never in a URL: URLs end up in logs,
// histories and Referer headers).
const TOKEN_KEY = "pocketenv.token";

let token = localStorage.getItem(TOKEN_KEY);
let onUnauthorized = () => {};

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.message || body.error)) || `HTTP ${status}`);
    this.status = status;
    this.name = (body && body.error) || "Error";
  }
}

export const getToken = () => token;

export function setToken(t, keep) {
  token = t;
  if (keep) localStorage.setItem(TOKEN_KEY, t);
}

export function forgetToken() {
  token = null;
  localStorage.removeItem(TOKEN_KEY);
}

// fn runs when the daemon refuses the token (401), whoever asked.
export function whenUnauthorized(fn) {
  onUnauthorized = fn;
}

const auth = () => ({ Authorization: `Bearer ${token}` });

async function answer(r) {
  const text = await r.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { message: text };
  }
  if (!r.ok) {
    if (r.status === 401) onUnauthorized();
    throw new ApiError(r.status, data);
  }
  return data;
}

// A query (GET) or, with a body or procedure: true, a procedure (POST).
export async function xrpc(nsid, { params, body, procedure = body !== undefined } = {}) {
  const q = params ? "?" + new URLSearchParams(params) : "";
  const headers = auth();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(`/xrpc/${nsid}${q}`, {
    method: procedure ? "POST" : "GET",
    headers,
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  return answer(r);
}

// Sign in with an AT Protocol handle (daemon/oauth.c): the daemon answers
// the URL of the user's PDS sign-in page and a pickup secret; the page
// opens the URL in a new window and polls /oauth/token with the pickup
// (kept in memory only) until the daemon hands over our API token.
export async function handleLogin(handle) {
  const r = await fetch("/oauth/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ handle }),
  });
  return answer(r);
}

// {token, did, handle} once signed in, null while pending; throws when
// refused or expired.
export async function handlePickup(pickup) {
  const r = await fetch("/oauth/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ pickup }),
  });
  if (r.status === 202) return null;
  return answer(r);
}

// The transfer store of `pocketenv cp` (POST /cp, GET /cp/<uuid>): a
// tar.gz in, its uuid out; a uuid in, the tar.gz out (used up).
export async function cpUpload(blob) {
  const r = await fetch("/cp", {
    method: "POST",
    headers: { ...auth(), "Content-Type": "application/gzip" },
    body: blob,
  });
  return answer(r);
}

export async function cpDownload(uuid) {
  const r = await fetch(`/cp/${encodeURIComponent(uuid)}`, { headers: auth() });
  if (!r.ok) return answer(r);
  return r.blob();
}

// The WebSocket of a terminal authenticates with a short-lived terminal
// token (a browser cannot set headers on it), which cannot call the API.
export async function terminalToken() {
  const out = await xrpc("io.pocketenv.actor.getTerminalToken");
  if (!out || !out.token) throw new Error("no terminal token in the answer");
  return out.token;
}
