"""Every Redis key, stream and group name the system uses, in one place.

The first three are fixed by the ws-server's wire contract (see CONTRACT.md);
the rest are ours. All keys share the ``ocpp:`` prefix so an operator can
tell them apart from anything else in the same database.
"""

from __future__ import annotations

import msgspec

# Fixed by the ws-server contract.
REQUESTS = "ocpp:requests"
RESPONSES_PREFIX = "ocpp:responses:"

# The stream the adapter fills and the processors' consumer group reads.
INBOUND = "ocpp:inbound"
GROUP = "processors"
# Field of an inbound stream entry holding the raw envelope bytes.
ENVELOPE_FIELD = "e"

# Poison messages and undecodable input, with their reason.
DEAD = "ocpp:dead"

# History for PostgreSQL (processor/history.py), and the archivers' group.
HISTORY = "ocpp:history"
ARCHIVERS = "archivers"

# transactionId allocation: a counter, and one key per StartTransaction
# content so retries (same or new message id) map to the same id.
TXN_SEQ = "ocpp:txn:seq"
TXN_PREFIX = "ocpp:txn:"
TXN_IDEMPOTENCY_PREFIX = "ocpp:txn:idem:"
# StopTransactions for transactions we never saw, for an operator to look at.
ANOMALIES = "ocpp:anomalies"

# Commands (CALLs we send), their per-charger queue and in-flight slot, and
# their deadlines. Also spelled out in processor/lua/pump.lua and commands.lua.
COMMAND_PREFIX = "ocpp:cmd:"
COMMAND_DEADLINES = "ocpp:cmd:deadlines"

CHARGE_POINT_PREFIX = "ocpp:cp:"
# Every charger that ever booted, and the allow-list for the known-only policy.
CHARGE_POINTS = "ocpp:chargers"
KNOWN_CHARGE_POINTS = "ocpp:chargers:known"
# Transactions not yet stopped.
ACTIVE_TRANSACTIONS = "ocpp:txn:active"
# The authorization list: one hash per idTag (status, expiry_date, parent_id_tag).
ID_TAG_PREFIX = "ocpp:idtag:"
# The running replicas of every long-running service and where their health
# probes answer: field <service>@<host>:<pid> (processor/instances.py).
INSTANCES = "ocpp:instances"


FRAMES_PREFIX = "ocpp:frames:"
# Chargers whose frames are being recorded (processor/frames.py): member the
# charger, score until when (epoch ms).
FRAMES_WATCHED = "ocpp:frames_watched"
# A charger's frames kept, at most (processor/lua/pump.lua trims to the same).
FRAMES_KEPT = 50


def frames(charge_point_id: str) -> str:
    """A charger's last OCPP frames, both ways, newest first (processor/frames.py)."""
    return f"{FRAMES_PREFIX}{charge_point_id}"


def responses(charge_point_id: str) -> str:
    """The list the ws-server pops to write frames to ``charge_point_id``."""
    return RESPONSES_PREFIX + charge_point_id


def transaction(transaction_id: int) -> str:
    return f"{TXN_PREFIX}{transaction_id}"


def transaction_idempotency(
    charge_point_id: str, connector_id: int, id_tag: str, meter_start: int, timestamp: str
) -> str:
    # A JSON array rather than a hash: unambiguous whatever the ids contain,
    # and an operator can still find a retry by eye.
    parts = (charge_point_id, connector_id, id_tag, meter_start, timestamp)
    return TXN_IDEMPOTENCY_PREFIX + msgspec.json.encode(parts).decode()


def charge_point(charge_point_id: str) -> str:
    return CHARGE_POINT_PREFIX + charge_point_id


def connector(charge_point_id: str, connector_id: int) -> str:
    """Status and active transaction of a connector; 0 is the charger itself."""
    return f"{CHARGE_POINT_PREFIX}{charge_point_id}:connector:{connector_id}"


def connectors(charge_point_id: str) -> str:
    """The set of connector ids a charger has reported."""
    return f"{CHARGE_POINT_PREFIX}{charge_point_id}:connectors"


def evse_connector(charge_point_id: str, evse_id: int, connector_id: int) -> str:
    """Status of one connector of an EVSE (OCPP 2.0.1 numbers connectors
    within their EVSE; EVSE 0 is the charging station itself)."""
    return f"{CHARGE_POINT_PREFIX}{charge_point_id}:evse:{evse_id}:connector:{connector_id}"


def evse_connectors(charge_point_id: str) -> str:
    """The set of ``<evse id>/<connector id>`` a 2.0.1 charger has reported."""
    return f"{CHARGE_POINT_PREFIX}{charge_point_id}:evse_connectors"


def transaction_v201(charge_point_id: str, transaction_id: str) -> str:
    """An OCPP 2.0.1 transaction, named by its station and the station's id."""
    return f"{CHARGE_POINT_PREFIX}{charge_point_id}:txn:{transaction_id}"


def meter_latest(charge_point_id: str, connector_id: int) -> str:
    """A connector's latest sample per measurand: field
    ``<measurand>[:phase][@location]``, value ``"<stored timestamp> <unit> <value>"``."""
    return f"{connector(charge_point_id, connector_id)}:latest"


def id_tag(tag: str) -> str:
    return ID_TAG_PREFIX + tag


def id_tag_active(tag: str) -> str:
    """The transaction an idTag is charging in, while it does."""
    return f"{ID_TAG_PREFIX}{tag}:active"


def command(command_id: str) -> str:
    """A command's record; its id is the OCPP message id of its CALL."""
    return COMMAND_PREFIX + command_id


def command_done(command_id: str) -> str:
    """Pushed to when the command has an outcome, for waiters to BLPOP."""
    return f"{COMMAND_PREFIX}{command_id}:done"


def command_queue(charge_point_id: str) -> str:
    return f"{COMMAND_PREFIX}queue:{charge_point_id}"


def command_slot(charge_point_id: str) -> str:
    """The command in flight to a charger: OCPP-J allows one at a time."""
    return f"{COMMAND_PREFIX}inflight:{charge_point_id}"


def variables(charge_point_id: str) -> str:
    """An OCPP 2.0.1 station's device model, current values: field a variable
    attribute (``processor/v201/device_model.py``), value its value."""
    return f"{CHARGE_POINT_PREFIX}{charge_point_id}:variables"


def variable_times(charge_point_id: str) -> str:
    """The same fields: when each value was true (the report's generatedAt,
    the command's answer), so that an older word never overwrites a newer."""
    return f"{CHARGE_POINT_PREFIX}{charge_point_id}:variable_times"


def variable_meta(charge_point_id: str) -> str:
    """The same fields: each attribute's mutability and its variable's
    characteristics, as NotifyReport told them (JSON)."""
    return f"{CHARGE_POINT_PREFIX}{charge_point_id}:variable_meta"


def report(charge_point_id: str, request_id: int) -> str:
    """An OCPP 2.0.1 report (GetBaseReport, GetReport): asked, then filled
    by NotifyReport parts (``seqNo``, ``tbc``)."""
    return f"{CHARGE_POINT_PREFIX}{charge_point_id}:report:{request_id}"


def configuration(charge_point_id: str) -> str:
    """The charger's configuration as GetConfiguration reported it."""
    return f"{CHARGE_POINT_PREFIX}{charge_point_id}:config"
