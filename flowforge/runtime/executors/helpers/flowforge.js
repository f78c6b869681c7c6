// FlowForge job helpers for Node scripts: `const ff = require("flowforge")` (NODE_PATH points here).
//
// A job talks to FlowForge only through files in its job directory ($FLOWFORGE_JOB_DIR), so the
// same script works on the worker, in a container and on an SSH host. This file is copied next
// to every job and must run on whatever node the target has: core modules only, no npm.
//
// Inputs (written before the job): input.json, variables.json, event.json.
// Outputs (read after the job): output.json (any JSON value), condition.json (true/false),
// variables_set.jsonl (one {"key": ..., "value": ...} per line, last one per key wins),
// progress.json ({"pct": ..., "message": ...}, latest only).
"use strict";

const fs = require("fs");
const path = require("path");

class HelperError extends Error {}
HelperError.prototype.name = "HelperError";

// How a bad argument is shown in an error: strings quoted, so an empty key is visible.
function show(value) {
  return typeof value === "string" ? JSON.stringify(value) : String(value);
}

function jobDir() {
  const dir = process.env.FLOWFORGE_JOB_DIR;
  if (!dir) {
    throw new HelperError("FLOWFORGE_JOB_DIR is not set: flowforge.js only works inside a FlowForge job");
  }
  return dir;
}

function read(name) {
  const file = path.join(jobDir(), name);
  let text;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    if (err.code === "ENOENT") throw new HelperError(`${name} is missing from the job directory ${jobDir()}`);
    throw err;
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new HelperError(`${name} is not valid JSON: ${err.message}`);
  }
}

// JSON.stringify quietly turns NaN/Infinity into null and drops a top-level undefined; both
// would lose data without a word, so they are refused here as Python's json refuses them.
function dumps(value, what) {
  let text;
  try {
    text = JSON.stringify(value, (_key, v) => {
      if (typeof v === "number" && !Number.isFinite(v)) throw new TypeError(`${v} is not valid JSON`);
      return v;
    });
  } catch (err) {
    throw new TypeError(`${what} needs a JSON-serialisable value: ${err.message}`);
  }
  if (text === undefined) throw new TypeError(`${what} needs a JSON-serialisable value, got ${typeof value}`);
  return text;
}

// Write-then-rename, so the executor never reads half a file if the job is killed mid-write.
function write(name, text) {
  const file = path.join(jobDir(), name);
  const tmp = `${file}.tmp.${process.pid}`;
  fs.writeFileSync(tmp, text + "\n", "utf8");
  fs.renameSync(tmp, file);
}

/** The job's input: {inputs, params, jobs, item, trigger}. */
function input() {
  return read("input.json");
}

/** What this execution is: {workflow, job, run_id, trigger, attempt, item}. */
function event() {
  return read("event.json");
}

/** Set the job's output (any JSON value); a second call replaces the first. */
function output(data) {
  write("output.json", dumps(data, "output()"));
}

/** Set the job's condition, which `on: true` / `on: false` edges downstream look at. */
function set_condition(value) {
  if (typeof value !== "boolean") throw new TypeError(`set_condition() needs true or false, got ${show(value)}`);
  write("condition.json", value ? "true" : "false");
}

function changes() {
  const file = path.join(jobDir(), "variables_set.jsonl");
  const result = new Map();
  if (!fs.existsSync(file)) return result;
  for (const line of fs.readFileSync(file, "utf8").split("\n")) {
    if (!line.trim()) continue;
    let entry;
    try {
      entry = JSON.parse(line);
    } catch (err) {
      throw new HelperError(`variables_set.jsonl has a bad line (${err.message}): ${line}`);
    }
    result.set(entry.key, entry.value);
  }
  return result;
}

/** A variable's value, including ones this job already set, else `defaultValue` (null). */
function get_variable(key, defaultValue = null) {
  const set = changes();
  if (set.has(key)) return set.get(key);
  const file = path.join(jobDir(), "variables.json");
  const variables = fs.existsSync(file) ? read("variables.json") : {};
  const own = variables !== null && typeof variables === "object" && Object.prototype.hasOwnProperty.call(variables, key);
  return own ? variables[key] : defaultValue;
}

/** Set a variable (any JSON value); FlowForge stores it after the job ends. */
function set_variable(key, value) {
  if (typeof key !== "string" || key === "") {
    throw new TypeError(`set_variable() needs a non-empty string key, got ${show(key)}`);
  }
  // An undefined value would vanish from the object below and leave a line with no value.
  if (value === undefined) throw new TypeError("set_variable() needs a JSON-serialisable value, got undefined");
  const line = dumps({ key, value }, "set_variable()");
  // Appending one line per call keeps the format writable from bash without a JSON parser.
  fs.appendFileSync(path.join(jobDir(), "variables_set.jsonl"), line + "\n", "utf8");
}

/** Report progress 0..100; the latest value is kept and a line goes to the job's log. */
function progress(pct, message = "") {
  if (typeof pct !== "number" || Number.isNaN(pct)) {
    throw new TypeError(`progress() needs a number from 0 to 100, got ${show(pct)}`);
  }
  if (pct < 0 || pct > 100) throw new RangeError(`progress() needs a number from 0 to 100, got ${pct}`);
  const msg = String(message);
  write("progress.json", dumps({ pct, message: msg }, "progress()"));
  // stderr writes to a pipe are synchronous in node, so the line reaches the log at once.
  process.stderr.write(msg ? `[progress ${pct}%] ${msg}\n` : `[progress ${pct}%]\n`);
}

module.exports = {
  HelperError,
  event,
  getVariable: get_variable,
  get_variable,
  input,
  output,
  progress,
  setCondition: set_condition,
  setVariable: set_variable,
  set_condition,
  set_variable,
};
