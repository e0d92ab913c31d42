"""``ocpp-archiver``: the edge from the history stream to PostgreSQL.

For now it holds the schema and its migrations (``ocpp-archiver migrate``);
the consumer that writes history records comes once the processor produces
them.
"""
