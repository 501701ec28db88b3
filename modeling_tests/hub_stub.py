"""A tiny local stand-in for the Hugging Face Hub's HTTP API, enough for `create_repo` + `upload_folder`.

Answers, as huggingface_hub 2.4 calls them:

* `POST /api/repos/create`                      -> `{"url": ...}` (409 when the repo exists: `exist_ok=True` passes)
* `POST /api/validate-yaml`                     -> the README's YAML front matter parsed; 400 with `errors` if invalid
* `POST /api/models/{repo}/preupload/{rev}`     -> every file `"uploadMode": "regular"` (small files, no LFS/Xet),
                                                   files over `max_regular_size` are refused (keep test files small)
* `POST /api/models/{repo}/commit/{rev}`        -> NDJSON commit decoded; the files' bytes are recorded

and records every request, so a test can assert what was created, validated and committed. Point
`HF_ENDPOINT` at `stub.url` *before* importing huggingface_hub (it reads the variable at import) and set a dummy
`HF_TOKEN`. Run it in-process (`with HubStub() as stub:`) or as `python hub_stub.py STATE.json` (prints the URL on
the first line, writes the recorded state to STATE.json on SIGTERM/SIGINT).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

REPO = r"(?P<repo>[^/]+/[^/]+)"
ROUTES = [
    ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("POST", re.compile(rf"^/api/models/{REPO}/preupload/(?P<rev>[^/?]+)$"), "preupload"),
    ("POST", re.compile(rf"^/api/models/{REPO}/commit/(?P<rev>[^/?]+)$"), "commit"),
]


class HubStub:
    def __init__(self, max_regular_size: int = 50 * 1024 * 1024):
        self.max_regular_size = max_regular_size
        self.repos: dict[str, dict] = {}  # repo_id -> {"private": bool, "files": {path: bytes}}
        self.commits: list[dict] = []  # {"repo_id", "revision", "summary", "files": [paths], "lfs": [paths]}
        self.validated: list[str] = []  # README contents sent to validate-yaml
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, authorization)
        self.unhandled: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def committed_files(self, repo_id: str) -> dict[str, bytes]:
        return dict(self.repos.get(repo_id, {}).get("files", {}))

    def state(self) -> dict:
        """JSON-able record of what happened (for a stub run in another process)."""
        return {
            "repos": {
                repo: {
                    "private": info["private"],
                    "files": {p: len(b) for p, b in info["files"].items()},
                    "sha256": {p: hashlib.sha256(b).hexdigest() for p, b in info["files"].items()},
                }
                for repo, info in self.repos.items()
            },
            "commits": self.commits,
            "validated": self.validated,
            "requests": self.requests,
            "unhandled": self.unhandled,
        }

    # -- endpoints ------------------------------------------------------------------------------------------------
    def create_repo(self, body: dict, **_):
        repo_id = f"{body.get('organization')}/{body['name']}" if body.get("organization") else f"user/{body['name']}"
        with self._lock:
            if repo_id in self.repos:
                return 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"}
            private = body.get("visibility") == "private" or bool(body.get("private"))
            self.repos[repo_id] = {"private": private, "files": {}}
        return 200, {"url": f"{self.url}/{repo_id}", "name": repo_id, "id": repo_id}

    def validate_yaml(self, body: dict, **_):
        content = body.get("content", "")
        self.validated.append(content)
        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", content, re.DOTALL)
        if not match:
            return 200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata in repo card"}]}
        try:
            metadata = yaml.safe_load(match.group(1))
        except yaml.YAMLError as error:
            return 400, {"errors": [{"message": f"invalid YAML: {error}"}]}
        if not isinstance(metadata, dict):
            return 400, {"errors": [{"message": "YAML metadata must be a mapping"}]}
        errors = [
            {"message": f'"{key}" must be a string'}
            for key in ("library_name", "pipeline_tag", "license")
            if key in metadata and not isinstance(metadata[key], str)
        ]
        if "tags" in metadata and not isinstance(metadata["tags"], list):
            errors.append({"message": '"tags" must be an array'})
        return (400 if errors else 200), {"errors": errors, "warnings": []}

    def preupload(self, body: dict, repo: str, **_):
        if repo not in self.repos:
            return 404, {"error": "Repository not found"}
        files = []
        for info in body.get("files", []):
            if info["size"] > self.max_regular_size:
                return 400, {"error": f"{info['path']}: {info['size']} bytes, the stub takes regular files only"}
            files.append({"path": info["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None})
        return 200, {"files": files, "commitOid": "0" * 40}

    def commit(self, raw: bytes, repo: str, rev: str, **_):
        if repo not in self.repos:
            return 404, {"error": "Repository not found"}
        lines = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
        header = next((line["value"] for line in lines if line["key"] == "header"), {})
        added, lfs, deleted = {}, [], []
        for line in lines:
            if line["key"] == "file":
                value = line["value"]
                data = (
                    base64.b64decode(value["content"])
                    if value.get("encoding") == "base64"
                    else value["content"].encode()
                )
                added[value["path"]] = data
            elif line["key"] == "lfsFile":
                lfs.append(line["value"]["path"])
            elif line["key"] in ("deletedFile", "deletedFolder"):
                deleted.append(line["value"]["path"])
        if lfs:
            return 400, {"error": f"the stub does not store LFS/Xet files: {lfs}"}
        oid = hashlib.sha1(raw).hexdigest()
        with self._lock:
            self.repos[repo]["files"].update(added)
            for path in deleted:
                self.repos[repo]["files"].pop(path, None)
            self.commits.append(
                {
                    "repo_id": repo,
                    "revision": rev,
                    "summary": header.get("summary"),
                    "files": sorted(added),
                    "deleted": deleted,
                    "oid": oid,
                }
            )
        return 200, {
            "commitUrl": f"{self.url}/{repo}/commit/{oid}",
            "commitOid": oid,
            "pullRequestUrl": None,
            "success": True,
        }

    # -- HTTP plumbing ----------------------------------------------------------------------------------------------
    def _handler_class(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reply(self, status: int, payload: dict):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status >= 400:
                    self.send_header("X-Error-Message", str(payload.get("error", ""))[:200])
                self.end_headers()
                self.wfile.write(data)

            def _dispatch(self, method: str):
                raw = self._body()
                path = self.path.split("?", 1)[0]
                stub.requests.append((method, path, self.headers.get("Authorization")))
                for route_method, pattern, name in ROUTES:
                    match = pattern.match(path)
                    if route_method == method and match:
                        if not (self.headers.get("Authorization") or "").startswith("Bearer "):
                            return self._reply(401, {"error": "Invalid credentials in Authorization header"})
                        kwargs = {k: v for k, v in match.groupdict().items()}
                        try:
                            body = json.loads(raw) if raw and name != "commit" else {}
                        except json.JSONDecodeError:
                            body = {}
                        status, payload = getattr(stub, name)(body=body, raw=raw, **kwargs)
                        return self._reply(status, payload)
                stub.unhandled.append((method, path))
                return self._reply(404, {"error": f"hub stub: no route for {method} {path}"})

            def do_GET(self):
                self._dispatch("GET")

            def do_POST(self):
                self._dispatch("POST")

            def do_PUT(self):
                self._dispatch("PUT")

            def do_DELETE(self):
                self._dispatch("DELETE")

        return Handler


def main(argv=None) -> int:
    """`python hub_stub.py STATE.json`: serve until SIGTERM/SIGINT, then write the recorded state."""
    argv = sys.argv[1:] if argv is None else argv
    stub = HubStub().start()
    print(stub.url, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    stub.stop()
    if argv:
        with open(argv[0], "w") as handle:
            json.dump(stub.state(), handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
