# FlowForge job helpers for bash scripts: source "$FLOWFORGE_HELPERS/flowforge.sh"
#
# A job talks to FlowForge only through files in its job directory ($FLOWFORGE_JOB_DIR), so the
# same script works on the worker, in a container and on an SSH host. This file is copied next
# to every job and must run where there is only bash and coreutils: writing (ff_output,
# ff_set_condition, ff_progress, ff_set_variable) needs nothing else; JSON values are checked
# with python3 or node when one is installed, and ff_get_variable needs one of them to parse.
# Every function returns non-zero with a message on stderr on bad arguments, so `set -e`
# scripts stop at the mistake. Safe under `set -euo pipefail`.
#
#   ff_input                      print input.json ({"inputs","params","jobs","item","trigger"})
#   ff_event                      print event.json ({"workflow","job","run_id","trigger","attempt","item"})
#   ff_output JSON                set the output (or: ... | ff_output); a second call replaces it
#   ff_set_condition true|false   set the condition for `on: true|false` edges
#   ff_get_variable [-r] K [DEF]  print variable K as JSON (-r: a string without quotes), else DEF or null
#   ff_set_variable K JSON        set variable K (appends {"key","value"} to variables_set.jsonl)
#   ff_progress PCT [MSG...]      record progress 0..100 and log "[progress PCT%] MSG" on stderr

_ff_fail() {
  printf 'flowforge.sh: %s\n' "$*" >&2
  return 1
}

_ff_dir() {
  if [[ -z ${FLOWFORGE_JOB_DIR-} ]]; then
    _ff_fail "FLOWFORGE_JOB_DIR is not set: flowforge.sh only works inside a FlowForge job"
    return 1
  fi
}

# Write-then-rename, so the executor never reads half a file if the job is killed mid-write.
_ff_write() {
  local file="$FLOWFORGE_JOB_DIR/$1"
  local tmp="$file.tmp.${BASHPID:-$$}"
  printf '%s\n' "$2" >"$tmp" || return 1
  mv -f -- "$tmp" "$file"
}

_ff_cat() {
  _ff_dir || return 1
  if [[ ! -f $FLOWFORGE_JOB_DIR/$1 ]]; then
    _ff_fail "$1 is missing from the job directory $FLOWFORGE_JOB_DIR"
    return 1
  fi
  cat -- "$FLOWFORGE_JOB_DIR/$1"
}

