"""Decode-and-validate benchmark: what it costs per message to turn an inbound
CALL's envelope bytes into a validated payload, ours against the ``ocpp``
package's way, on one core and in one process.

    .venv/bin/python -m bench.decode             # best of 7 rounds of ~0.1 s each
    .venv/bin/python -m bench.decode --quick     # best of 3 rounds of ~0.02 s each
    .venv/bin/python -m bench.decode --repeat 15 # more rounds

ours  ``envelope.decode(raw, 65536)`` (msgspec: the envelope, the OCPP-J frame
      and their cross-checks, the payload left raw) and then the action's
      ``msgspec.json.Decoder(Struct).decode(frame.payload)``, decoders built
      once, as the processor does.
ocpp  ``json.loads(raw)`` (so both sides start from the same envelope bytes),
      ``ocpp.messages.unpack(frame)`` and the schema validation that
      ``ocpp.messages.validate_payload(call, "1.6")`` runs, as the package's
      ChargePoint does for each message it receives, with its schema cache
      warm. ``validate_payload`` is a coroutine that by default hands the work
      to a thread pool; the timed loop calls the function it hands over
      (``_validate_payload``) directly, and the hop is measured on its own.

Each sample payload is first checked to be accepted by both sides, and a
copy with an unknown field to be refused by both, or the run fails.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import platform
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Final

import msgspec
import ocpp.messages as ocpp_messages  # type: ignore[import-untyped]
from ocpp.exceptions import OCPPError  # type: ignore[import-untyped]

from processor import envelope
from processor.envelope import Call
from processor.v16.messages import REQUESTS

MAX_ENVELOPE_BYTES: Final = 65536
OCPP_VERSION: Final = "1.6"
TARGET_RATIO: Final = 20.0
MIX_SEED: Final = 1606

# A frozen clock, so every run encodes the same bytes.
T0: Final = "2024-05-14T08:21:07.000Z"
T1: Final = "2024-05-14T08:36:07.000Z"
T2: Final = "2024-05-14T09:47:52.000Z"
ID_TAG: Final = "04A2B5C2D26C80"
TRANSACTION_ID: Final = 18231


def _sampled(
    value: str, measurand: str, unit: str, phase: str | None = None, location: str = "Outlet"
) -> dict[str, str]:
    out = {
        "value": value,
        "context": "Sample.Periodic",
        "format": "Raw",
        "measurand": measurand,
        "location": location,
        "unit": unit,
    }
    if phase is not None:
        out["phase"] = phase
    return out


def _fake_csr() -> str:
    """A PEM-shaped certificate signing request of realistic size (not a real one)."""
    body = random.Random(MIX_SEED).randbytes(690)
    b64 = base64.b64encode(body).decode()
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return "\n".join(
        ["-----BEGIN CERTIFICATE REQUEST-----", *lines, "-----END CERTIFICATE REQUEST-----"]
    )


# One sample payload per charger-initiated operation, as a charger sends it.
SAMPLES: Final[dict[str, dict[str, Any]]] = {
    "BootNotification": {
        "chargePointVendor": "ACME Charging",
        "chargePointModel": "AC22-2S-DE",
        "chargePointSerialNumber": "ACM2231004512",
        "chargeBoxSerialNumber": "ACM2231004512",
        "firmwareVersion": "6.1.2-4214",
        "iccid": "8931080019062817653",
        "imsi": "204080912345678",
        "meterType": "EM340-DIN.AV9.3.X.S1",
        "meterSerialNumber": "KY3240500012",
    },
    "Heartbeat": {},
    "Authorize": {"idTag": ID_TAG},
    "StartTransaction": {"connectorId": 1, "idTag": ID_TAG, "meterStart": 1250375, "timestamp": T0},
    "StopTransaction": {
        "transactionId": TRANSACTION_ID,
        "idTag": ID_TAG,
        "meterStop": 1268841,
        "timestamp": T2,
        "reason": "EVDisconnected",
        "transactionData": [
            {
                "timestamp": T0,
                "sampledValue": [
                    {
                        "value": "1250375",
                        "context": "Transaction.Begin",
                        "measurand": "Energy.Active.Import.Register",
                        "location": "Outlet",
                        "unit": "Wh",
                    },
                    {
                        "value": "23",
                        "context": "Transaction.Begin",
                        "measurand": "SoC",
                        "location": "EV",
                        "unit": "Percent",
                    },
                ],
            },
            {
                "timestamp": T2,
                "sampledValue": [
                    {
                        "value": "1268841",
                        "context": "Transaction.End",
                        "measurand": "Energy.Active.Import.Register",
                        "location": "Outlet",
                        "unit": "Wh",
                    },
                    {
                        "value": "80",
                        "context": "Transaction.End",
                        "measurand": "SoC",
                        "location": "EV",
                        "unit": "Percent",
                    },
                ],
            },
        ],
    },
    "StatusNotification": {
        "connectorId": 1,
        "errorCode": "NoError",
        "status": "Charging",
        "timestamp": T0,
    },
    "MeterValues": {
        "connectorId": 1,
        "transactionId": TRANSACTION_ID,
        "meterValue": [
            {
                "timestamp": T1,
                "sampledValue": [
                    _sampled("1254021", "Energy.Active.Import.Register", "Wh"),
                    _sampled("10974", "Power.Active.Import", "W"),
                    _sampled("15.9", "Current.Import", "A", "L1"),
                    _sampled("15.8", "Current.Import", "A", "L2"),
                    _sampled("16.0", "Current.Import", "A", "L3"),
                    _sampled("230.4", "Voltage", "V", "L1-N"),
                    _sampled("231.1", "Voltage", "V", "L2-N"),
                    _sampled("229.8", "Voltage", "V", "L3-N"),
                    _sampled("16", "Current.Offered", "A"),
                    _sampled("41", "SoC", "Percent", location="EV"),
                ],
            }
        ],
    },
    "DataTransfer": {
        "vendorId": "com.acme.charging",
        "messageId": "ConnectorDiagnostics",
        "data": json.dumps(
            {
                "connectorId": 1,
                "plugTemperatureC": 41.5,
                "relayCycles": 18233,
                "rcdTrips": 0,
                "cpStateHistory": ["A", "B", "C", "C", "B"],
                "lastFault": None,
            },
            separators=(",", ":"),
        ),
    },
    "SecurityEventNotification": {
        "type": "FirmwareUpdated",
        "timestamp": T0,
        "techInfo": "Firmware 6.1.2-4214 installed from a signed image",
    },
    "FirmwareStatusNotification": {"status": "Installed"},
    "SignCertificate": {"csr": _fake_csr()},
}

# How often each operation turns up in a fleet's steady traffic, out of 200:
# chargers mostly send meter readings, heartbeats and status changes.
MIX_WEIGHTS: Final[dict[str, int]] = {
    "MeterValues": 90,
    "Heartbeat": 40,
    "StatusNotification": 30,
    "Authorize": 10,
    "StartTransaction": 8,
    "StopTransaction": 8,
    "DataTransfer": 8,
    "BootNotification": 2,
    "SecurityEventNotification": 2,
    "FirmwareStatusNotification": 1,
    "SignCertificate": 1,
}


class BenchFailure(Exception):
    """Raised when a side refuses a valid sample or accepts an invalid one."""


@dataclass(frozen=True, slots=True)
class Message:
    """One inbound CALL in both forms: the envelope bytes the processor reads
    and the OCPP-J frame text a charger sends over its websocket."""

    action: str
    raw: bytes
    frame: str


def make_message(action: str, payload: dict[str, Any], rng: random.Random) -> Message:
    unique_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    frame = [2, unique_id, action, payload]
    raw = msgspec.json.encode(
        {
            "charge_point_id": f"CP-{rng.randrange(10_000):05d}",
            "message_type": 2,
            "message_id": unique_id,
            "action": action,
            "payload": frame,
            "timestamp": T1,
        }
    )
    return Message(action, raw, json.dumps(frame, separators=(",", ":")))


# Built once, as the processor's routes are.
DECODERS: Final[dict[str, msgspec.json.Decoder[Any]]] = {
    action: msgspec.json.Decoder(struct) for action, struct in REQUESTS.items()
}


def ours_decode(raw: bytes) -> object:
    """The processor's inbound path for one CALL, up to the typed request."""
    frame = envelope.decode(raw, MAX_ENVELOPE_BYTES).payload
    if not isinstance(frame, Call):
        raise BenchFailure(f"not a CALL: {frame!r}")
    return DECODERS[frame.action].decode(frame.payload)


