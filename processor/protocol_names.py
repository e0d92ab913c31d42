"""The OCPP versions' names, as chargers offer them at the WebSocket
handshake and envelopes carry them in ``protocol``. Apart from
``processor/protocols.py`` so handlers can name their version without
importing every version's routes."""

from typing import Final

OCPP16: Final = "ocpp1.6"
OCPP201: Final = "ocpp2.0.1"
