// The HTTP API as the page uses it: one request builder, one SSE reader, the curl form.

/**
 * An error answer of the API, from its {error: {code, status, message, field}} object:
 * one of code/status holds the gRPC status name, the other the HTTP number (this reads
 * either order), and `httpStatus` prefers the response's own status line.
 */
export class ApiError extends Error {
  constructor({ code, status, message = "", field = "" } = {}, httpStatus = undefined) {
    const name = [code, status].find((v) => typeof v === "string") || "UNKNOWN";
    super(message || name);
    this.grpcStatus = name;
    this.httpStatus = httpStatus ?? [code, status].find(Number.isInteger) ?? 0;
    this.field = field || "";
  }
}

/** The JSON body of POST /v1/generate: a GenerateRequest in proto3 JSON, streamed. */
export function buildRequest({ prompt, output, sampling }) {
  const body = { prompt, output };
  const set = Object.entries(sampling || {}).filter(([, v]) => v !== undefined);
  if (set.length) body.sampling = Object.fromEntries(set);
  body.stream = true;
  return body;
}

function headers(apiKey) {
  const h = { "Content-Type": "application/json" };
  if (apiKey) h.Authorization = `Bearer ${apiKey}`;
  return h;
}

async function errorOf(response) {
  let detail = { message: `HTTP ${response.status} ${response.statusText}` };
  try {
    detail = (await response.json()).error || detail;
  } catch {
    // not JSON (a proxy's page): the status line is all there is
  }
  return new ApiError(detail, response.status);
}

/** GET /v1/models: the ListModelsResponse's `models`. */
export async function listModels(apiKey) {
  const response = await fetch("/v1/models", { headers: headers(apiKey) });
  if (!response.ok) throw await errorOf(response);
  return (await response.json()).models || [];
}

/** One SSE event block ("event: x\ndata: ...") as {event, data}. */
function parseEvent(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  return { event, data: data.join("\n") };
}

/**
 * POST /v1/generate with `stream: true` and yield each GenerateResponse as it arrives.
 * fetch() rather than EventSource, which cannot POST. Throws ApiError on an error
 * answer or an `event: error`.
 */
export async function* streamGenerate(body, apiKey, signal) {
  const response = await fetch("/v1/generate", {
    method: "POST",
    headers: headers(apiKey),
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw await errorOf(response);
  yield* readEvents(response.body);
}

/** The JSON `data` of each Server-Sent Event of a byte stream, however its reads split. */
export async function* readEvents(stream) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    // LF or CRLF line ends (sse-starlette writes CRLF); a CR split from its LF joins it
    // on the next read before this replace sees it.
    buffered = (buffered + value).replace(/\r\n/g, "\n");
    let end;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const { event, data } = parseEvent(buffered.slice(0, end));
      buffered = buffered.slice(end + 2);
      if (!data) continue; // a comment or keep-alive
      const message = JSON.parse(data);
      if (event === "error") throw new ApiError(message.error);
      yield message;
    }
  }
}

const shellQuote = (s) => `'${s.replaceAll("'", `'\\''`)}'`;

/** The same request as a `curl -N` command; the key stays a shell variable. */
export function curlCommand(body, origin, withKey) {
  const lines = [`curl -N ${origin}/v1/generate`, `  -H 'Content-Type: application/json'`];
  if (withKey) lines.push(`  -H "Authorization: Bearer $MMNTP_API_KEY"`);
  lines.push(`  -d ${shellQuote(JSON.stringify(body))}`);
  return lines.join(" \\\n");
}

/** proto3 JSON bytes (base64) as a Uint8Array. */
export function base64Bytes(text) {
  const raw = atob(text || "");
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}
