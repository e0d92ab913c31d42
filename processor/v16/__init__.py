"""OCPP 1.6: its payloads (``messages``) and the central system answering them (``handlers``)."""
