#!/usr/bin/env node
// A minimal Conveyor implementation in plain Node.js (no npm packages), served over the
// conformance harness protocol: one JSON request per line on stdin, one response per line on
// stdout, logs on stderr. It keeps jobs in memory and claims the core of the spec plus serial
// groups. State changes go through the spec's machine files, read at start-up, with their guard
// language evaluated here (spec.md#machines): the engine knows no state by name.
//
//   node adapter.js [--spec DIR]
//   conveyor-conformance run --adapter "node examples/js-adapter/adapter.js"
"use strict";

const fs = require("fs");
const path = require("path");
const readline = require("readline");

const argSpec = process.argv.indexOf("--spec");
const SPEC = argSpec > 0 ? process.argv[argSpec + 1] : path.join(__dirname, "..", "..", "..", "spec");
const load = (file) => JSON.parse(fs.readFileSync(path.join(SPEC, file), "utf8"));
const JOB_MACHINE = load("machines/job.json");
const REQUEST_MACHINE = load("machines/request.json");
const PRESETS = load("retry-presets.json");

const FEATURES = ["serial_groups"];
const CAPABILITIES = ["publish_bulk", "claim_by_id", "fire", "notifications"];
const WAITING_DELAY_MS = 1000;
const MAX_PRIORITY = 32767;

class Refused extends Error {
  constructor(code, message) { super(message); this.code = code; }
}
const refuse = (code, message) => { throw new Refused(code, message); };

// -- machines and guards (MACH-003, MACH-004, MACH-005, MACH-006) --------------------------------

function tagged(machine, tag) {
  return new Set(Object.entries(machine.states).filter(([, s]) => s.tags.includes(tag)).map(([n]) => n));
}
const TAGS = {};
for (const tag of ["claimable", "active", "leased", "terminal", "succeeded", "failed", "prunable", "unfinished"]) {
  TAGS[tag] = tagged(JOB_MACHINE, tag);
}
const REQUEST_SUCCEEDED = tagged(REQUEST_MACHINE, "succeeded");

function kind(v) {
  if (v === null || v === undefined) return "null";
  if (v instanceof Date) return "timestamp";
  return typeof v; // boolean, number, string, object
}

function resolve(operand, env) {
  if (operand !== null && typeof operand === "object") return operand.const;
  if (typeof operand !== "string") return operand;
  if (operand === "now") return env.now;
  const [root, ...rest] = operand.split(".");
  let value = env[root];
  for (const part of rest) {
    if (value === null || value === undefined || typeof value !== "object") return null;
    value = value[part];
  }
  return value === undefined ? null : value;
}

function holds(expr, env) {
  if (expr !== null && typeof expr === "object" && !("const" in expr)) {
    const [op, arg] = Object.entries(expr)[0];
    if (op === "and") return arg.every((e) => holds(e, env));
    if (op === "or") return arg.some((e) => holds(e, env));
    if (op === "not") return !holds(arg, env);
    const a = resolve(arg[0], env), b = resolve(arg[1], env);
    const same = kind(a) === kind(b);
    const num = (x) => (x instanceof Date ? x.getTime() : x);
    if (op === "eq" || op === "ne") {
      const equal = same && (a === null || num(a) === num(b));
      return op === "eq" ? equal : !equal;
    }
    if (!same || !["number", "timestamp"].includes(kind(a))) return false;
    const x = num(a), y = num(b);
    return { lt: x < y, le: x <= y, gt: x > y, ge: x >= y }[op];
  }
  const value = resolve(expr, env);
  return value === true || (kind(value) === "number" && value !== 0);
}

function decide(machine, state, event, env) {
  if (!(event in machine.events)) refuse("invalid_transition", `no event ${event}`);
  for (const refusal of machine.refusals || []) {
    if (holds(refusal.when, env)) refuse(refusal.code, `${event} refused (${refusal.req})`);
  }
  for (const t of machine.transitions) {
    if (t.event === event && t.from.includes(state) && (!t.guard || holds(machine.guards[t.guard].expr, env))) return t;
  }
  return refuse("invalid_transition", `${event} is not allowed for a ${machine.machine} in state ${state}`);
}

// -- the store -------------------------------------------------------------------------------

