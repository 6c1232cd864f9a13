#!/usr/bin/env bash
# The web page of sendense-restore-web in a real browser (issue 13):
#
#   bash tests/web/browser-test.sh BUILD_DIR
#
# 1. web/openapi.yaml parses and is consistent (every $ref resolves, every
#    endpoint of the spec is there, path parameters declared, responses given).
# 2. The real stack: BUILD_DIR/sendense-restorefs on a real FUSE mount with a
#    catalog imported from the integration fixtures (BUILD_DIR/fixtures, made
#    by tests/fixtures/make-fixtures.sh), a tenant `acme` owning VM web01 and
#    an API token from `sendense-restore token create`; then
#    BUILD_DIR/sendense-restore-web on 127.0.0.1 (an ephemeral port) as nobody.
# 3. Headless Chromium (Debian's `chromium`) opens the page with
#    `#token=...&b=<backup>&p=/part1/...`:
#    - --dump-dom: the listing of /part1 holds exactly the names the tenant's
#      view of the mount holds, folders first, in the server's order; symlinks
#      show their target text; names with spaces and non-ASCII letters
#      show as they are; a wrong token shows the sign-in form and the error;
#    - --screenshot of /part1/data -> BUILD_DIR/web-screenshot.png;
#    - driven over the DevTools protocol (python3-websocket): the token is
#      gone from the address bar, a mouse click on a file's link downloads
#      it (byte-identical to the file read through the mount, under the name
#      the tree shows), clicks on breadcrumbs and folder links navigate,
#      history.back() returns to the previous folder, and "Download folder
#      as zip" saves a zip equal to the folder while the page's progress
#      (GET /api/v1/jobs/{id}) ends in "done"; "Show more" pages through a
#      folder of 3000 files until the rows equal the mount's;
#    - neither service's log holds a sanitizer report.
#
# Exit 0: passed; 1: failed; 77: skipped (loud SKIPPED line) when a tool, root,
# /dev/fuse or the fixtures are missing. SENDENSE_NO_SKIP=1 turns a skip into
# a failure (CI, where everything must be there).
#
# Development overrides (defaults in BUILD_DIR): SENDENSE_RESTOREFS,
# SENDENSE_CLI, SENDENSE_WEB (binaries), SENDENSE_FIXTURES_DIR, CHROMIUM.
# Everything started here is stopped by the EXIT trap (processes killed, the
# tree taken down with `sendense-restorefs --unmount`, `umount -l` as a last
# resort); KEEP_WORK=1 keeps the scratch folder (logs) after a run.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
fi
BUILD=$(cd -- "$1" && pwd)
SRC=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)
NO_SKIP=${SENDENSE_NO_SKIP:-0}

log() { printf 'browser-test: %s\n' "$*" >&2; }
fail() { printf 'browser-test: FAIL: %s\n' "$*" >&2; exit 1; }
skip() {
  if [[ $NO_SKIP == 1 ]]; then
    fail "$* (SENDENSE_NO_SKIP=1: a missing tool is a failure)"
  fi
  printf '\n*** SKIPPED: browser-test: %s ***\n\n' "$*"
  exit 77
}

# Debian's python3 (python3-yaml, python3-websocket), not whatever python3
# comes first in PATH.
PY=/usr/bin/python3
[[ -x $PY ]] || PY=$(command -v python3 || true)
[[ -n $PY ]] || skip "no python3 (Debian package python3)"

# ---------------------------------------------------------------- 1. OpenAPI
"$PY" -c 'import yaml' 2>/dev/null || skip "python3 has no yaml module (Debian package python3-yaml)"
"$PY" - "$SRC/web/openapi.yaml" <<'EOF' || fail "web/openapi.yaml"
import re, sys, yaml
path = sys.argv[1]
with open(path, encoding="utf-8") as f:
    doc = yaml.safe_load(f)
problems = []
if not str(doc.get("openapi", "")).startswith("3.0"):
    problems.append("openapi: not 3.0.x")
for key in ("info", "paths", "components"):
    if key not in doc:
        problems.append("no " + key)

