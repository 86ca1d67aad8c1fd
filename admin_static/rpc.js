// JSON-RPC 2.0 over POST /rpc, and GET /health, on the origin that served this page.

const CODE_NAMES = {
  "-32700": "parse error",
  "-32600": "invalid request",
  "-32601": "method not found",
  "-32602": "invalid params",
  "-32603": "internal error",
  "-32001": "not ready",
  "-32002": "unknown model",
  "-32003": "model unavailable",
  "-32004": "too large",
  "-32005": "overloaded",
  "-32006": "download failed",
};

export class RpcError extends Error {
  constructor(message, { code = null, data = null, httpStatus = null, method = null } = {}) {
    super(message);
    this.name = "RpcError";
    this.code = code;
    this.data = data;
    this.httpStatus = httpStatus;
    this.method = method;
  }

  get title() {
    if (this.code !== null && this.code !== undefined) {
      const name = CODE_NAMES[String(this.code)];
      return `JSON-RPC error ${this.code}${name ? ` (${name})` : ""}${this.method ? ` from ${this.method}` : ""}`;
    }
    if (this.httpStatus) return `HTTP ${this.httpStatus}`;
    return "Cannot reach the service";
  }
}

let seq = 0;

async function post(body, signal) {
  let resp;
  try {
    resp = await fetch("/rpc", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
      cache: "no-store",
      credentials: "same-origin",
      signal,
    });
  } catch (err) {
    if ((signal && signal.aborted) || (err && err.name === "AbortError")) throw err;
    throw new RpcError(`the request failed: ${err && err.message ? err.message : err}`);
  }
  const text = await resp.text();
  let msg;
  try {
    msg = JSON.parse(text);
  } catch {
    throw new RpcError(`the answer is not JSON (${text.slice(0, 120)})`, { httpStatus: resp.status });
  }
  // Errors outside JSON-RPC (e.g. this route not served on this listener) come in REST shape.
  if (msg && !Array.isArray(msg) && !("jsonrpc" in msg) && msg.error) {
    throw new RpcError(msg.error.message || "request refused", { httpStatus: resp.status });
  }
  return { msg, status: resp.status };
}

function unwrap(reply, method, status) {
  if (!reply || typeof reply !== "object") {
    throw new RpcError("no answer for this call", { method, httpStatus: status });
  }
  if (reply.error) {
    throw new RpcError(reply.error.message || "error", {
      code: reply.error.code ?? null,
      data: reply.error.data ?? null,
      httpStatus: status,
      method,
    });
  }
  return reply.result;
}

/** One call; resolves to its result or throws an RpcError with the code and message. */
export async function call(method, params, { signal } = {}) {
  const body = { jsonrpc: "2.0", method, id: ++seq };
  if (params !== undefined) body.params = params;
  const { msg, status } = await post(body, signal);
  return unwrap(msg, method, status);
}

/** A batch of [method, params] calls (one HTTP request, so one worker answers them all).
 *  Resolves to [{result} | {error}] in the order asked. */
export async function batch(calls, { signal } = {}) {
  const body = calls.map(([method, params]) => {
    const m = { jsonrpc: "2.0", method, id: ++seq };
    if (params !== undefined) m.params = params;
    return m;
  });
  const { msg, status } = await post(body, signal);
  if (!Array.isArray(msg)) unwrap(msg, "batch", status); // the whole batch was refused
  const byId = new Map(msg.map((r) => [r.id, r]));
  return body.map((m) => {
    try {
      return { result: unwrap(byId.get(m.id), m.method, status) };
    } catch (error) {
      return { error };
    }
  });
}

/** GET /health: always HTTP 200 while the process runs. */
export async function health({ signal } = {}) {
  const resp = await fetch("/health", { cache: "no-store", credentials: "same-origin", signal });
  if (!resp.ok) throw new RpcError(`/health answered HTTP ${resp.status}`, { httpStatus: resp.status });
  return resp.json();
}
