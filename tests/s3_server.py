"""A real S3-compatible server for the streaming tests: moto's ``moto_server`` on the loopback address.

The server is a separate process (``moto_server -p PORT``) reached over HTTP through the usual environment
(``AWS_ENDPOINT_URL`` and dummy keys), exactly as a user's MinIO or R2 would be; data is uploaded through s3fs.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class S3Server:
    """``moto_server`` on 127.0.0.1; :attr:`env` points boto / s3fs at it.

    Args:
        auth: Enforce credentials from the first request (moto's ``INITIAL_NO_AUTH_ACTION_COUNT=0``): every request
            with the dummy keys is then denied, as a bucket without access would be.
    """

    def __init__(self, log_dir: Path, auth: bool = False) -> None:
        executable = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}
        server_env = {**os.environ, **({"INITIAL_NO_AUTH_ACTION_COUNT": "0"} if auth else {})}
        self._log = (log_dir / f"moto-{self.port}.log").open("wb")
        self.process = subprocess.Popen(
            [executable, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=server_env,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).read()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start; see {self._log.name}") from None
                time.sleep(0.2)

    def filesystem(self):
        """A fresh s3fs filesystem on this server (no cached listings)."""
        import s3fs

        return s3fs.S3FileSystem(
            key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            secret=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            endpoint_url=self.endpoint,
            skip_instance_cache=True,
            use_listings_cache=False,
        )

    def upload(self, local: Path, url: str) -> str:
        """Copy a local folder's files to ``s3://bucket/prefix`` (the bucket is created); returns the URL."""
        fs = self.filesystem()
        bucket = url.removeprefix("s3://").split("/", 1)[0]
        if not fs.exists(bucket):
            fs.mkdir(bucket)
        for path in sorted(local.iterdir()):
            if path.is_file():
                fs.put_file(str(path), f"{url.removeprefix('s3://').rstrip('/')}/{path.name}")
        return url

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()