let now = 0;
let jobs = new Map();
let nextSequence = 1;
let handlers = new Map();
let notifications = [];

const fmt = (ms) => new Date(ms).toISOString();
const parseTime = (text) => Date.parse(text);

// A JSON number as the exact fraction its shortest decimal form writes (RETRY-008).
function decimalFraction(x) {
  const m = /^(\d+)(?:\.(\d+))?(?:e([+-]\d+))?$/.exec(String(x));
  const fraction = m[2] || "";
  const exponent = Number(m[3] || 0) - fraction.length;
  const digits = BigInt(m[1] + fraction);
  return exponent >= 0 ? [digits * 10n ** BigInt(exponent), 1n] : [digits, 10n ** BigInt(-exponent)];
}
const decimalPlaces = (x) => { const [, den] = decimalFraction(x); return den.toString().length - 1; };

function delayBounds(policy, attempt) {
  const cap = policy.max_delay_ms;
  let c;
  if (policy.backoff === "constant") c = Math.min(policy.initial_delay_ms, cap);
  else if (policy.backoff === "linear") c = Math.min(policy.initial_delay_ms + policy.increment_ms * (attempt - 1), cap);
  else if (policy.initial_delay_ms === 0 || cap === 0) c = 0;
  else if ((attempt - 1) * Math.log(policy.multiplier) > Math.log(cap / policy.initial_delay_ms) + 1) c = cap;
  else {
    // Exactly: the multiplier has at most three decimals, so it is scaled / 1000 (RETRY-008).
    const k = BigInt(attempt - 1);
    const scaled = BigInt(Math.round(policy.multiplier * 1000));
    const d = (BigInt(policy.initial_delay_ms) * scaled ** k) / 1000n ** k;
    c = d > BigInt(cap) ? cap : Number(d);
  }
  if (!policy.jitter) return [c, c];
  const [num, den] = decimalFraction(policy.jitter);
  const big = BigInt(c);
  return [Number((big * (den - num)) / den), Number((big * (den + num)) / den)];
}
function retryDelay(policy, attempt) {
  const [low, high] = delayBounds(policy, attempt);
  return low + Math.floor(Math.random() * (high - low + 1));
}

function currentRequest(job) { return job.requests.find((r) => !REQUEST_SUCCEEDED.has(r.state)) || null; }

function view(job) {
  return {
    ...job,
    available_at: new Date(job.available_at),
    max_attempts: job.retry_policy.max_attempts,
    requests_remaining: job.requests.filter((r) => !REQUEST_SUCCEEDED.has(r.state)).length,
    cancel_requested_at: null, // cancel_running is not claimed: no request is ever recorded
    lease: job.lease && { token: job.lease.token, worker_id: job.lease.worker_id, expires_at: new Date(job.lease.expires_at) },
  };
}

function facts(job) {
  const others = [...jobs.values()].filter((j) => j.id !== job.id);
  const group = job.serial_group === null ? [] : [...jobs.values()].filter((j) => j.serial_group === job.serial_group);
  return {
    dependencies_succeeded: job.depends_on.every((d) => !jobs.has(d) || TAGS.succeeded.has(jobs.get(d).state)),
    serial_group_idle: job.serial_group === null || !others.some((j) => j.serial_group === job.serial_group && TAGS.leased.has(j.state)),
    serial_group_head: job.serial_group === null || group.every((j) => !TAGS.active.has(j.state) || j.priority > job.priority || (j.priority === job.priority && j.sequence >= job.sequence)),
    unique_sibling_processing: false,
    unique_sibling_succeeded: false,
  };
}

function fireRequest(request, event, params) {
  const t = decide(REQUEST_MACHINE, request.state, event, { now: new Date(now), job: request, event: params, ctx: {} });
  for (const effect of t.effects || []) {
    if (effect === "count_attempt") request.attempts += 1;
    else if (effect === "refund_attempt") request.attempts -= 1;
    else if (effect === "record_error") request.error = params.error ? { ...params.error } : null;
    else if (effect === "clear_error") request.error = null;
    else throw new Error(`unknown request effect ${effect}`);
  }
  request.state = t.to;
}