# Sets _FF_STR to $1 as a JSON string literal, in pure bash (no subshell, no jq).
_ff_json_string() {
  local s=${1-} bs='\' q='"' code oct ch hex
  s=${s//"$bs"/"$bs$bs"}
  s=${s//"$q"/"$bs$q"}
  s=${s//$'\n'/"${bs}n"}
  s=${s//$'\r'/"${bs}r"}
  s=${s//$'\t'/"${bs}t"}
  if [[ $s == *[[:cntrl:]]* ]]; then
    for ((code = 1; code < 32; code++)); do
      printf -v oct '%03o' "$code"
      printf -v ch "\\$oct"
      printf -v hex '%su%04x' "$bs" "$code"
      s=${s//"$ch"/"$hex"}
    done
  fi
  _FF_STR="$q$s$q"
}

_FF_PY_CHECK='
import json, sys
def constant(name):
    raise ValueError(name + " is not valid JSON")
try:
    json.loads(sys.stdin.buffer.read().decode("utf-8"), parse_constant=constant)
except ValueError as exc:
    sys.stdout.write(str(exc))
    sys.exit(1)
'
_FF_JS_CHECK='
let s = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (d) => { s += d; }).on("end", () => {
  try { JSON.parse(s); } catch (e) { process.stdout.write(e.message); process.exit(1); }
});
'

# Rejects what is not JSON when python3 or node can tell; otherwise the executor reports it.
_ff_check_json() {
  local err
  if [[ -z ${1//[[:space:]]/} ]]; then
    _ff_fail "$2 needs a JSON value, got an empty string"
    return 1
  fi
  if command -v python3 >/dev/null 2>&1; then
    err=$(printf '%s' "$1" | python3 -c "$_FF_PY_CHECK" 2>&1) || {
      _ff_fail "$2 needs valid JSON: $err"
      return 1
    }
  elif command -v node >/dev/null 2>&1; then
    err=$(printf '%s' "$1" | node -e "$_FF_JS_CHECK" 2>&1) || {
      _ff_fail "$2 needs valid JSON: $err"
      return 1
    }
  fi
  return 0
}

ff_input() {
  _ff_cat input.json
}

ff_event() {
  _ff_cat event.json
}

ff_output() {
  _ff_dir || return 1
  local json
  if [[ $# -eq 0 ]]; then
    json=$(cat) || return 1
  elif [[ $# -eq 1 ]]; then
    json=$1
  else
    _ff_fail "ff_output takes one JSON argument (quote it), got $# arguments"
    return 1
  fi
  _ff_check_json "$json" ff_output || return 1
  _ff_write output.json "$json"
}

ff_set_condition() {
  _ff_dir || return 1
  if [[ $# -ne 1 || ( $1 != true && $1 != false ) ]]; then
    _ff_fail "ff_set_condition needs true or false, got '$*'"
    return 1
  fi
  _ff_write condition.json "$1"
}

ff_set_variable() {
  _ff_dir || return 1
  if [[ $# -ne 2 ]]; then
    _ff_fail "ff_set_variable takes a key and one JSON value (quote it), got $# arguments"
    return 1
  fi
  if [[ -z $1 ]]; then
    _ff_fail "ff_set_variable needs a non-empty key"
    return 1
  fi
  local json=$2
  _ff_check_json "$json" "ff_set_variable $1" || return 1
  # A raw newline cannot occur inside a JSON string, so these are whitespace between tokens.
  json=${json//$'\n'/ }
  json=${json//$'\r'/ }
  _ff_json_string "$1"
  printf '{"key": %s, "value": %s}\n' "$_FF_STR" "$json" >>"$FLOWFORGE_JOB_DIR/variables_set.jsonl"
}

_FF_PY_GET='
import json, os, sys
job_dir, key, raw = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
try:
    value = json.loads(sys.argv[4]) if len(sys.argv) > 4 else None
    path = os.path.join(job_dir, "variables_set.jsonl")
    found = False
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                entry = json.loads(line) if line.strip() else {}
                if entry.get("key") == key:
                    value, found = entry["value"], True
    path = os.path.join(job_dir, "variables.json")
    if not found and os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            variables = json.load(fh)
        if isinstance(variables, dict) and key in variables:
            value = variables[key]
except (ValueError, KeyError) as exc:
    sys.stderr.write("flowforge.sh: ff_get_variable: %s\n" % exc)
    sys.exit(1)
text = value if raw and isinstance(value, str) else json.dumps(value, ensure_ascii=False)
sys.stdout.buffer.write(text.encode("utf-8") + b"\n")
'
_FF_JS_GET='
const fs = require("fs"), path = require("path");
const [jobDir, key, raw, def] = process.argv.slice(1);
try {
  let value = def === undefined ? null : JSON.parse(def), found = false;
  let file = path.join(jobDir, "variables_set.jsonl");
  if (fs.existsSync(file)) {
    for (const line of fs.readFileSync(file, "utf8").split("\n")) {
      const entry = line.trim() ? JSON.parse(line) : {};
      if (entry.key === key) { value = entry.value; found = true; }
    }
  }
  file = path.join(jobDir, "variables.json");
  if (!found && fs.existsSync(file)) {
    const vars = JSON.parse(fs.readFileSync(file, "utf8"));
    if (vars && typeof vars === "object" && Object.prototype.hasOwnProperty.call(vars, key)) value = vars[key];
  }
  process.stdout.write((raw === "1" && typeof value === "string" ? value : JSON.stringify(value)) + "\n");
} catch (e) {
  process.stderr.write("flowforge.sh: ff_get_variable: " + e.message + "\n");
  process.exit(1);
}
'

ff_get_variable() {
  _ff_dir || return 1
  local raw=0
  if [[ ${1-} == -r ]]; then
    raw=1
    shift
  fi
  if [[ $# -lt 1 || $# -gt 2 || -z $1 ]]; then
    _ff_fail "ff_get_variable takes [-r] KEY [DEFAULT_JSON]"
    return 1
  fi
  if command -v python3 >/dev/null 2>&1; then
    python3 -c "$_FF_PY_GET" "$FLOWFORGE_JOB_DIR" "$1" "$raw" "${@:2}"
  elif command -v node >/dev/null 2>&1; then
    node -e "$_FF_JS_GET" "$FLOWFORGE_JOB_DIR" "$1" "$raw" "${@:2}"
  else
    _ff_fail "ff_get_variable needs python3 or node to read JSON"
    return 1
  fi
}

ff_progress() {
  _ff_dir || return 1
  local pct=${1-} whole frac
  if [[ ! $pct =~ ^([0-9]+)(\.([0-9]+))?$ ]]; then
    _ff_fail "ff_progress needs a number from 0 to 100, got '$pct'"
    return 1
  fi
  whole=${BASH_REMATCH[1]}
  frac=${BASH_REMATCH[3]}
  while [[ $whole == 0?* ]]; do whole=${whole#0}; done
  while [[ $frac == *0 ]]; do frac=${frac%0}; done
  if [[ ${#whole} -gt 3 ]] || ((10#$whole > 100)) || [[ $whole == 100 && -n $frac ]]; then
    _ff_fail "ff_progress needs a number from 0 to 100, got '$pct'"
    return 1
  fi
  pct=$whole${frac:+.$frac}
  shift
  local message="$*"
  _ff_json_string "$message"
  _ff_write progress.json "{\"pct\": $pct, \"message\": $_FF_STR}" || return 1
  if [[ -n $message ]]; then
    printf '[progress %s%%] %s\n' "$pct" "$message" >&2
  else
    printf '[progress %s%%]\n' "$pct" >&2
  fi
}
