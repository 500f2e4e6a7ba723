"""Scale-out: two replicas behind nginx (deploy/nginx.conf, as documented) on loopback.

nginx comes from Debian (`make test` and .ci/run install it when run as root); without it the test
is skipped on a developer's machine and fails in CI, where it must run.
"""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import torch

from splitveil.errors import ServeError
from splitveil.serve.client import EdgeClient
from splitveil.serve.process import ServerProcess, free_port

NGINX = shutil.which("nginx") or (os.path.exists("/usr/sbin/nginx") and "/usr/sbin/nginx")
TOKEN = "replica-token"
REPO_ROOT = Path(__file__).resolve().parents[2]

if not NGINX:
    if os.environ.get("CI"):
        raise RuntimeError("nginx is missing in CI: `make test` installs it (apt-get install nginx) when run as root")
    pytest.skip("nginx is not installed (apt-get install nginx)", allow_module_level=True)


def _samples_served(url: str) -> float:
    match = re.search(r"^splitveil_samples_total (\S+)$", httpx.get(url + "/metrics").text, re.MULTILINE)
    assert match, "the replica's /metrics has no splitveil_samples_total"
    return float(match.group(1))


@pytest.fixture
def balancer(tmp_path):
    """``start(replica_ports) -> url`` of nginx running deploy/nginx.conf with its ports swapped."""
    processes = []

    def start(replica_ports: list[int]) -> str:
        config = (REPO_ROOT / "deploy" / "nginx.conf").read_text()
        listen = free_port()
        config = config.replace("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{listen};")
        for documented, port in zip(("8001", "8002"), replica_ports, strict=True):
            config = config.replace(f"server 127.0.0.1:{documented} ", f"server 127.0.0.1:{port} ")
        prefix = tmp_path / "lb"
        for sub in ("logs", "tmp"):
            (prefix / sub).mkdir(parents=True)
        (prefix / "nginx.conf").write_text(config)
        # As root, nginx's workers would drop to "nobody", who cannot enter pytest's private tmp dir.
        directives = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
        command = [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", directives]
        processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        url = f"http://127.0.0.1:{listen}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert processes[-1].poll() is None, processes[-1].stdout.read().decode()
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    return url
            except httpx.TransportError:
                time.sleep(0.05)
        raise TimeoutError(f"nginx did not answer on {url}")

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


def test_two_replicas_behind_nginx_serve_and_fail_over(make_bundle, tiny_data, balancer, tmp_path):
    bundle, deployed = make_bundle()
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKEN + "\n")
    auth = ["--tokens-file", str(tokens)]
    images = tiny_data.test.images
    with torch.no_grad():
        expected = deployed.split(images)
    with ServerProcess(bundle, extra=auth) as first, ServerProcess(bundle, extra=auth) as second:
        url = balancer([first.port, second.port])
        with EdgeClient.from_bundle(bundle, url, token=TOKEN, retries=0) as client:
            remote = torch.cat([client.logits(images[i : i + 1]) for i in range(len(images))])
            assert torch.allclose(remote, expected, atol=1e-5)
            # least_conn with sequential requests still spreads them: both replicas did work
            served = [_samples_served(first.url), _samples_served(second.url)]
            assert min(served) > 0 and sum(served) == len(images), served

            first.stop()  # one replica goes away: nginx sends everything to the other
            before = _samples_served(second.url)
            again = torch.cat([client.logits(images[i : i + 4]) for i in range(0, len(images), 4)])
            assert torch.allclose(again, expected, atol=1e-5)
            assert _samples_served(second.url) - before == len(images)
            with EdgeClient.from_bundle(bundle, url, token="wrong", retries=0) as intruder:
                with pytest.raises(ServeError, match="HTTP 401"):
                    intruder.predict(images[:1])  # the token is checked by the replica, through nginx