const leaseError = (j) => ({ kind: "lease_expired", message: `the lease of ${j.lease ? j.lease.worker_id : "its worker"} expired` });

function recordError(job, error) {
  const current = currentRequest(job);
  const entry = { kind: error.kind, message: error.message, type: error.type ?? null, attempt: job.attempts, request: current ? current.index : 0, at: fmt(now) };
  if (typeof error.traceback === "string") entry.traceback = error.traceback; // OUT-009
  job.errors.push(entry);
  job.last_error = entry;
}

const JOB_EFFECTS = {
  count_attempt: (j) => { j.attempts += 1; },
  refund_attempt: (j) => { j.attempts -= 1; },
  reset_attempts: (j) => { j.attempts = 0; j.available_at = now; },
  grant_lease: (j, p) => { j.lease_token += 1; j.lease = { token: j.lease_token, worker_id: p.worker_id, expires_at: now + p.lease_ms }; },
  extend_lease: (j, p) => { j.lease.expires_at = now + p.lease_ms; },
  release_lease: (j) => { j.lease = null; },
  record_error: (j, p) => { if (p.error) recordError(j, p.error); },
  record_lease_error: (j) => recordError(j, leaseError(j)),
  schedule_retry: (j, p) => { j.available_at = now + (p.retry_after_ms ?? retryDelay(j.retry_policy, j.attempts)); },
  schedule_wait: (j, p) => { j.available_at = now + (p.delay_ms ?? WAITING_DELAY_MS); },
  make_due: (j) => { j.available_at = now; },
  stamp_finished: (j) => { j.finished_at = now; },
  clear_finished_stamp: (j) => { j.finished_at = null; },
  // VER-012: without the feature cancel_running, a running job's cancel is refused.
  request_cancel: () => { throw new Refused("invalid_transition", "this implementation does not cancel running jobs (feature cancel_running)"); },
  clear_cancel_request: () => {},
};
const SYSTEM_EFFECTS = {
  notify_threshold: (j) => { if (j.retry_policy.notify_after !== null && j.attempts === j.retry_policy.notify_after) notifications.push({ kind: "threshold", job: j.id }); },
  notify_failure: (j) => notifications.push({ kind: "failed", job: j.id }),
  cancel_dependents: (j) => {
    for (const d of [...jobs.values()].filter((x) => x.depends_on.includes(j.id) && TAGS.active.has(x.state))) {
      fire(d, "dependency_failed", { error: { kind: "dependency_failed", message: `dependency ${j.id} ended ${j.state}` } });
    }
  },
  recheck_dependencies: (j) => {
    const failed = j.depends_on.find((d) => jobs.has(d) && TAGS.failed.has(jobs.get(d).state));
    if (failed) fire(j, "dependency_failed", { error: { kind: "dependency_failed", message: `dependency ${failed} failed` } });
  },
  republish_recurring: () => {}, // recurring jobs are not claimed: refused at publish
  settle_batch: () => {}, // batches are not claimed
};
// MACH-001: refuse to start when a machine names an effect this implementation lacks.
for (const [name, effect] of Object.entries(JOB_MACHINE.effects)) {
  if (!(name in JOB_EFFECTS) && !(name in SYSTEM_EFFECTS) && !effect.request_event) {
    process.stderr.write(`machines/job.json names effect ${name}, which this adapter lacks\n`);
    process.exit(3);
  }
}

function fire(job, event, params, ctx) {
  const env = { now: new Date(now), job: view(job), event: params, ctx: ctx || facts(job) };
  const t = decide(JOB_MACHINE, job.state, event, env);
  const before = JSON.parse(JSON.stringify(job));
  const system = [];
  try {
    for (const name of t.effects) {
      const effect = JOB_MACHINE.effects[name];
      if (effect.scope === "system") system.push(name);
      else if (effect.request_event && effect.scope === "all_unfinished") {
        for (const r of job.requests) {
          if (!REQUEST_SUCCEEDED.has(r.state) && REQUEST_MACHINE.transitions.some((x) => x.event === effect.request_event && x.from.includes(r.state))) fireRequest(r, effect.request_event, params);
        }
      } else if (effect.request_event) {
        const r = currentRequest(job);
        // LEASE-009: the abandoned request records the job's lease_expired error.
        const given = effect.request_event === "abandon" ? { error: leaseError(job) } : params;
        if (r) fireRequest(r, effect.request_event, given);
      } else JOB_EFFECTS[name](job, params);
    }
  } catch (error) {
    Object.assign(job, before);
    throw error instanceof Refused ? new Refused("invalid_transition", error.message) : error;
  }
  job.state = t.to;
  job.updated_at = now;
  for (const name of system) SYSTEM_EFFECTS[name](job);
  return job;
}

