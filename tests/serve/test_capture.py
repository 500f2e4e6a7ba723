"""Capture files on real files: the frame format, repair at open, damage reports, rotation, and the
server's answers (507 or skip), metrics and readiness when capture cannot be written."""

import logging
import struct

import pytest
import torch
from fastapi.testclient import TestClient

from splitveil.errors import ConfigError, WireFormatError
from splitveil.serve import MEDIA_TYPE, encode, load_half, read_capture
from splitveil.serve.capture import CaptureError, CaptureWriter
from splitveil.serve.capture_format import HEADER, MAGIC, MAGIC_V1, frame_header
from splitveil.serve.capture_reader import CaptureReader, capture_files
from splitveil.serve.server import ServerSettings, create_app

HEADERS = {"content-type": MEDIA_TYPE}


def _bodies(count: int, samples: int = 2) -> list[bytes]:
    """Distinct request bodies: body i holds the value i, so a misplaced frame cannot pass for another."""
    return [encode(torch.full((samples, 3, 4), float(i))) for i in range(count)]


def _write(path, bodies, **limits) -> None:
    writer = CaptureWriter(path, **limits)
    for body in bodies:
        writer.write(body)
    writer.close()


def _read(path, **options) -> tuple[list[bytes], list]:
    reader = CaptureReader(path, **options)
    return list(reader.frames()), reader.damage


def test_frames_round_trip_in_order_behind_the_v2_magic(tmp_path):
    bodies = _bodies(5)
    _write(tmp_path / "cap.svcap", bodies)
    data = (tmp_path / "cap.svcap").read_bytes()
    assert data.startswith(MAGIC) and len(data) == len(MAGIC) + sum(HEADER.size + len(b) for b in bodies)
    assert _read(tmp_path / "cap.svcap") == (bodies, [])
    assert torch.equal(read_capture(tmp_path / "cap.svcap")[::2, 0, 0], torch.arange(5.0))


def test_a_torn_tail_is_reported_then_cut_off_at_open_so_new_frames_follow_whole_ones(tmp_path, caplog):
    path = tmp_path / "cap.svcap"
    bodies = _bodies(4)
    _write(path, bodies[:3])
    whole = path.stat().st_size
    with path.open("ab") as file:  # what a server killed in the middle of writing frame 3 leaves
        file.write(frame_header(bodies[3]) + bodies[3][:20])
    frames, damage = _read(path)
    assert frames == bodies[:3]
    assert [(d.kind, d.offset, d.size) for d in damage] == [("torn tail", whole, HEADER.size + 20)]
    assert "torn last frame" in str(damage[0])
    with pytest.raises(WireFormatError, match="torn last frame"):
        _read(path, strict=True)

    with caplog.at_level(logging.WARNING, logger="splitveil.serve.capture"):
        _write(path, bodies[3:])
    assert f"cut off {HEADER.size + 20} bytes after its last whole frame (byte {whole})" in caplog.text
    assert _read(path) == (bodies, [])


def test_a_torn_magic_line_is_rewritten(tmp_path):
    path = tmp_path / "cap.svcap"
    path.write_bytes(MAGIC[:3])  # the creating server died writing the magic line
    assert _read(path)[0] == [] and _read(path)[1][0].kind == "torn tail"
    _write(path, _bodies(1))
    assert _read(path) == (_bodies(1), [])


@pytest.mark.parametrize("where", ["body", "length"])
def test_a_corrupt_frame_is_skipped_with_a_report_and_every_whole_frame_after_it_is_read(tmp_path, where):
    path = tmp_path / "cap.svcap"
    bodies = _bodies(4)
    _write(path, bodies)
    data = bytearray(path.read_bytes())
    frame1 = len(MAGIC) + HEADER.size + len(bodies[0])
    # A flipped body byte fails the body checksum; a flipped length byte the header checksum (a wrong
    # length believed would carry the reader past good frames).
    data[frame1 + (HEADER.size + 10 if where == "body" else 5)] ^= 0xFF
    path.write_bytes(data)
    frames, damage = _read(path)
    assert frames == [bodies[0], *bodies[2:]]
    assert [(d.kind, d.offset, d.size) for d in damage] == [("corrupt frame", frame1, HEADER.size + len(bodies[1]))]
    assert "the whole frames after them were read" in str(damage[0])
    with pytest.warns(UserWarning, match="corrupt bytes"):
        assert len(read_capture(path)) == 6
    with pytest.raises(WireFormatError, match="corrupt bytes"):
        _read(path, strict=True)
    # Opening for append keeps the frames around the damage and appends after the last whole one.
    _write(path, _bodies(5)[4:])
    assert _read(path)[0] == [bodies[0], *bodies[2:], _bodies(5)[4]]


def test_svcap1_files_are_still_read_but_not_appended_to(tmp_path):
    path = tmp_path / "old.cap"
    bodies = _bodies(3)
    frames = b"".join(struct.pack("<I", len(b)) + b for b in bodies)
    path.write_bytes(MAGIC_V1 + frames + struct.pack("<I", 999) + b"partial")
    assert _read(path)[0] == bodies and _read(path)[1][0].kind == "torn tail"
    with pytest.warns(UserWarning, match="torn last frame"):
        assert read_capture(path).shape == (6, 3, 4)
    with pytest.raises(CaptureError, match="SVCAP1 capture .* move it aside or choose another capture path"):
        CaptureWriter(path)


