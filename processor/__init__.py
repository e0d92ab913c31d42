"""OCPP 1.6 central-system processor: consumer-group workers on a Redis Stream."""