// -- publishing ------------------------------------------------------------------------------

const QUEUE = /^[a-z0-9][a-z0-9_.:-]{0,63}$/;
const TYPE = /^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$/;
const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const isInt = (v) => Number.isInteger(v);
// LIMIT-007: a lone surrogate cannot be written as UTF-8 (String.isWellFormed needs Node 20).
const wellFormed = (v) => /^[\u0000-\u007f]*$/.test(v) || /^(?:[^\ud800-\udfff]|[\ud800-\udbff][\udc00-\udfff])*$/.test(v);
const isLabel = (v) => typeof v === "string" && [...v].length >= 1 && [...v].length <= 255 && !/[\u0000-\u001f\u007f]/.test(v);
const MAX_DEPTH = 64; // LIMIT-006

function checkText(text, where) {
  if (text.includes("\u0000")) refuse("invalid_payload", `${where} contains U+0000`);
  if (!wellFormed(text)) refuse("invalid_payload", `${where} contains a lone surrogate`);
}

function checkJson(value, where, depth = 0) {
  if (typeof value === "string") { checkText(value, where); return; }
  if (value === null || typeof value !== "object") return;
  if (depth >= MAX_DEPTH) refuse("invalid_payload", `${where} nests deeper than ${MAX_DEPTH}`);
  if (Array.isArray(value)) { value.forEach((v, i) => checkJson(v, `${where}[${i}]`, depth + 1)); return; }
  for (const [k, v] of Object.entries(value)) { checkText(k, `${where} key`); checkJson(v, `${where}.${k}`, depth + 1); }
}

function resolvePolicy(given) {
  if (typeof given === "string") {
    if (!(given in PRESETS.presets)) refuse("invalid_request", `unknown retry preset ${given}`);
    return { ...PRESETS.presets[given] };
  }
  const p = given;
  const allowed = ["backoff", "initial_delay_ms", "multiplier", "increment_ms", "max_delay_ms", "max_attempts", "notify_after", "jitter"];
  const ok = p && typeof p === "object" && !Array.isArray(p) && Object.keys(p).every((k) => allowed.includes(k))
    && ["constant", "linear", "exponential"].includes(p.backoff) && isInt(p.initial_delay_ms) && p.initial_delay_ms >= 0
    && isInt(p.max_delay_ms) && p.max_delay_ms >= 0
    && (p.multiplier === undefined || (typeof p.multiplier === "number" && p.multiplier >= 1 && p.multiplier <= 100 && decimalPlaces(p.multiplier) <= 3))
    && (p.increment_ms === undefined || (isInt(p.increment_ms) && p.increment_ms >= 0))
    && (p.max_attempts === undefined || p.max_attempts === null || (isInt(p.max_attempts) && p.max_attempts >= 1))
    && (p.notify_after === undefined || p.notify_after === null || (isInt(p.notify_after) && p.notify_after >= 1))
    && (p.jitter === undefined || (typeof p.jitter === "number" && p.jitter >= 0 && p.jitter <= 1));
  if (!ok) refuse("invalid_request", "retry_policy does not match schemas/retry-policy.schema.json");
  return { multiplier: 2, increment_ms: 0, max_attempts: null, notify_after: null, jitter: 0, ...p };
}

const PUBLISH_MEMBERS = ["requests", "queue", "priority", "available_at", "delay_ms", "serial_group", "identifier", "unique", "recurring", "depends_on", "batch_id", "retry_policy", "tags", "metadata"];

