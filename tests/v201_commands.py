"""One example of each of the 40 commands an OCPP 2.0.1 CSMS sends: the
request we send and an answer a station may give, both as on the wire
(camelCase). Each is checked against the official schemas
(tests/processor/test_v201_command_examples.py); the end-to-end test sends
every one through the HTTP API to the ``ocpp`` package's charge point
(tests/integration/test_v201_commands.py)."""

from __future__ import annotations

from typing import Any

HEARTBEAT = {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}
TOKEN = {"idToken": "T1", "type": "ISO14443"}
PEM = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2N\n-----END CERTIFICATE-----\n"
MD5 = "d41d8cd98f00b204e9800998ecf8427e"
POWER = {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "Power"}}

# action: (request, answer)
EXAMPLES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "CancelReservation": ({"reservationId": 3}, {"status": "Accepted"}),
    "CertificateSigned": ({"certificateChain": PEM,
                           "certificateType": "ChargingStationCertificate"},
                          {"status": "Accepted"}),
    "ChangeAvailability": ({"operationalStatus": "Inoperative", "evse": {"id": 1}},
                           {"status": "Scheduled"}),
    "ClearCache": ({}, {"status": "Accepted"}),
    "ClearChargingProfile": ({"chargingProfileId": 5}, {"status": "Unknown"}),
    "ClearDisplayMessage": ({"id": 9}, {"status": "Accepted"}),
    "ClearVariableMonitoring": ({"id": [1, 2]}, {"clearMonitoringResult": [
        {"status": "Accepted", "id": 1}, {"status": "NotFound", "id": 2}]}),
    "CostUpdated": ({"totalCost": 12.5, "transactionId": "tx-1"}, {}),
    "CustomerInformation": ({"requestId": 4, "report": True, "clear": False, "idToken": TOKEN},
                            {"status": "Accepted"}),
    "DataTransfer": ({"vendorId": "com.example", "messageId": "hello", "data": {"a": 1}},
                     {"status": "Accepted", "data": {"b": 2}}),
    "DeleteCertificate": ({"certificateHashData": {
        "hashAlgorithm": "SHA256", "issuerNameHash": "a1b2", "issuerKeyHash": "c3d4",
        "serialNumber": "01"}}, {"status": "NotFound"}),
    "GetBaseReport": ({"requestId": 21, "reportBase": "FullInventory"}, {"status": "Accepted"}),
    "GetChargingProfiles": ({"requestId": 6, "chargingProfile": {
        "chargingProfilePurpose": "TxDefaultProfile"}}, {"status": "NoProfiles"}),
    "GetCompositeSchedule": ({"duration": 3600, "evseId": 1, "chargingRateUnit": "W"}, {
        "status": "Accepted", "schedule": {
            "evseId": 1, "duration": 3600, "scheduleStart": "2024-01-01T12:00:00Z",
            "chargingRateUnit": "W",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11000.0}]}}),
    "GetDisplayMessages": ({"requestId": 7}, {"status": "Unknown"}),
    "GetInstalledCertificateIds": ({"certificateType": ["V2GRootCertificate"]},
                                   {"status": "NotFound"}),
    "GetLocalListVersion": ({}, {"versionNumber": 5}),
    "GetLog": ({"logType": "DiagnosticsLog", "requestId": 8,
                "log": {"remoteLocation": "https://logs.example.com/upload"}},
               {"status": "Accepted", "filename": "diagnostics.log"}),
    "GetMonitoringReport": ({"requestId": 9}, {"status": "Accepted"}),
    "GetReport": ({"requestId": 22,
                   "componentVariable": [{"component": {"name": "OCPPCommCtrlr"}}]},
                  {"status": "EmptyResultSet"}),
    "GetTransactionStatus": ({"transactionId": "tx-1"},
                             {"ongoingIndicator": True, "messagesInQueue": False}),
    "GetVariables": ({"getVariableData": [HEARTBEAT]}, {"getVariableResult": [
        {"attributeStatus": "Accepted", "attributeValue": "300", **HEARTBEAT}]}),
    "InstallCertificate": ({"certificateType": "CSMSRootCertificate", "certificate": PEM},
                           {"status": "Accepted"}),
    "PublishFirmware": ({"location": "https://fw.example.com/fw.bin", "checksum": MD5,
                         "requestId": 10}, {"status": "Accepted"}),
    "RequestStartTransaction": ({"idToken": {"idToken": "T1", "type": "Central"},
                                 "remoteStartId": 11, "evseId": 1},
                                {"status": "Accepted", "transactionId": "tx-1"}),
    "RequestStopTransaction": ({"transactionId": "tx-1"}, {"status": "Accepted"}),
    "ReserveNow": ({"id": 12, "expiryDateTime": "2030-01-01T00:00:00Z", "idToken": TOKEN,
                    "evseId": 1}, {"status": "Accepted"}),
    "Reset": ({"type": "OnIdle"}, {"status": "Scheduled"}),
    "SendLocalList": ({"versionNumber": 6, "updateType": "Full", "localAuthorizationList": [
        {"idToken": TOKEN, "idTokenInfo": {"status": "Accepted"}}]}, {"status": "Accepted"}),
    "SetChargingProfile": ({"evseId": 1, "chargingProfile": {
        "id": 5, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
        "chargingProfileKind": "Relative", "chargingSchedule": [{
            "id": 1, "chargingRateUnit": "W",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11000.0}]}]}},
        {"status": "Accepted"}),
    "SetDisplayMessage": ({"message": {"id": 9, "priority": "NormalCycle",
                                       "message": {"format": "UTF8", "content": "Welcome"}}},
                          {"status": "Accepted"}),
    "SetMonitoringBase": ({"monitoringBase": "FactoryDefault"}, {"status": "Accepted"}),
    "SetMonitoringLevel": ({"severity": 5}, {"status": "Accepted"}),
    "SetNetworkProfile": ({"configurationSlot": 1, "connectionData": {
        "ocppVersion": "OCPP20", "ocppTransport": "JSON",
        "ocppCsmsUrl": "wss://csms.example.com/ocpp", "messageTimeout": 30,
        "securityProfile": 2, "ocppInterface": "Wired0"}}, {"status": "Accepted"}),
    "SetVariableMonitoring": ({"setMonitoringData": [
        {"value": 10.0, "type": "Delta", "severity": 5, **POWER}]}, {"setMonitoringResult": [
        {"id": 3, "status": "Accepted", "type": "Delta", "severity": 5, **POWER}]}),
    "SetVariables": ({"setVariableData": [{"attributeValue": "60", **HEARTBEAT}]},
                     {"setVariableResult": [{"attributeStatus": "Accepted", **HEARTBEAT}]}),
    "TriggerMessage": ({"requestedMessage": "StatusNotification",
                        "evse": {"id": 1, "connectorId": 1}}, {"status": "Accepted"}),
    "UnlockConnector": ({"evseId": 1, "connectorId": 1}, {"status": "Unlocked"}),
    "UnpublishFirmware": ({"checksum": MD5}, {"status": "Unpublished"}),
    "UpdateFirmware": ({"requestId": 13, "firmware": {
        "location": "https://fw.example.com/fw.bin", "retrieveDateTime": "2030-01-01T00:00:00Z"}},
        {"status": "Accepted"}),
}  # fmt: skip
