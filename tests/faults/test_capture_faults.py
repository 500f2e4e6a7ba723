"""Capture under real faults: real server processes, real files, a disk that fills, a server killed.

The disk fills for real without root: the server process runs under a small ``RLIMIT_FSIZE`` (with
SIGXFSZ ignored, as the signal would otherwise kill it), so a write past the limit fails part-way
with EFBIG exactly as one onto a full device fails with ENOSPC. Raising the limit from outside
(``prlimit``) is freeing the space. Every request carries a distinct value, so each frame read back
is matched to the one request it must come from.
"""

import os
import resource
import signal
import subprocess
import tempfile
import threading
import time

import httpx
import pytest
import torch

from splitveil.bench.capture_audit import captured_chunks, survey_capture
from splitveil.serve import MEDIA_TYPE, encode, load_half
from splitveil.serve.capture_format import HEADER, MAGIC, frame_header
from splitveil.serve.capture_reader import CaptureReader
from splitveil.serve.process import ServerProcess

HEADERS = {"content-type": MEDIA_TYPE}
FRAMES_BEFORE_FULL = 5


@pytest.fixture
def feature_shape(bundle):
    return load_half(bundle, "cloud").feature_shape


def _body(feature_shape, value: float) -> bytes:
    return encode(torch.full((2, *feature_shape), value))


class FileSizeLimitedServer(ServerProcess):
    """A server process whose files may not grow past ``limit`` bytes: a disk that is nearly full."""

    def __init__(self, checkpoint, *, limit: int, **options) -> None:
        super().__init__(checkpoint, **options)
        self.limit = limit

    def start(self) -> "FileSizeLimitedServer":
        def limit_file_size() -> None:  # runs in the child, before it executes the server
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

        self._log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            self.command, stdout=self._log, stderr=subprocess.STDOUT, preexec_fn=limit_file_size
        )
        self.wait_ready()
        return self

    def free_space(self) -> None:
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.prlimit(self.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, hard))


def _metric(text: str, sample: str) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def _limit_after(frames: int, body: bytes) -> int:
    """A file size limit that lets ``frames`` frames of ``body``'s size through and cuts the next one in half."""
    frame = HEADER.size + len(body)
    return len(MAGIC) + frames * frame + frame // 2