function build(doc) {
  const bad = (why) => refuse("invalid_request", `publish request: ${why}`);
  if (!doc || typeof doc !== "object" || Array.isArray(doc)) bad("not an object");
  for (const key of Object.keys(doc)) if (!PUBLISH_MEMBERS.includes(key)) bad(`unknown member ${key}`);
  const requests = doc.requests;
  if (!Array.isArray(requests) || requests.length < 1 || requests.length > 100) bad("1 to 100 requests");
  for (const r of requests) {
    if (!r || typeof r !== "object" || Object.keys(r).some((k) => k !== "type" && k !== "payload")) bad("a request has type and payload only");
    if (typeof r.type !== "string" || !TYPE.test(r.type)) bad(`invalid request type ${r.type}`);
  }
  if ("queue" in doc && (typeof doc.queue !== "string" || !QUEUE.test(doc.queue))) bad("invalid queue");
  if ("priority" in doc && !(isInt(doc.priority) && doc.priority >= 0 && doc.priority <= MAX_PRIORITY)) bad("priority must be 0 to 32767");
  if ("available_at" in doc && (typeof doc.available_at !== "string" || !TIMESTAMP.test(doc.available_at))) bad("invalid available_at");
  if ("delay_ms" in doc && !(isInt(doc.delay_ms) && doc.delay_ms >= 0)) bad("invalid delay_ms");
  if ("available_at" in doc && "delay_ms" in doc) bad("available_at and delay_ms together");
  for (const label of ["serial_group", "identifier"]) if (label in doc && !(isLabel(doc[label]) && wellFormed(doc[label]))) bad(`invalid ${label}`);
  if ("unique" in doc && typeof doc.unique !== "boolean") bad("unique is a boolean");
  if (doc.unique === true && !("identifier" in doc)) bad("a unique job needs an identifier");
  if ("recurring" in doc && !(doc.recurring && isInt(doc.recurring.interval_ms) && doc.recurring.interval_ms >= 1000 && Object.keys(doc.recurring).length === 1)) bad("invalid recurring");
  if ("depends_on" in doc && !(Array.isArray(doc.depends_on) && doc.depends_on.length <= 100 && new Set(doc.depends_on).size === doc.depends_on.length)) bad("invalid depends_on");
  if ("tags" in doc && !(Array.isArray(doc.tags) && doc.tags.length <= 32 && doc.tags.every((t) => isLabel(t) && wellFormed(t)) && new Set(doc.tags).size === doc.tags.length)) bad("invalid tags");
  if ("metadata" in doc && (doc.metadata === null || typeof doc.metadata !== "object" || Array.isArray(doc.metadata))) bad("metadata is an object");
  if ("retry_policy" in doc && typeof doc.retry_policy !== "string" && (doc.retry_policy === null || typeof doc.retry_policy !== "object")) bad("invalid retry_policy");
  requests.forEach((r, i) => checkJson(r.payload ?? null, `requests[${i}].payload`));
  if ("metadata" in doc) checkJson(doc.metadata, "metadata");
  // VER-001: features this implementation does not claim are refused, never ignored.
  if (requests.length > 1) bad("multi_request is not supported");
  if (doc.unique) bad("unique is not supported");
  if ("recurring" in doc) bad("recurring is not supported");
  if (doc.depends_on && doc.depends_on.length) bad("dependencies are not supported");
  if ("batch_id" in doc) bad("batches are not supported");
  if (doc.tags && doc.tags.length) bad("tags are not supported");
  const handler = handlers.get(requests[0].type);
  if (!handler) refuse("unknown_type", `no handler is registered for ${requests[0].type}`);
  const policy = resolvePolicy(doc.retry_policy ?? handler.retry_policy);
  return {
    id: "", sequence: 0,
    queue: doc.queue ?? handler.queue,
    priority: doc.priority ?? handler.priority,
    state: JOB_MACHINE.initial.to,
    available_at: "available_at" in doc ? parseTime(doc.available_at) : now + (doc.delay_ms || 0),
    created_at: now, updated_at: now, finished_at: null,
    attempts: 0, retry_policy: policy,
    serial_group: doc.serial_group ?? null, identifier: doc.identifier ?? null, unique: false, recurring: null,
    depends_on: [], batch_id: null, tags: [], metadata: doc.metadata ?? {},
    requests: requests.map((r, index) => ({ index, type: r.type, payload: r.payload ?? null, state: REQUEST_MACHINE.initial.to, attempts: 0, error: null })),
    lease_token: 0, lease: null, last_error: null, errors: [], execution: null,
  };
}

