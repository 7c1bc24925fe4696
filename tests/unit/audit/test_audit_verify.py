"""``verify`` over JSONL trails: an untouched trail verifies; each kind of tampering with a copy is
caught and the first affected record is named (chain, seq, id, file and line). Also how the writer
and the chainer place checkpoints (interval, restart, final)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import orjson
import pytest
from tests.audit_trail import SIGNER, closing, record, sealed_batches

from portcullis.audit.chain import Chainer, ChainHead, genesis_hash, read_heads
from portcullis.audit.signing import Ed25519Signer, HmacSigner
from portcullis.audit.verify import ProblemKind, VerifyReport, rotated_files, verify_files
from portcullis.audit.writer import AuditWriter
from portcullis.testing import CapturingAuditSink, ManualClock


def trail(tmp_path: Path, count: int = 50, *, every: int = 20, name: str = "audit.jsonl") -> Path:
    clock = ManualClock()
    chainer = Chainer(clock=clock, signer=SIGNER, every=every, interval_s=3600, instance="i1")
    path = tmp_path / name
    lines = [line for b in [*sealed_batches(chainer, clock, count), closing(chainer)] for line in b.lines]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"\n".join(lines) + b"\n")


def index_of_seq(lines: list[bytes], seq: int) -> int:
    return next(i for i, line in enumerate(lines) if b'"kind"' not in line and orjson.loads(line)["seq"] == seq)


def only_problem(report: VerifyReport) -> tuple[ProblemKind, int, str | None]:
    (problem,) = report.problems
    return problem.kind, problem.seq, problem.record_id


def test_an_untouched_trail_verifies_with_its_checkpoints_signed(tmp_path: Path) -> None:
    report = verify_files([trail(tmp_path)], signer=SIGNER)
    assert report.ok
    (chain,) = report.chains
    assert (chain.chain, chain.first_seq, chain.last_seq, chain.records) == ("i1/request", 1, 50, 50)
    assert chain.anchored and chain.final and chain.attested_seq == 50
    assert chain.checkpoints == 4  # genesis, seq 20, seq 40, final


def test_a_changed_field_names_that_record(tmp_path: Path) -> None:
    path = trail(tmp_path)
    lines = lines_of(path)
    i = index_of_seq(lines, 17)
    lines[i] = lines[i].replace(b'"status":200', b'"status":201', 1)
    write_lines(path, lines)
    assert only_problem(verify_files([path], signer=SIGNER)) == (
        ProblemKind.CHANGED, 17, orjson.loads(lines[i])["id"])


def test_a_changed_record_with_a_recomputed_hash_is_named_by_its_successors_link(tmp_path: Path) -> None:
    path = trail(tmp_path)
    lines = lines_of(path)
    i = index_of_seq(lines, 17)
    row = orjson.loads(lines[i])
    row["status"], claimed = 201, row.pop("hash")
    body = orjson.dumps(row)
    lines[i] = body[:-1] + b',"hash":"' + hashlib.sha256(body).hexdigest().encode() + b'"}'
    assert claimed not in lines[i].decode()
    write_lines(path, lines)
    assert only_problem(verify_files([path], signer=SIGNER)) == (ProblemKind.CHANGED, 17, row["id"])


def test_a_deleted_line_names_the_missing_seq(tmp_path: Path) -> None:
    path = trail(tmp_path)
    lines = lines_of(path)
    del lines[index_of_seq(lines, 33)]
    write_lines(path, lines)
    report = verify_files([path], signer=SIGNER)
    assert only_problem(report)[:2] == (ProblemKind.MISSING, 33)
    assert report.problems[0].where.endswith(f":{index_of_seq(lines, 34) + 1}")


def test_two_swapped_lines_name_the_record_out_of_place(tmp_path: Path) -> None:
    path = trail(tmp_path)
    lines = lines_of(path)
    a, b = index_of_seq(lines, 8), index_of_seq(lines, 9)
    lines[a], lines[b] = lines[b], lines[a]
    write_lines(path, lines)
    assert only_problem(verify_files([path], signer=SIGNER)) == (
        ProblemKind.REORDERED, 9, orjson.loads(lines[a])["id"])


def test_a_truncated_tail_is_caught_against_the_expected_head(tmp_path: Path) -> None:
    path = trail(tmp_path)
    lines = lines_of(path)
    write_lines(path, lines[:index_of_seq(lines, 45)])  # records 45-50 and the final checkpoint gone
    head = ChainHead("i1/request", 50, orjson.loads(lines[index_of_seq(lines, 50)])["hash"])
    assert verify_files([path], signer=SIGNER).ok  # what no checkpoint attests cannot be missed without a head
    assert only_problem(verify_files([path], signer=SIGNER, heads=[head]))[:2] == (ProblemKind.TRUNCATED, 45)


def test_records_removed_before_a_checkpoint_are_caught_by_it(tmp_path: Path) -> None:
    path = trail(tmp_path)
    lines = lines_of(path)
    cut = index_of_seq(lines, 38)
    write_lines(path, [*lines[:cut], *lines[index_of_seq(lines, 40) + 1:]])  # 38-40 gone, checkpoint at 40 kept
    assert only_problem(verify_files([path], signer=SIGNER))[:2] == (ProblemKind.MISSING, 38)


def test_an_edited_checkpoint_is_named_as_forged(tmp_path: Path) -> None:
    path = trail(tmp_path)
    lines = lines_of(path)
    i = next(i for i, line in enumerate(lines) if b'"kind":"checkpoint"' in line and b'"seq":20,' in line)
    lines[i] = lines[i].replace(b'"final":false', b'"final":true')
    write_lines(path, lines)
    report = verify_files([path], signer=SIGNER)
    assert only_problem(report) == (ProblemKind.CHECKPOINT_FORGED, 20, "i1/request:20")


def test_checkpoints_signed_with_another_key_are_forged_for_this_one(tmp_path: Path) -> None:
    report = verify_files([trail(tmp_path)], signer=HmacSigner(b"x" * 32))
    assert only_problem(report) == (ProblemKind.CHECKPOINT_FORGED, 0, "i1/request:0")


def test_an_unsigned_checkpoint_is_refused_when_a_key_is_given(tmp_path: Path) -> None:
    clock = ManualClock()
    chainer = Chainer(clock=clock, every=20, instance="i1")
    path = tmp_path / "audit.jsonl"
    write_lines(path, [line for b in sealed_batches(chainer, clock, 5) for line in b.lines])
    assert verify_files([path]).ok
    assert only_problem(verify_files([path], signer=SIGNER)) == (
        ProblemKind.CHECKPOINT_UNSIGNED, 0, "i1/request:0")


def test_a_checkpoint_whose_head_was_changed_without_a_key_is_a_mismatch(tmp_path: Path) -> None:
    path = trail(tmp_path)
    lines = lines_of(path)
    i = next(i for i, line in enumerate(lines) if b'"kind":"checkpoint"' in line and b'"seq":40,' in line)
    row = orjson.loads(lines[i])
    lines[i] = orjson.dumps({**row, "hash": "0" * 64})
    write_lines(path, lines)
    assert only_problem(verify_files([path]))[:2] == (ProblemKind.CHECKPOINT_MISMATCH, 40)


def test_an_exact_replay_of_lines_is_counted_not_reported(tmp_path: Path) -> None:
    path = trail(tmp_path)
    lines = lines_of(path)
    i = index_of_seq(lines, 12)
    write_lines(path, [*lines[:i + 3], *lines[i:]])  # a batch written again after a failed write
    report = verify_files([path], signer=SIGNER)
    assert report.ok and report.duplicates == 3


def test_rotated_files_verify_oldest_first_and_a_rotated_away_start_is_reported(tmp_path: Path) -> None:
    path = trail(tmp_path)
    lines = lines_of(path)
    cut1, cut2 = index_of_seq(lines, 15), index_of_seq(lines, 30)
    write_lines(tmp_path / "audit.jsonl.2", lines[:cut1])
    write_lines(tmp_path / "audit.jsonl.1", lines[cut1:cut2])
    write_lines(path, lines[cut2:])
    files = rotated_files(path)
    assert [f.name for f in files] == ["audit.jsonl.2", "audit.jsonl.1", "audit.jsonl"]
    assert verify_files(files, signer=SIGNER).ok
    report = verify_files(files[1:], signer=SIGNER)  # the oldest file rotated away
    assert report.ok
    (chain,) = report.chains
    assert (chain.first_seq, chain.anchored) == (15, False)


def test_each_record_class_has_its_own_chain(tmp_path: Path) -> None:
    clock = ManualClock()
    chainer = Chainer(clock=clock, instance="i1")
    sealed = chainer.seal([record(clock, 1).to_dict(), record(clock, 2, record_class="security").to_dict(),
                           record(clock, 3).to_dict()])
    records = [r for r in sealed.rows if "kind" not in r]
    assert [(r["chain"], r["seq"]) for r in records] == [("i1/request", 1), ("i1/security", 1), ("i1/request", 2)]
    assert records[0]["prev"] == genesis_hash("i1/request")


def test_a_restart_links_its_genesis_to_the_previous_head_and_catches_that_runs_truncation(tmp_path: Path) -> None:
    clock, heads = ManualClock(), tmp_path / "spill.jsonl.chain"
    first = Chainer(clock=clock, signer=SIGNER, every=10, head_file=heads, instance="run1")
    run1 = [line for b in [*sealed_batches(first, clock, 25), closing(first)] for line in b.lines]
    second = Chainer(clock=clock, signer=SIGNER, every=10, head_file=heads, instance="run2")
    run2 = [line for b in sealed_batches(second, clock, 5) for line in b.lines]
    genesis = orjson.loads(run2[0])
    assert genesis["previous"] == {"chain": "run1/request", "seq": 25, "hash": orjson.loads(run1[-2])["hash"]}
    assert read_heads(heads)["request"].chain == "run1/request"  # run 2 has written no checkpoint yet
    path = tmp_path / "audit.jsonl"
    write_lines(path, [*run1, *run2])
    assert verify_files([path], signer=SIGNER).ok
    write_lines(path, [*run1[:index_of_seq(run1, 23)], *run2])  # run 1's tail cut, final checkpoint too
    assert only_problem(verify_files([path], signer=SIGNER))[:2] == (ProblemKind.TRUNCATED, 23)


def test_ed25519_checkpoints_verify_with_the_public_key_alone(tmp_path: Path) -> None:
    signer = Ed25519Signer.from_secret(base64.b64encode(b"s" * 32).decode())
    clock = ManualClock()
    chainer = Chainer(clock=clock, signer=signer, instance="i1")
    path = tmp_path / "audit.jsonl"
    write_lines(path, [line for b in [*sealed_batches(chainer, clock, 5), closing(chainer)] for line in b.lines])
    verifier = Ed25519Signer.verifier_only(signer.public_pem())
    assert verify_files([path], signer=verifier).ok
    with pytest.raises(ValueError, match="only verify"):
        verifier.sign(b"x")


async def test_the_writer_checkpoints_an_idle_chain_once_its_interval_passes(tmp_path: Path) -> None:
    clock, sink = ManualClock(), CapturingAuditSink()
    writer = AuditWriter([sink], spill_path=tmp_path / "spill.jsonl", clock=clock,
                         chainer=Chainer(clock=clock, signer=SIGNER, every=1000, interval_s=60, instance="i1"))
    await writer.start()
    for n in range(3):
        writer.submit(record(clock, n))
    await writer.flush()
    assert [r["seq"] for r in sink.rows if r.get("kind") == "checkpoint"] == [0]  # genesis only
    clock.advance(61)
    await writer.flush()  # no new record, but the interval has passed
    assert [r["seq"] for r in sink.rows if r.get("kind") == "checkpoint"] == [0, 3]
    await writer.aclose()
    finals = [r for r in sink.rows if r.get("kind") == "checkpoint" and r["final"]]
    assert [(r["seq"], r["final"]) for r in finals] == [(3, True)]