def ocpp_decode(msg: Message) -> Any:
    """The ``ocpp`` package's receive path for one CALL, after the envelope parse."""
    json.loads(msg.raw)
    call = ocpp_messages.unpack(msg.frame)
    ocpp_messages._validate_payload(call, OCPP_VERSION)
    return call


# The timed loops: each side's path inlined, with the lookups hoisted, so the
# loop itself costs the same tens of nanoseconds on both sides.


def loop_ours(messages: Sequence[Message], reps: int) -> None:
    raws = [m.raw for m in messages]
    decode, decoders, limit = envelope.decode, DECODERS, MAX_ENVELOPE_BYTES
    for _ in range(reps):
        for raw in raws:
            frame = decode(raw, limit).payload
            if not isinstance(frame, Call):
                raise BenchFailure("not a CALL")
            decoders[frame.action].decode(frame.payload)


def loop_ocpp(messages: Sequence[Message], reps: int) -> None:
    pairs = [(m.raw, m.frame) for m in messages]
    loads, unpack, validate = json.loads, ocpp_messages.unpack, ocpp_messages._validate_payload
    for _ in range(reps):
        for raw, frame in pairs:
            loads(raw)
            validate(unpack(frame), OCPP_VERSION)


def loop_ocpp_frame(messages: Sequence[Message], reps: int) -> None:
    frames = [m.frame for m in messages]
    unpack, validate = ocpp_messages.unpack, ocpp_messages._validate_payload
    for _ in range(reps):
        for frame in frames:
            validate(unpack(frame), OCPP_VERSION)