def _wait_ready(url: str, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while (status := httpx.get(f"{url}/readyz").status_code) != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    return status


def _read_back(capture):
    reader = CaptureReader(capture)
    return list(reader.frames()), reader.damage


def test_disk_full_mid_frame_refuses_with_507_and_loses_no_whole_frame(bundle, feature_shape, tmp_path):
    capture = tmp_path / "wire.svcap"
    bodies = [_body(feature_shape, i) for i in range(16)]
    limit = _limit_after(FRAMES_BEFORE_FULL, bodies[0])
    extra = ["--no-auth", "--capture", str(capture), "--capture-errors", "fail"]
    with FileSizeLimitedServer(bundle, limit=limit, extra=extra) as server, httpx.Client(base_url=server.url) as http:
        captured = []
        statuses = []
        for body in bodies[:10]:
            response = http.post("/v1/infer", content=body, headers=HEADERS)
            statuses.append(response.status_code)
            if response.status_code == 200:
                captured.append(body)
            else:
                assert response.json()["detail"].startswith("the server cannot record requests for audit right now")
        assert statuses == [200] * FRAMES_BEFORE_FULL + [507] * 5
        # While the disk is full the file holds exactly the whole frames: the half-written one was cut off.
        assert _read_back(capture) == (captured, [])
        assert capture.stat().st_size == len(MAGIC) + sum(HEADER.size + len(b) for b in captured)
        assert http.get("/readyz").status_code == 503 and http.get("/readyz").json()["cause"] == "EFBIG"
        text = http.get("/metrics").text
        assert _metric(text, 'splitveil_requests_total{status="507"}') == 5
        assert _metric(text, 'splitveil_errors_total{reason="capture"}') == 5
        assert _metric(text, 'splitveil_capture_failures_total{cause="EFBIG"}') == 5

        server.free_space()
        assert _wait_ready(server.url) == 200  # readiness comes back once a frame could be written
        for body in bodies[10:]:
            assert http.post("/v1/infer", content=body, headers=HEADERS).status_code == 200
            captured.append(body)
        text = http.get("/metrics").text
        assert _metric(text, "splitveil_capture_frames_total") == len(captured)
        assert _metric(text, "splitveil_capture_failing") == 0
    assert "capture failing, refusing requests (507)" in server.output()
    frames, damage = _read_back(capture)
    assert frames == captured and damage == []  # every answered request, in order, and no garbage frame
    features = _audited_features(capture, tuple(feature_shape))
    expected = torch.tensor([float(i) for i in [*range(FRAMES_BEFORE_FULL), *range(10, 16)] for _ in range(2)])
    assert torch.equal(features.flatten(1)[:, 0], expected)


def test_disk_full_with_skip_serves_everything_and_captures_all_it_could(bundle, feature_shape, tmp_path):
    capture = tmp_path / "wire.svcap"
    bodies = [_body(feature_shape, i) for i in range(12)]
    limit = _limit_after(FRAMES_BEFORE_FULL, bodies[0])
    extra = ["--no-auth", "--capture", str(capture), "--capture-errors", "skip"]
    with FileSizeLimitedServer(bundle, limit=limit, extra=extra) as server, httpx.Client(base_url=server.url) as http:
        statuses = [http.post("/v1/infer", content=body, headers=HEADERS).status_code for body in bodies[:8]]
        assert http.get("/readyz").status_code == 200  # skipping: the server keeps taking traffic
        text = http.get("/metrics").text
        assert _metric(text, "splitveil_capture_skipped_total") == 8 - FRAMES_BEFORE_FULL
        assert _metric(text, "splitveil_capture_failing") == 1
        server.free_space()
        statuses += [http.post("/v1/infer", content=body, headers=HEADERS).status_code for body in bodies[8:]]
        text = http.get("/metrics").text
    assert statuses == [200] * len(bodies)
    assert _metric(text, "splitveil_capture_failing") == 0
    assert _metric(text, "splitveil_capture_frames_total") == FRAMES_BEFORE_FULL + 4
    assert _read_back(capture) == (bodies[:FRAMES_BEFORE_FULL] + bodies[8:], [])


def test_sigkill_under_load_then_restart_on_the_same_file_loses_only_frames_in_flight(bundle, feature_shape, tmp_path):
    capture = tmp_path / "wire.svcap"
    extra = ["--no-auth", "--capture", str(capture)]
    clients = 4
    answered: list[bytes] = []
    sent: list[bytes] = []
    refused: list[int] = []
    lock = threading.Lock()

    def load(server_url: str, worker: int) -> None:
        with httpx.Client(base_url=server_url, timeout=10) as http:
            for sequence in range(10_000):
                body = _body(feature_shape, worker * 10_000 + sequence)
                with lock:
                    sent.append(body)
                try:
                    response = http.post("/v1/infer", content=body, headers=HEADERS)
                except httpx.TransportError:
                    return  # the server is gone; this request was in flight
                with lock:
                    if response.status_code == 200:
                        answered.append(body)
                    else:
                        refused.append(response.status_code)

    with ServerProcess(bundle, extra=extra) as first:
        workers = [threading.Thread(target=load, args=(first.url, w)) for w in range(clients)]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + 60
        while len(answered) < 60 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGKILL)
        for worker in workers:
            worker.join(timeout=30)
    assert len(answered) >= 60 and refused == []
    # A SIGKILL almost always lands between two write calls; a torn frame is appended here so the
    # restart must repair one for certain (it is the frame of a request that was never answered).
    torn = _body(feature_shape, -1.0)
    with capture.open("ab") as file:
        file.write(frame_header(torn) + torn[: len(torn) // 2])

    later = [_body(feature_shape, 100_000 + i) for i in range(10)]
    with ServerProcess(bundle, extra=extra) as second, httpx.Client(base_url=second.url) as http:
        for body in later:
            assert http.post("/v1/infer", content=body, headers=HEADERS).status_code == 200
    assert "cut off" in second.output() and "after its last whole frame" in second.output()

    frames, damage = _read_back(capture)
    assert damage == []
    assert frames[-len(later) :] == later  # the restarted server's frames follow whole ones
    before = frames[: -len(later)]
    assert set(answered) <= set(before)  # every request the killed server answered was kept
    unanswered = set(before) - set(answered)
    assert unanswered <= set(sent) and len(unanswered) <= clients  # at most the requests in flight
    assert len(before) == len(set(before))
    features = _audited_features(capture, tuple(feature_shape))
    assert len(features) == 2 * len(frames)


def _audited_features(capture, feature_shape: tuple[int, ...]) -> torch.Tensor:
    """Every feature `splitveil attack --capture` inverts, read as it reads them: surveyed, then streamed in chunks."""
    survey = survey_capture(capture, feature_shape)
    chunks = list(captured_chunks(CaptureReader(capture), limit=survey.samples, chunk_samples=3))
    assert all(len(chunk) == 3 for chunk in chunks[:-1])
    return torch.cat(chunks)
