#!/usr/bin/env python3
"""The Truss model.py fixtures (tests/truss-fixtures) under strut and under
Truss 0.18.35's own server, the same requests to both, and whether they
agree on status, body and stream bytes. Exits 1 on a difference that is not
one of strut's deliberate ones (listed in DELIBERATE and the README).

    python3 scripts/truss_agreement.py

Truss's server comes from ../shared/peers/setup.sh (PyPI only); each fixture
becomes its app folder through ../shared/peers/truss-app.sh. strut is the
release binary (built here if missing).
"""
import json, os, signal, subprocess, sys, tempfile, urllib.error, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benches"))
from benchlib import wait_ready  # noqa: E402
SHARED = os.path.join(ROOT, "..", "shared", "peers")
PEERS = os.environ.get("PEERS_DIR", os.path.expanduser("~/.cache/strut-peers"))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
FIXTURES = os.path.join(ROOT, "tests", "truss-fixtures")
PATH = "/v1/models/model:predict"  # Truss's predict route; strut serves it too

# fixture -> requests: a JSON body for Truss's predict route, or (path, body);
# every one is sent to both servers.
CASES = {
    "echo": [{"x": 1}, [1, "two", None, {"three": 3.5}], "text", 42],
    "lifecycle": [{"name": "a"}],
    "streaming": [{"n": 3}, {"n": 2, "async": True}, {"n": 0}],
    "errors": [{"fail": "teapot"}, {"fail": "value"}, {}],
    "outputs": [{"kind": "numpy"}, {"kind": "pydantic"}, {"kind": "tuple"}],
    "request": [{"x": 1}],
    "response": [{"kind": "plain"}, {"kind": "gone"}, {"kind": "stream"}],
    "openai": [("/v1/chat/completions", {"messages": [{"role": "user", "content": "one two"}]}),
               ("/v1/chat/completions", {"messages": [{"role": "user", "content": "one two"}], "stream": True}),
               ("/v1/embeddings", {"input": ["ab", "abc"]}),
               {"a": 1}],
}
# strut's error bodies carry a stable `code` next to Truss's `error`.
DELIBERATE = {"code"}


def request(port, case):
    path, body = case if isinstance(case, tuple) else (PATH, case)
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}?mode=fast", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", "User-Agent": "agreement",
                                          "X-Tenant": "acme"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers.get("content-type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", ""), e.read()


def comparable(content_type, raw):
    if "json" in content_type:
        value = json.loads(raw)
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in DELIBERATE}
        return value
    return raw.decode("utf-8", errors="replace")


def main():
    strut = os.path.join(TARGET, "release", "strut")
    if not os.path.exists(strut):
        subprocess.run(["cargo", "build", "--release", "--locked", "-q", "-p", "strut"], cwd=ROOT, check=True)
    if not os.path.exists(f"{PEERS}/run_truss_local.py"):
        subprocess.run(["bash", os.path.join(SHARED, "setup.sh")], check=True)
    secrets = tempfile.mkdtemp()
    with open(os.path.join(secrets, "api_token"), "w") as f:
        f.write("t0k3n")
    rows, failures = [], 0
    for fixture, bodies in CASES.items():
        path = os.path.join(FIXTURES, fixture)
        app = subprocess.run(["bash", os.path.join(SHARED, "truss-app.sh"), path], capture_output=True,
                             text=True, check=True).stdout.strip()
        env = {**os.environ, "RUST_LOG": "warn", "INFERENCE_SERVER_PORT": "18202",
               "TRUSS_SECRET_api_token": "t0k3n"}
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        procs = [
            subprocess.Popen([strut, "serve", path, "--host", "127.0.0.1", "--port", "18201",
                              "--secrets-dir", secrets], env=env, **quiet),
            subprocess.Popen([f"{PEERS}/truss-server-venv/bin/python", f"{PEERS}/run_truss_local.py"],
                             cwd=app, env=env, **quiet),
        ]
        try:
            wait_ready("http://127.0.0.1:18201/v1/models/model", proc=procs[0])
            wait_ready("http://127.0.0.1:18202/v1/models/model", proc=procs[1])
            for body in bodies:
                s_status, s_type, s_raw = request(18201, body)
                t_status, t_type, t_raw = request(18202, body)
                same_status = s_status == t_status
                s_body, t_body = comparable(s_type, s_raw), comparable(t_type, t_raw)
                same_body = s_body == t_body
                ok = same_status and same_body
                failures += not ok
                shown = f"{body[0]} {json.dumps(body[1])}" if isinstance(body, tuple) else json.dumps(body)
                rows.append((fixture, shown, f"{s_status}/{t_status}",
                             "yes" if same_body else f"no: strut {s_body!r} truss {t_body!r}"))
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
    print("| fixture | request | status strut/truss | body and stream bytes agree |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\n{len(rows) - failures} of {len(rows)} requests agree"
          f" (strut's extra `code` field in error bodies aside)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