Loop = Callable[[Sequence[Message], int], None]
SIDES: Final[dict[str, Loop]] = {
    "ours": loop_ours,
    "ocpp": loop_ocpp,
    "ocpp_frame": loop_ocpp_frame,
}


def verify(messages: Sequence[Message]) -> None:
    """Both sides must accept every sample, and refuse it with an unknown field
    added (proof that each really validates). Warms ocpp's schema cache."""
    for msg in messages:
        try:
            ours_decode(msg.raw)
        except (msgspec.ValidationError, envelope.Rejected, BenchFailure) as exc:
            raise BenchFailure(f"ours refused the {msg.action} sample: {exc}") from exc
        try:
            call = ocpp_decode(msg)
            asyncio.run(ocpp_messages.validate_payload(call, OCPP_VERSION))
        except Exception as exc:
            raise BenchFailure(f"ocpp refused the {msg.action} sample: {exc!r}") from exc
        if call.action != msg.action or call.payload != SAMPLES[msg.action]:
            raise BenchFailure(f"ocpp unpacked the {msg.action} sample wrongly: {call!r}")
        if f"{msg.action}_{OCPP_VERSION}" not in ocpp_messages._validators:
            raise BenchFailure(f"ocpp's schema cache has no validator for {msg.action}")

        bad = make_message(msg.action, {**SAMPLES[msg.action], "bogusField": 1}, random.Random(0))
        try:
            ours_decode(bad.raw)
        except msgspec.ValidationError:
            pass
        else:
            raise BenchFailure(f"ours accepted a {msg.action} payload with an unknown field")
        try:
            ocpp_decode(bad)
        except OCPPError:
            pass
        else:
            raise BenchFailure(f"ocpp accepted a {msg.action} payload with an unknown field")