function store(built) {
  for (const job of built) {
    job.sequence = nextSequence++;
    job.id = String(job.sequence);
    jobs.set(job.id, job);
  }
  return built;
}

function doc(job) {
  return {
    ...JSON.parse(JSON.stringify(job)),
    available_at: fmt(job.available_at), created_at: fmt(job.created_at), updated_at: fmt(job.updated_at),
    finished_at: job.finished_at === null ? null : fmt(job.finished_at),
    max_attempts: job.retry_policy.max_attempts,
    lease: job.lease && { token: job.lease.token, worker_id: job.lease.worker_id, expires_at: fmt(job.lease.expires_at) },
  };
}

function getJob(id) {
  const job = jobs.get(id);
  if (!job) refuse("not_found", `job ${id} does not exist`);
  return job;
}

function parseRange(text) {
  if (text === undefined || text === null) return [0, MAX_PRIORITY];
  const m = /^(?:(\d+)|(\d+)-(\d+)|(\d+)-|-(\d+))$/.exec(text);
  if (!m) refuse("invalid_request", `priority range ${text} is not N, A-B, A- or -B`);
  const n = (x) => Number(x);
  const [low, high] = m[1] ? [n(m[1]), n(m[1])] : m[2] ? [n(m[2]), n(m[3])] : m[4] ? [n(m[4]), MAX_PRIORITY] : [0, n(m[5])];
  if (low > high || high > MAX_PRIORITY) refuse("invalid_request", `priority range ${text} is empty or too high`);
  return [low, high];
}

// -- commands ----------------------------------------------------------------------------------

const OUTCOMES = { success: "succeed", temporary: "fail_temporarily", permanent: "fail_permanently", waiting: "wait", cancelled: "confirm_cancel" };