def test_paths_that_cannot_hold_a_capture_are_one_line_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(CaptureError, match="exists and is not a capture file; choose another path"):
        CaptureWriter(tmp_path / "notes.txt")
    with pytest.raises(CaptureError, match="cannot open capture file .*: Is a directory; choose another path"):
        CaptureWriter(tmp_path)
    with pytest.raises(CaptureError, match="cannot create the directory of capture file"):
        CaptureWriter(tmp_path / "notes.txt" / "cap.svcap")
    with pytest.raises(WireFormatError, match="not a splitveil capture file"):
        _read(tmp_path / "notes.txt")
    with pytest.raises(WireFormatError, match="no capture file at .*; start the server with --capture"):
        _read(tmp_path / "missing.svcap")


def test_a_second_writer_on_the_same_capture_is_refused(tmp_path):
    first = CaptureWriter(tmp_path / "cap.svcap")
    with pytest.raises(CaptureError, match="being written by another process"):
        CaptureWriter(tmp_path / "cap.svcap")
    first.close()
    CaptureWriter(tmp_path / "cap.svcap").close()  # the lock dies with its writer


def test_rotation_keeps_each_file_under_the_cap_and_readers_take_the_whole_set_in_order(tmp_path):
    base = tmp_path / "cap.svcap"
    bodies = _bodies(9)
    frame = HEADER.size + len(bodies[0])
    cap = len(MAGIC) + 2 * frame  # two frames per file
    _write(base, bodies[:5], max_bytes=cap)
    _write(base, bodies[5:], max_bytes=cap)  # a restarted server continues in the newest file
    files = capture_files(base)
    assert [f.name for f in files] == ["cap.svcap", "cap.1.svcap", "cap.2.svcap", "cap.3.svcap", "cap.4.svcap"]
    assert all(f.stat().st_size <= cap for f in files)
    assert _read(base) == (bodies, [])
    # A frame larger than the cap still gets a file of its own.
    big = encode(torch.ones(64, 3, 4))
    _write(base, [big], max_bytes=cap)
    assert _read(base)[0][-1] == big and len(capture_files(base)) == 6


def test_with_a_file_limit_a_full_capture_fails_until_files_are_archived(tmp_path):
    base = tmp_path / "cap.svcap"
    bodies = _bodies(3)
    writer = CaptureWriter(base, max_bytes=len(MAGIC) + HEADER.size + len(bodies[0]), max_files=2)
    writer.write(bodies[0])
    writer.write(bodies[1])
    with pytest.raises(CaptureError, match="is full: 2 files .* archive the numbered files") as full:
        writer.write(bodies[2])
    assert full.value.cause == "full"
    base.rename(tmp_path / "archived.svcap")
    writer.write(bodies[2])  # room again: the next numbered file
    writer.close()
    assert [f.name for f in capture_files(base)] == ["cap.1.svcap", "cap.2.svcap"]
    assert _read(base)[0] == bodies[1:]


def test_limits_are_checked():
    with pytest.raises(ConfigError, match="max_bytes must be at least 1"):
        CaptureWriter("x.svcap", max_bytes=0)
    with pytest.raises(ConfigError, match="max_files needs max_bytes"):
        CaptureWriter("x.svcap", max_files=3)


# The server. A file limit makes capture fail for real and on demand: once the one allowed file is
# full, every write fails until the operator archives it. (Disk-full and killed-server faults are
# reproduced with real processes in tests/faults/test_capture_faults.py.)


@pytest.fixture
def cloud(bundle):
    return load_half(bundle, "cloud")


def _serving(cloud, tmp_path, mode):
    body = encode(torch.zeros(1, *cloud.feature_shape))
    settings = ServerSettings(
        capture=tmp_path / "cap.svcap",
        capture_errors=mode,
        capture_max_bytes=len(MAGIC) + HEADER.size + len(body),
        capture_max_files=1,
    )
    return TestClient(create_app(cloud, settings)), body


def test_fail_mode_answers_a_counted_json_507_and_is_not_ready_until_capture_works(cloud, tmp_path):
    client, body = _serving(cloud, tmp_path, "fail")
    with client:
        assert client.post("/v1/infer", content=body, headers=HEADERS).status_code == 200
        refused = client.post("/v1/infer", content=body, headers=HEADERS)
        assert refused.status_code == 507 and refused.headers["content-type"] == "application/json"
        assert refused.json()["detail"] == "the server cannot record requests for audit right now (full); retry later"
        assert client.get("/readyz").status_code == 503 and client.get("/readyz").json()["cause"] == "full"
        text = client.get("/metrics").text
        assert 'splitveil_requests_total{status="507"} 1.0' in text
        assert 'splitveil_errors_total{reason="capture"} 1.0' in text
        assert 'splitveil_capture_failures_total{cause="full"} 1.0' in text
        assert "splitveil_capture_failing 1.0" in text
        (tmp_path / "cap.svcap").rename(tmp_path / "archived.svcap")
        assert client.get("/readyz").status_code == 200  # readiness probes the capture: it works again
        assert client.post("/v1/infer", content=body, headers=HEADERS).status_code == 200
        text = client.get("/metrics").text
    assert "splitveil_capture_failing 0.0" in text and "splitveil_capture_frames_total 2.0" in text
    assert _read(tmp_path / "archived.svcap")[0] == [body] and _read(tmp_path / "cap.svcap")[0] == [body]


def test_skip_mode_serves_uncaptured_requests_and_counts_them(cloud, tmp_path):
    client, body = _serving(cloud, tmp_path, "skip")
    with client:
        statuses = [client.post("/v1/infer", content=body, headers=HEADERS).status_code for _ in range(3)]
        assert client.get("/readyz").status_code == 200
        text = client.get("/metrics").text
    assert statuses == [200, 200, 200]
    assert "splitveil_capture_frames_total 1.0" in text and "splitveil_capture_skipped_total 2.0" in text
    assert 'splitveil_capture_failures_total{cause="full"} 2.0' in text
    assert _read(tmp_path / "cap.svcap")[0] == [body]