def calibrate(loop: Loop, messages: Sequence[Message], round_s: float) -> int:
    """Repetitions of ``messages`` that make one round last about ``round_s``."""
    reps = 1
    while True:
        started = time.perf_counter_ns()
        loop(messages, reps)
        elapsed = time.perf_counter_ns() - started
        if elapsed >= 20_000_000 or elapsed >= round_s * 1e9:
            return max(1, round(reps * round_s * 1e9 / elapsed))
        reps *= 4


@dataclass
class Timing:
    """Nanoseconds per message of each round."""

    rounds: list[float]

    @property
    def best_us(self) -> float:
        return min(self.rounds) / 1000

    @property
    def spread(self) -> float:
        """Median round over the best one: 1.00 when the rounds agree."""
        return statistics.median(self.rounds) / min(self.rounds)


def measure(messages: Sequence[Message], rounds: int, round_s: float) -> dict[str, Timing]:
    """Each side's cost per message of ``messages``, best of ``rounds``; the
    sides' rounds interleave, so a noisy moment does not fall on one side only."""
    reps = {side: calibrate(loop, messages, round_s) for side, loop in SIDES.items()}
    out = {side: Timing([]) for side in SIDES}
    for _ in range(rounds):
        for side, loop in SIDES.items():
            gc.collect()
            started = time.perf_counter_ns()
            loop(messages, reps[side])
            elapsed = time.perf_counter_ns() - started
            out[side].rounds.append(elapsed / (reps[side] * len(messages)))
    return out


def measure_hop(messages: Sequence[Message], rounds: int, round_s: float) -> float:
    """µs per message of the ocpp path with ``await validate_payload`` as its
    ChargePoint calls it (by default through the event loop's thread pool)."""

    async def run(reps: int) -> int:
        loads, unpack, validate = json.loads, ocpp_messages.unpack, ocpp_messages.validate_payload
        started = time.perf_counter_ns()
        for _ in range(reps):
            for m in messages:
                loads(m.raw)
                await validate(unpack(m.frame), OCPP_VERSION)
        return time.perf_counter_ns() - started

    async def main() -> float:
        await run(1)  # starts the pool's threads
        probe = await run(1)
        reps = max(1, round(round_s * 1e9 / probe))
        return min([await run(reps) for _ in range(rounds)]) / (reps * len(messages))

    return asyncio.run(main()) / 1000


def mix_messages() -> list[Message]:
    rng = random.Random(MIX_SEED)
    out = [
        make_message(action, SAMPLES[action], rng)
        for action, weight in MIX_WEIGHTS.items()
        for _ in range(weight)
    ]
    rng.shuffle(out)
    return out


def _verdict(ratio: float) -> str:
    return "met" if ratio >= TARGET_RATIO else "MISSED"