def walk(node, where):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                if not isinstance(v, str) or not v.startswith("#/"):
                    problems.append(f"{where}: external or bad $ref {v!r}")
                    continue
                target = doc
                for part in v[2:].split("/"):
                    if not isinstance(target, dict) or part not in target:
                        problems.append(f"{where}: $ref {v} does not resolve")
                        break
                    target = target[part]
            else:
                walk(v, where + "/" + str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            walk(v, f"{where}[{i}]")
walk(doc, "")

def deref(node):
    while isinstance(node, dict) and "$ref" in node:
        target = doc
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = target
    return node

# Every endpoint of web-spec.md.
expected = {
    ("post", "/api/v1/session"), ("delete", "/api/v1/session"), ("get", "/api/v1/whoami"),
    ("get", "/api/v1/backups"), ("get", "/api/v1/backups/{id}/files"), ("get", "/api/v1/backups/{id}/stat"),
    ("get", "/api/v1/backups/{id}/download"), ("get", "/api/v1/backups/{id}/archive"),
    ("get", "/api/v1/jobs"), ("get", "/api/v1/jobs/{id}"), ("post", "/api/v1/restore/mount"),
    ("delete", "/api/v1/restore/{mount_id}"), ("get", "/api/v1/restore"),
    ("get", "/"), ("get", "/static/app.js"), ("get", "/static/style.css"),
}
methods = {"get", "put", "post", "delete", "patch", "head", "options"}
found = set()
for p, item in doc.get("paths", {}).items():
    for m, op in item.items():
        if m not in methods:
            continue
        found.add((m, p))
        if not op.get("responses"):
            problems.append(f"{m} {p}: no responses")
        for code in op.get("responses", {}):
            if not re.fullmatch(r"[1-5][0-9][0-9]|default", str(code)):
                problems.append(f"{m} {p}: response code {code!r}")
        declared = {deref(x).get("name") for x in op.get("parameters", []) + item.get("parameters", [])
                    if deref(x).get("in") == "path"}
        for name in re.findall(r"{([^}]+)}", p):
            if name not in declared:
                problems.append(f"{m} {p}: path parameter {name} not declared")
for m, p in sorted(expected - found):
    problems.append(f"missing {m.upper()} {p}")
archive = doc["paths"].get("/api/v1/backups/{id}/archive", {}).get("get", {})
job = [deref(x) for x in archive.get("parameters", []) if deref(x).get("name") == "job"]
if not job or job[0].get("schema", {}).get("pattern") != "^[A-Za-z0-9_-]{16,32}$":
    problems.append("archive: no job parameter with pattern ^[A-Za-z0-9_-]{16,32}$")
codes = set(deref(doc["components"]["schemas"]["Error"])["properties"]["code"]["enum"])
if codes != {"unauthorized", "not_found", "bad_request", "too_many_jobs", "unavailable", "internal"}:
    problems.append(f"Error.code enum {sorted(codes)}")
for p in problems:
    print("openapi.yaml: " + p, file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
log "web/openapi.yaml: parses, every \$ref resolves, every endpoint of the spec is there"

# ---------------------------------------------------------------- prerequisites
[[ $(id -u) -eq 0 ]] || skip "needs root (FUSE mount with allow_other, the web service drops to nobody)"
[[ -c /dev/fuse ]] || skip "no /dev/fuse"
CHROMIUM=${CHROMIUM:-$(command -v chromium || true)}
[[ -n $CHROMIUM && -x $CHROMIUM ]] || skip "chromium is missing (Debian package chromium)"
"$PY" -c 'import websocket' 2>/dev/null || skip "python3 has no websocket module (Debian package python3-websocket)"
for tool in sha256sum mountpoint umount; do
  command -v "$tool" >/dev/null || skip "missing tool $tool"
done
RESTOREFS=${SENDENSE_RESTOREFS:-$BUILD/sendense-restorefs}
CLI=${SENDENSE_CLI:-$BUILD/sendense-restore}
WEB=${SENDENSE_WEB:-$BUILD/sendense-restore-web}
[[ -x $WEB || -n ${SENDENSE_WEB:-} ]] || { [[ -x $BUILD/web/sendense-restore-web ]] && WEB=$BUILD/web/sendense-restore-web; }
for bin in "$RESTOREFS" "$CLI" "$WEB"; do
  [[ -x $bin ]] || fail "no executable $bin (build it first)"
done
FIXTURES=${SENDENSE_FIXTURES_DIR:-$BUILD/fixtures}
[[ -f $FIXTURES/SKIPPED ]] && skip "fixtures skipped: $(cat "$FIXTURES/SKIPPED")"
[[ -f $FIXTURES/manifest.env ]] || skip "no fixtures in $FIXTURES (ctest runs make_fixtures first)"
FULL_ID=$(sed -n 's/^FULL_ID="\(.*\)"$/\1/p' "$FIXTURES/manifest.env")
[[ -n $FULL_ID ]] || fail "manifest.env has no FULL_ID"

# ---------------------------------------------------------------- scratch and cleanup
WORK=$(mktemp -d /tmp/sendense-browser-test.XXXXXX)
chmod 755 "$WORK"
MNT=$WORK/mnt
DB=$WORK/catalog.db
mkdir -p "$MNT" "$WORK/downloads"
DAEMON_PID=
WEB_PID=
BROWSER_PIDS=()

cleanup() {
  local rc=$? pid
  set +e
  for pid in "${BROWSER_PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null && { kill "$pid"; sleep 0.5; kill -9 "$pid" 2>/dev/null; }
    wait "$pid" 2>/dev/null
  done
  if [[ -n $WEB_PID ]] && kill -0 "$WEB_PID" 2>/dev/null; then
    kill "$WEB_PID"
    for _ in $(seq 50); do kill -0 "$WEB_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$WEB_PID" 2>/dev/null
    wait "$WEB_PID" 2>/dev/null
  fi
  if [[ -n $DAEMON_PID ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill "$DAEMON_PID"
    for _ in $(seq 200); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$DAEMON_PID" 2>/dev/null
    wait "$DAEMON_PID" 2>/dev/null
  fi
  # The daemon leaves its mounts to its holder: take them down for good.
  if grep -qF " $MNT " /proc/self/mountinfo; then
    timeout 30 "$RESTOREFS" --unmount "$MNT" >>"$WORK/daemon.log" 2>&1
    for _ in $(seq 100); do grep -qF " $MNT" /proc/self/mountinfo || break; sleep 0.1; done
  fi
  # Last resort: anything still mounted under MNT, innermost first.
  grep -F " $MNT" /proc/self/mountinfo | awk '{print $5}' | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null
  done
  if [[ $rc -ne 0 ]]; then
    for f in daemon.log web.log driver.log; do
      [[ -s $WORK/$f ]] && { log "--- last lines of $f:"; tail -n 40 "$WORK/$f" >&2; }
    done
  fi
  if [[ ${KEEP_WORK:-0} == 1 || $rc -ne 0 ]]; then
    log "scratch folder kept: $WORK"
  else
    rm -rf -- "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_until() {  # wait_until SECONDS WHAT COMMAND...
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@"; do
    ((SECONDS < deadline)) || fail "timed out after waiting for $what"
    sleep 0.2
  done
}

# ---------------------------------------------------------------- 2. catalog, daemon, web service
log "catalog: import $FIXTURES/repo, tenant acme owns web01, an API token"
"$CLI" catalog import "$FIXTURES/repo" --catalog "$DB" >"$WORK/cli.log" 2>&1 || fail "catalog import: $(cat "$WORK/cli.log")"
"$CLI" tenant add acme --uid 4242 --gid 4242 --catalog "$DB" >>"$WORK/cli.log" 2>&1 || fail "tenant add"
"$CLI" tenant assign acme --vm web01 --catalog "$DB" >>"$WORK/cli.log" 2>&1 || fail "tenant assign"
TOKEN=$("$CLI" token create --tenant acme --label browser-test --catalog "$DB" 2>>"$WORK/cli.log") || fail "token create: $(cat "$WORK/cli.log")"
[[ $TOKEN =~ ^[A-Za-z0-9_.~-]{16,}$ ]] || fail "token create printed '$TOKEN', not one token"

log "daemon: $RESTOREFS $MNT"
"$RESTOREFS" "$MNT" --config /dev/null --catalog "$DB" -f --log-level debug >"$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!
mounted() { grep -qF " $MNT " /proc/self/mountinfo || ! kill -0 "$DAEMON_PID" 2>/dev/null; }
wait_until 20 "the FUSE mount" mounted
kill -0 "$DAEMON_PID" 2>/dev/null || fail "sendense-restorefs exited before mounting"
VIEW=$MNT/tenants/acme/$FULL_ID
view_ready() { [[ -d $VIEW/part1 ]]; }
wait_until 30 "the tenant's view $VIEW/part1" view_ready

log "web service: $WEB --listen 127.0.0.1:0 --user nobody"
"$WEB" --mountpoint "$MNT" --catalog "$DB" --listen 127.0.0.1:0 --user nobody >"$WORK/web.log" 2>&1 &
WEB_PID=$!
listening() { grep -qs 'web_listening.*port=[0-9]' "$WORK/web.log" || ! kill -0 "$WEB_PID" 2>/dev/null; }
wait_until 20 "web_listening in the service's log" listening
kill -0 "$WEB_PID" 2>/dev/null || fail "sendense-restore-web exited: $(tail -n 20 "$WORK/web.log")"
PORT=$(grep -o 'web_listening.*port=[0-9]*' "$WORK/web.log" | head -n 1 | sed 's/.*port=//')
BASE=http://127.0.0.1:$PORT
log "web service listens at $BASE"

# ---------------------------------------------------------------- 3. the browser
CHROME_FLAGS=(--headless=new --no-sandbox --disable-gpu --window-size=1280,800
              --no-first-run --no-default-browser-check --disable-extensions --disable-sync
              --disable-background-networking --disable-component-update --password-store=basic
              --lang=en-US)

# One browser run with a fresh profile (no cookie of an earlier run), bounded.
browser_once() {  # browser_once NAME ARGS... (stdout: what chromium prints there)
  local name=$1
  shift
  timeout 90 "$CHROMIUM" "${CHROME_FLAGS[@]}" --user-data-dir="$WORK/profile-$name" "$@" 2>>"$WORK/chromium.log"
}

# Fragment values as the page writes them (URLSearchParams, '/' kept).
frag() {
  "$PY" -c 'import sys, urllib.parse
print(urllib.parse.urlencode([tuple(a.split("=", 1)) for a in sys.argv[1:]], quote_via=urllib.parse.quote, safe="/"))' "$@"
}

# The rows of a page dumped by --dump-dom, one JSON object a row.
cat >"$WORK/rows.py" <<'EOF'
import html.parser, json, sys

class Rows(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.stack, self.in_rows, self.field = [], [], 0, None
        self.ids = {}
        self.text_of = None
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids[a["id"]] = {"attrs": a, "text": ""}
            self.text_of = a["id"] if a["id"] in ("error", "who-text", "count") else self.text_of
        if a.get("id") == "rows":
            self.in_rows = 1
            return
        if self.in_rows:
            if tag not in ("br", "img", "input"):
                self.in_rows += 1
            cls = (a.get("class") or "").split()
            if tag == "tr":
                self.rows.append({"class": a.get("class", ""), "name": None, "target": None, "href": None, "cells": []})
            elif tag == "a" and self.rows:
                self.rows[-1]["href"] = a.get("href")
            elif tag == "td" and self.rows:
                self.rows[-1]["cells"].append("")
                self.field = "cell"
            if "name" in cls:
                self.field = "name"
            elif "target" in cls:
                self.field = "target"
    def handle_endtag(self, tag):
        if self.text_of and tag in ("p", "span"):
            self.text_of = None
        if self.in_rows:
            self.in_rows -= 1
            if self.field in ("name", "target") and tag == "span":
                self.field = "cell"
    def handle_data(self, data):
        if self.text_of:
            self.ids[self.text_of]["text"] += data
        if self.in_rows and self.rows:
            r = self.rows[-1]
            if self.field in ("name", "target"):
                r[self.field] = (r[self.field] or "") + data
            if self.field and r["cells"]:
                r["cells"][-1] += data

p = Rows()
p.feed(sys.stdin.read())
print(json.dumps({"rows": p.rows, "ids": p.ids}))
EOF

# The names of a folder as the page must list them: folders first, then the
# rest, each in bytewise order (the server's), with the symlinks' targets.
cat >"$WORK/expect.py" <<'EOF'
import json, os, stat, sys
folder = sys.argv[1]
entries = []
for e in os.scandir(folder):
    st = os.lstat(e.path)
    kind = "dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else \
           "symlink" if stat.S_ISLNK(st.st_mode) else "other"
    entries.append({"name": e.name, "type": kind, "target": os.readlink(e.path) if kind == "symlink" else None})
entries.sort(key=lambda x: os.fsencode(x["name"]))
entries.sort(key=lambda x: 0 if x["type"] == "dir" else 1)
print(json.dumps(entries))
EOF

# check_listing NAME PATH: --dump-dom of #b=<id>&p=PATH equals the mount's folder.
check_listing() {
  local name=$1 path=$2
  browser_once "$name" --virtual-time-budget=20000 --dump-dom \
    "$BASE/#$(frag "token=$TOKEN" "b=$FULL_ID" "p=$path")" >"$WORK/$name.html" ||
    fail "chromium --dump-dom of $path failed (see $WORK/chromium.log)"
  "$PY" "$WORK/rows.py" <"$WORK/$name.html" >"$WORK/$name.rows.json"
  "$PY" "$WORK/expect.py" "$VIEW$path" >"$WORK/$name.expected.json"
  "$PY" - "$WORK/$name.rows.json" "$WORK/$name.expected.json" "$path" <<'EOF' || fail "listing of $path in the page differs from the mount ($WORK/$name.html)"
import json, sys
page = json.load(open(sys.argv[1]))
expected = json.load(open(sys.argv[2]))
path = sys.argv[3]
rows = page["rows"]
problems = []
if page["ids"].get("error", {}).get("text"):
    problems.append("the page shows an error: " + page["ids"]["error"]["text"])
got = [(r["name"], r["class"].replace("type-", ""), r["target"]) for r in rows]
want = [(e["name"], e["type"], e["target"]) for e in expected]
if got != want:
    problems.append(f"rows {got[:12]}... != mount {want[:12]}...")
for r in rows:
    if r["class"] == "type-symlink" and r["href"]:
        problems.append(f"symlink {r['name']} is a link ({r['href']}): it must never be followed")
    if r["class"] == "type-file" and not (r["href"] or "").startswith("/api/v1/backups/"):
        problems.append(f"file {r['name']} has no download link")
for p in problems:
    print(f"{path}: {p}", file=sys.stderr)
print(f"browser-test: {path}: {len(rows)} rows equal to the mount", file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
}

log "chromium --dump-dom: listings equal to the tenant's view of the mount"
check_listing root /part1
check_listing links /part1/links
check_listing spaces "/part1/dir with spaces"
check_listing data /part1/data

log "chromium --dump-dom: a wrong token shows the sign-in form and the server's error"
browser_once wrong --virtual-time-budget=10000 --dump-dom "$BASE/#token=not-a-valid-token" >"$WORK/wrong.html" ||
  fail "chromium --dump-dom (wrong token) failed"
"$PY" "$WORK/rows.py" <"$WORK/wrong.html" | "$PY" -c '
import json, sys
ids = json.load(sys.stdin)["ids"]
signin_hidden = "hidden" in ids["signin"]["attrs"]
app_hidden = "hidden" in ids["app"]["attrs"]
error = ids["error"]["text"]
if signin_hidden or not app_hidden or not error:
    sys.exit(f"wrong token: sign-in hidden={signin_hidden}, app hidden={app_hidden}, error={error!r}")
print("browser-test: wrong token: sign-in form shown, error " + repr(error), file=sys.stderr)' ||
  fail "a wrong token must show the sign-in form with the server's error"

log "chromium --screenshot of /part1/data"
browser_once shot --virtual-time-budget=20000 --screenshot="$WORK/web-screenshot.png" \
  "$BASE/#$(frag "token=$TOKEN" "b=$FULL_ID" "p=/part1/data")" >/dev/null ||
  fail "chromium --screenshot failed"
[[ -s $WORK/web-screenshot.png ]] || fail "no screenshot written"
cp "$WORK/web-screenshot.png" "$BUILD/web-screenshot.png"
log "screenshot: $BUILD/web-screenshot.png"

# ---------------------------------------------------------------- 4. clicks and downloads over the DevTools protocol
cat >"$WORK/driver.py" <<'EOF'
# Drives one headless Chromium over the DevTools protocol: real mouse clicks
# on the page, downloads saved to a folder (Browser.setDownloadBehavior).
import json, os, sys, time
import websocket

profile, base, token, backup, downloads = sys.argv[1:6]
deadline_s = 60

def log(*a):
    print("driver:", *a, file=sys.stderr, flush=True)

port_file = os.path.join(profile, "DevToolsActivePort")
end = time.time() + 30
while not (os.path.exists(port_file) and len(open(port_file).read().split("\n")) >= 2):
    if time.time() > end:
        sys.exit("no DevToolsActivePort in " + profile)
    time.sleep(0.1)
port, ws_path = open(port_file).read().split("\n")[:2]
ws = websocket.create_connection(f"ws://127.0.0.1:{port}{ws_path}", timeout=deadline_s, suppress_origin=True)
next_id = 0
events = []

def send(method, params=None, session=None):
    global next_id
    next_id += 1
    msg = {"id": next_id, "method": method, "params": params or {}}
    if session:
        msg["sessionId"] = session
    ws.send(json.dumps(msg))
    end = time.time() + deadline_s
    while time.time() < end:
        m = json.loads(ws.recv())
        if m.get("id") == next_id:
            if "error" in m:
                raise RuntimeError(f"{method}: {m['error']}")
            return m.get("result", {})
        events.append(m)
    raise RuntimeError(method + ": no answer")

def wait_event(pred, what, timeout=deadline_s):
    end = time.time() + timeout
    while True:
        for i, m in enumerate(events):
            if pred(m):
                return events.pop(i)
        if time.time() > end:
            raise RuntimeError("timed out waiting for " + what)
        ws.settimeout(max(0.1, end - time.time()))
        try:
            events.append(json.loads(ws.recv()))
        except websocket.WebSocketTimeoutException:
            pass
        finally:
            ws.settimeout(deadline_s)

target = send("Target.createTarget", {"url": "about:blank"})["targetId"]
session = send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
send("Page.enable", session=session)
send("Runtime.enable", session=session)
send("Browser.setDownloadBehavior", {"behavior": "allowAndName", "downloadPath": downloads, "eventsEnabled": True})

def js(expr):
    r = send("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True}, session)
    if "exceptionDetails" in r:
        raise RuntimeError("js: " + json.dumps(r["exceptionDetails"])[:400])
    return r["result"].get("value")

def wait_js(expr, what, timeout=deadline_s):
    end = time.time() + timeout
    while time.time() < end:
        v = js(expr)
        if v:
            return v
        time.sleep(0.1)
    raise RuntimeError("timed out waiting for " + what + "; error box: " + repr(js("document.getElementById('error').textContent")))

def row_named(name):
    return f"[...document.querySelectorAll('#rows span.name')].find(s => s.textContent === {json.dumps(name)})"

def listing_has(name):
    return wait_js(f"!!{row_named(name)} && document.getElementById('loading').hidden", "row " + name)

def click_at(expr, what):
    rect = wait_js(f"""(() => {{ const e = {expr}; if (!e) return null; e.scrollIntoView({{block: 'center'}});
      const r = e.getBoundingClientRect(); return {{x: r.x + r.width / 2, y: r.y + r.height / 2}}; }})()""", what)
    for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
        send("Input.dispatchMouseEvent", {"type": kind, "x": rect["x"], "y": rect["y"], "button": "left", "clickCount": 1}, session)

def hash_params():
    return js("Object.fromEntries(new URLSearchParams(location.hash.slice(1)))")

def download(click_expr, what):
    events[:] = [m for m in events if not m.get("method", "").startswith("Browser.download")]
    click_at(click_expr, what)
    begin = wait_event(lambda m: m.get("method") == "Browser.downloadWillBegin", "download of " + what)["params"]
    guid = begin["guid"]
    done = wait_event(lambda m: m.get("method") == "Browser.downloadProgress" and m["params"].get("guid") == guid
                      and m["params"].get("state") in ("completed", "canceled"), "end of download " + what, 120)["params"]
    if done["state"] != "completed":
        raise RuntimeError("download of " + what + " was cancelled")
    log(f"downloaded {what}: {begin['suggestedFilename']!r}, {done.get('receivedBytes')} bytes")
    return {"what": what, "suggested": begin["suggestedFilename"], "file": os.path.join(downloads, guid), "url": begin["url"]}

result = {"downloads": []}
frag = "token=" + token + "&b=" + backup + "&p=/part1/data"
send("Page.navigate", {"url": base + "/#" + frag}, session)
listing_has("random-1M.bin")
result["hash_after_signin"] = hash_params()
result["who"] = js("document.getElementById('who-text').textContent")

# A file: the mouse on its link.
result["downloads"].append(download(row_named("random-1M.bin"), "/part1/data/random-1M.bin"))

# Breadcrumb to part1, then a folder link; a file with a non-ASCII name.
click_at("[...document.querySelectorAll('#crumbs a')].find(a => a.textContent === 'part1')", "breadcrumb part1")
listing_has("dir with spaces")
click_at(row_named("dir with spaces"), "folder link 'dir with spaces'")
listing_has("Ünïcödé-日本語.txt")
result["hash_in_folder"] = hash_params()
result["downloads"].append(download(row_named("Ünïcödé-日本語.txt"), "/part1/dir with spaces/Ünïcödé-日本語.txt"))

# Back: the previous folder again.
js("history.back()")
listing_has("dir with spaces")
result["hash_after_back"] = hash_params()

# The docs folder as zip, with the page's progress.
click_at(row_named("docs"), "folder link docs")
listing_has("readme.txt")
zip_dl = download("document.getElementById('zip')", "/part1/docs as zip")
result["zip"] = zip_dl
result["job_text"] = wait_js("(() => { const t = document.getElementById('job-text').textContent; "
                             "return /^(done|failed|cancelled|unknown)/.test(t) || document.getElementById('job').dataset.state ? t : null; })()",
                             "the end of the zip job")
result["job_state"] = js("document.getElementById('job').dataset.state || ''")

# A big folder in pages: "Show more" until everything is there.
click_at("[...document.querySelectorAll('#crumbs a')].find(a => a.textContent === 'part1')", "breadcrumb part1")
listing_has("many")
click_at(row_named("many"), "folder link many")
listing_has("f0000")
result["many_first_count"] = js("document.getElementById('count').textContent")
result["many_first_rows"] = js("document.querySelectorAll('#rows tr').length")
clicks = 0
while js("!document.getElementById('more').hidden") and clicks < 20:
    before = js("document.querySelectorAll('#rows tr').length")
    click_at("document.getElementById('more')", "Show more")
    wait_js(f"document.querySelectorAll('#rows tr').length > {before} && document.getElementById('loading').hidden", "more rows")
    clicks += 1
result["many_clicks"] = clicks
result["many_rows"] = js("[...document.querySelectorAll('#rows span.name')].map(s => s.textContent)")
result["error"] = js("document.getElementById('error').textContent")
print(json.dumps(result))
EOF

log "chromium over the DevTools protocol: clicks, downloads, back, folder as zip"
"$CHROMIUM" "${CHROME_FLAGS[@]}" --user-data-dir="$WORK/profile-cdp" --remote-debugging-port=0 about:blank \
  >>"$WORK/chromium.log" 2>&1 &
BROWSER_PIDS+=($!)
timeout 300 "$PY" "$WORK/driver.py" "$WORK/profile-cdp" "$BASE" "$TOKEN" "$FULL_ID" "$WORK/downloads" \
  >"$WORK/driver.json" 2>"$WORK/driver.log" || fail "the DevTools driver failed: $(tail -n 5 "$WORK/driver.log")"
cat "$WORK/driver.log" >&2

"$PY" - "$WORK/driver.json" "$VIEW" "$TOKEN" "$BASE" <<'EOF' || fail "what the page did differs from the mount or the spec (above)"
import hashlib, json, os, stat, sys, urllib.error, urllib.parse, urllib.request, zipfile
result = json.load(open(sys.argv[1]))
view, token, base = sys.argv[2], sys.argv[3], sys.argv[4]
problems = []

def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

if "token" in result["hash_after_signin"] or token in json.dumps(result):
    problems.append("the token is still in the address bar: " + json.dumps(result["hash_after_signin"]))
if result["hash_after_signin"].get("p") != "/part1/data":
    problems.append("the fragment lost the folder: " + json.dumps(result["hash_after_signin"]))
if result["hash_in_folder"].get("p") != "/part1/dir with spaces":
    problems.append("a folder link led to " + json.dumps(result["hash_in_folder"]))
if result["hash_after_back"].get("p") != "/part1":
    problems.append("history.back() led to " + json.dumps(result["hash_after_back"]))
if "acme" not in result["who"]:
    problems.append("who is signed in: " + repr(result["who"]))
for d in result["downloads"]:
    path = d["what"]
    mine, theirs = sha(d["file"]), sha(view + path)
    if mine != theirs:
        problems.append(f"{path}: sha256 {mine} through the page, {theirs} through the mount")
    else:
        print(f"browser-test: {path}: downloaded through the page, sha256 {mine} equal to the mount", file=sys.stderr)
    if d["suggested"] != os.path.basename(path):
        problems.append(f"{path}: saved as {d['suggested']!r}")
z = result["zip"]
if z["suggested"] != "docs.zip":
    problems.append(f"zip saved as {z['suggested']!r}, not docs.zip")
proposed = urllib.parse.parse_qs(urllib.parse.urlparse(z["url"]).query).get("job", [""])[0]
if not proposed:
    problems.append("the zip request proposes no job id: " + z["url"])
else:
    # The server took the id the page proposed (job=): the job is known by it.
    req = urllib.request.Request(f"{base}/api/v1/jobs/{proposed}", headers={"Authorization": "Bearer " + token})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            j = json.load(r)
        if j.get("id") != proposed or j.get("state") != "done":
            problems.append(f"GET /api/v1/jobs/{proposed}: {j}")
    except urllib.error.HTTPError as e:
        problems.append(f"GET /api/v1/jobs/{proposed} (the id the page proposed): HTTP {e.code} {e.read()[:200]!r}; "
                        "the server must use a valid unused job= id")
if result["job_state"] != "done" or not result["job_text"].startswith("done"):
    problems.append(f"zip progress ended as {result['job_state']!r}: {result['job_text']!r}")
else:
    print("browser-test: zip progress: " + result["job_text"], file=sys.stderr)
if result["error"]:
    problems.append("the page shows an error: " + result["error"])
many = sorted(os.listdir(os.path.join(view, "part1/many")), key=os.fsencode)
if result["many_rows"] != many:
    problems.append(f"/part1/many after {result['many_clicks']} 'Show more': {len(result['many_rows'])} rows, the mount has {len(many)}")
elif len(many) > 1000 and (result["many_first_rows"] != 1000 or result["many_clicks"] < 1):
    problems.append(f"/part1/many was not paged: {result['many_first_rows']} rows at first, {result['many_first_count']!r}")
else:
    print(f"browser-test: /part1/many: {result['many_first_count']!r} at first, {len(many)} rows after "
          f"{result['many_clicks']} 'Show more', equal to the mount", file=sys.stderr)
with zipfile.ZipFile(z["file"]) as zf:
    names = {}
    for info in zf.infolist():
        if info.is_dir():
            continue
        names[info.filename] = info
    folder = os.path.join(view, "part1/docs")
    want = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for f in filenames:
            full = os.path.join(dirpath, f)
            if stat.S_ISREG(os.lstat(full).st_mode):
                want["docs/" + os.path.relpath(full, folder)] = full
    if set(names) - {n for n in names if (names[n].external_attr >> 16) & 0o170000 == 0o120000} != set(want):
        problems.append(f"zip members {sorted(names)} != files {sorted(want)}")
    for n, full in want.items():
        if n in names and hashlib.sha256(zf.read(n)).hexdigest() != sha(full):
            problems.append(f"zip member {n} differs from the mount")
    print(f"browser-test: docs.zip through the page: {len(want)} files equal to the mount", file=sys.stderr)
for p in problems:
    print("browser-test: " + p, file=sys.stderr)
sys.exit(1 if problems else 0)
EOF

# Neither service may have logged a sanitizer report (ASan/UBSan builds).
for f in daemon.log web.log; do
  if grep -qE 'ERROR: (Address|Leak|Thread)Sanitizer|runtime error:' "$WORK/$f"; then
    fail "sanitizer report in $f: $(grep -m 3 -E 'Sanitizer|runtime error:' "$WORK/$f")"
  fi
done

log "PASS"
