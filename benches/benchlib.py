"""What the benchmark scripts share: driving wrk on loopback and reading its
output, waiting for readiness, reading a process's resident memory."""
import os, re, subprocess, time, urllib.request

# wrk script: POST the body from the BODY environment variable as JSON.
POST_LUA = 'wrk.method = "POST"\nwrk.body = os.getenv("BODY")\nwrk.headers["Content-Type"] = "application/json"\n'


def write_lua(path):
    with open(path, "w") as f:
        f.write(POST_LUA)
    return path


def wait_ready(url, timeout=120, proc=None):
    """Polls `url` until it answers 200; gives up early if `proc` exits."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"exited with {proc.returncode} before {url} was ready")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.1)
    raise SystemExit(f"not ready: {url}")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(l for l in f if l.startswith("VmRSS")).split()[1])


def to_ms(value):
    num, unit = re.match(r"([\d.]+)(us|ms|s)", value).groups()
    return float(num) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url, body, conns, seconds, lua):
    """One wrk run (one thread, `conns` connections): req/s, request count,
    p50/p99 in ms, non-2xx count and socket errors."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s", "--latency", "-s", lua, url],
        env={**os.environ, "BODY": body}, capture_output=True, text=True, check=True).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "total": int(re.search(r"(\d+) requests in", out).group(1)),
        "p50": to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
        "p99": to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),
        "non2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1) if errors else "",
    }