def render(
    rows: Sequence[tuple[str, str, int, dict[str, Timing]]],
) -> str:
    header = [
        "operation",
        "mix",
        "bytes",
        "ours µs",
        "ocpp µs",
        "ratio",
        f">={TARGET_RATIO:g}x",
        "ocpp frame-only µs",
        "ratio",
        "spread",
    ]
    table = [header]
    for name, weight, size, t in rows:
        ours, ocpp, frame = t["ours"].best_us, t["ocpp"].best_us, t["ocpp_frame"].best_us
        table.append(
            [
                name,
                weight,
                f"{size:,}",
                f"{ours:.2f}",
                f"{ocpp:.2f}",
                f"{ocpp / ours:.1f}x",
                _verdict(ocpp / ours),
                f"{frame:.2f}",
                f"{frame / ours:.1f}x",
                f"{max(x.spread for x in t.values()):.2f}",
            ]
        )
    widths = [max(len(row[c]) for row in table) for c in range(len(header))]
    lines = []
    for n, row in enumerate(table):
        cells = [row[0].ljust(widths[0])] + [
            v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
        if n in (0, len(table) - 2):
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def describe(rounds: int, round_s: float) -> str:
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("msgspec", "ocpp", "jsonschema"))
    return "\n".join(
        [
            f"decode-and-validate cost per inbound CALL, one core: Python "
            f"{platform.python_version()}, {versions}; best of {rounds} rounds of "
            f"~{round_s:g} s per figure, GC on",
            "  ours:  envelope.decode(envelope bytes, 65536) -- msgspec decodes the envelope",
            "         and its OCPP-J frame, cross-checks them, leaves the payload raw -- then",
            "         msgspec.json.Decoder(<Action> Struct).decode(frame.payload): a typed",
            "         Struct, schema rules enforced, RFC 3339 date-times parsed to datetimes",
            "  ocpp:  json.loads(envelope bytes) + ocpp.messages.unpack(frame str) + the",
            '         validation ocpp.messages.validate_payload(call, "1.6") runs',
            "         (_validate_payload: the cached Draft4Validator, no format checker, so",
            "         date-times go unchecked); gives a dict. The frame is parsed twice: in",
            "         the envelope, then by unpack",
            "  ocpp frame-only: unpack + validation alone, no envelope (a charger's frame",
            "         read straight off its websocket): the least the ocpp way can cost",
            "  bytes: the envelope's size; mix: the operation's share of the mix, out of 200;",
            "  spread: the worst side's median round over its best (1.00 = steady)",
        ]
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(prog="python -m bench.decode", description=doc.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="3 rounds of ~0.02 s per figure")
    p.add_argument("--repeat", type=int, default=None, metavar="N", help="rounds per figure")
    args = p.parse_args(argv)
    args.round_s = 0.02 if args.quick else 0.1
    if args.repeat is None:
        args.repeat = 3 if args.quick else 7
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    rng = random.Random(MIX_SEED)
    singles = {action: make_message(action, SAMPLES[action], rng) for action in SAMPLES}
    mix = mix_messages()
    try:
        verify(list(singles.values()))
    except BenchFailure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        sys.exit(1)
    print(describe(args.repeat, args.round_s))
    print(
        f"verified: both sides accept all {len(singles)} samples and refuse each with an "
        "unknown field added",
        flush=True,
    )
    print()

    rows = []
    for action, msg in sorted(singles.items(), key=lambda kv: -MIX_WEIGHTS[kv[0]]):
        timing = measure([msg], args.repeat, args.round_s)
        rows.append((action, str(MIX_WEIGHTS[action]), len(msg.raw), timing))
    mean_size = round(sum(len(m.raw) for m in mix) / len(mix))
    mix_timing = measure(mix, args.repeat, args.round_s)
    rows.append((f"weighted mix ({len(mix)} msgs)", str(len(mix)), mean_size, mix_timing))
    hop_us = measure_hop(mix, args.repeat, args.round_s)
    print(render(rows))
    print()

    ours = mix_timing["ours"].best_us
    ocpp = mix_timing["ocpp"].best_us
    frame = mix_timing["ocpp_frame"].best_us
    worst = min(r[3]["ocpp"].best_us / r[3]["ours"].best_us for r in rows)
    print("msgs/s per core implied (decode and validation alone, mix):")
    print(f"  ours:               {1e6 / ours:>11,.0f}")
    print(f"  ocpp:               {1e6 / ocpp:>11,.0f}")
    print(f"  ocpp frame-only:    {1e6 / frame:>11,.0f}")
    print(
        f"  ocpp, hop included: {1e6 / hop_us:>11,.0f}  "
        f"({hop_us:.2f} µs/msg, {hop_us / ours:.0f}x ours)"
    )
    print(
        "    (validate_payload awaited as ChargePoint does; with "
        f"ASYNC_VALIDATION={ocpp_messages.ASYNC_VALIDATION} it runs in the loop's thread pool)"
    )
    print()
    print(f"target: ours >= {TARGET_RATIO:g}x faster than ocpp + jsonschema")
    print(f"  mix: {ocpp / ours:.1f}x -> {_verdict(ocpp / ours)}")
    print(f"  slowest operation: {worst:.1f}x -> {_verdict(worst)}")
    print(f"  mix vs ocpp frame-only: {frame / ours:.1f}x -> {_verdict(frame / ours)}")


if __name__ == "__main__":
    main()