const commands = {
  start: (r) => {
    if (r.version !== 1) throw new Error("this adapter speaks protocol version 1");
    return { version: 1, implementation: { name: "conveyor-js-example", version: "0.1.0", language: "javascript" }, specversion: JOB_MACHINE.specversion, features: FEATURES, capabilities: CAPABILITIES };
  },
  stop: () => ({}),
  reset: (r) => {
    now = parseTime(r.now); jobs = new Map(); notifications = [];
    handlers = new Map(r.handlers.map((h) => [h.type, h]));
    return {};
  },
  clock_set: (r) => { now = parseTime(r.now); return { now: fmt(now) }; },
  clock_advance: (r) => { now += r.ms; return { now: fmt(now) }; },
  barrier: () => ({}),
  publish: (r) => ({ job: doc(store([build(r.job)])[0]) }),
  publish_bulk: (r) => ({ jobs: store(r.jobs.map(build)).map(doc) }),
  claim: (r) => {
    const [low, high] = parseRange(r.priorities);
    const queues = r.queues && r.queues.length ? r.queues : null;
    const limit = r.limit ?? 1;
    const candidates = [...jobs.values()]
      .filter((j) => TAGS.claimable.has(j.state) && j.available_at <= now && (!queues || queues.includes(j.queue))
        && j.priority >= low && j.priority <= high && (r.job === undefined || j.id === r.job))
      .sort((a, b) => a.priority - b.priority || a.sequence - b.sequence);
    const claimed = [];
    for (const job of candidates) {
      if (claimed.length >= limit) break;
      try { fire(job, "claim", { worker_id: r.worker_id, lease_ms: r.lease_ms }); claimed.push(job); } catch (e) { if (!(e instanceof Refused)) throw e; }
    }
    return { jobs: claimed.map(doc) };
  },
  report: (r) => {
    const job = getJob(r.job);
    const outcome = r.outcome;
    // VER-009: the features results and progress are not claimed.
    if (outcome.result !== undefined && outcome.result !== null) refuse("invalid_request", "feature results is not claimed");
    const kind = outcome.kind === "die" ? (outcome.cause || "permanent") : outcome.kind;
    const params = { lease_token: r.lease_token };
    if (kind === "temporary" || kind === "permanent") params.error = outcome.error || { kind, message: `the handler reported a ${kind} error` };
    if (kind === "temporary" && outcome.retry_after_ms !== undefined) params.retry_after_ms = outcome.retry_after_ms;
    if (kind === "waiting" && outcome.delay_ms !== undefined) params.delay_ms = outcome.delay_ms;
    return { job: doc(fire(job, OUTCOMES[kind], params)) };
  },
  progress: () => refuse("invalid_request", "feature progress is not claimed (VER-009)"),
  heartbeat: (r) => ({ job: doc(fire(getJob(r.job), "heartbeat", { lease_token: r.lease_token, lease_ms: r.lease_ms })) }),
  cancel: (r) => ({ job: doc(fire(getJob(r.job), "cancel", {})) }),
  requeue: (r) => ({ job: doc(fire(getJob(r.job), "requeue", {})) }),
  retry: (r) => ({ job: doc(fire(getJob(r.job), "retry", {})) }),
  fire: (r) => {
    if (r.event === "claim" || r.event === "discard_redundant") refuse("invalid_request", "fired only by a claim");
    return { job: doc(fire(getJob(r.job), r.event, r.params || {})) };
  },
  rescue: () => {
    const expired = [...jobs.values()].filter((j) => TAGS.leased.has(j.state) && j.lease && j.lease.expires_at <= now).sort((a, b) => a.sequence - b.sequence);
    return { jobs: expired.map((j) => doc(fire(j, "lease_expired", {}))) };
  },
  get: (r) => ({ job: doc(getJob(r.job)) }),
  list: (r) => {
    const after = r.after !== undefined ? getJob(r.after).sequence : 0;
    const found = [...jobs.values()]
      .filter((j) => j.sequence > after && (!r.states || !r.states.length || r.states.includes(j.state)) && (r.queue === undefined || j.queue === r.queue)
        && (r.identifier === undefined || j.identifier === r.identifier) && (r.tag === undefined || j.tags.includes(r.tag)) && r.batch === undefined)
      .sort((a, b) => a.sequence - b.sequence);
    return { jobs: found.slice(0, r.limit ?? 1000).map(doc) };
  },
  unfinished_identifiers: (r) => {
    const wanted = new Set(r.identifiers);
    return { identifiers: [...new Set([...jobs.values()].filter((j) => wanted.has(j.identifier) && TAGS.unfinished.has(j.state)).map((j) => j.identifier))] };
  },
  clear_finished: (r) => {
    const cutoff = now - r.older_than_ms;
    const needed = new Set([...jobs.values()].filter((j) => TAGS.active.has(j.state)).flatMap((j) => j.depends_on));
    const doomed = [...jobs.values()].filter((j) => TAGS.prunable.has(j.state) && j.finished_at !== null && j.finished_at < cutoff && !needed.has(j.id));
    for (const j of doomed) jobs.delete(j.id);
    return { deleted: doomed.length };
  },
  retry_delay: (r) => ({ delay_ms: retryDelay(resolvePolicy(r.policy), r.attempt) }),
  notifications: () => { const seen = notifications; notifications = []; return { notifications: seen }; },
  batch_open: () => refuse("invalid_request", "batches are not supported"),
  batch_seal: () => refuse("invalid_request", "batches are not supported"),
  batch_get: () => refuse("invalid_request", "batches are not supported"),
};

function respond(request) {
  const handler = commands[request.cmd];
  if (!handler) return { skipped: { message: `this adapter does not implement ${request.cmd}` } };
  try {
    return { result: handler(request) };
  } catch (error) {
    if (error instanceof Refused) return { error: { code: error.code, message: error.message } };
    process.stderr.write(`${error.stack}\n`);
    return { errored: { message: String(error), traceback: String(error.stack) } };
  }
}

const lines = readline.createInterface({ input: process.stdin, terminal: false });
lines.on("line", (line) => {
  if (!line.trim()) return;
  let request;
  try { request = JSON.parse(line); } catch (error) {
    process.stdout.write(JSON.stringify({ seq: null, errored: { message: `not JSON: ${error.message}` } }) + "\n");
    return;
  }
  process.stdout.write(JSON.stringify({ seq: request.seq, ...respond(request) }) + "\n");
  if (request.cmd === "stop") process.exit(0);
});
