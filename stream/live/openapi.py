"""The OpenAPI 3 description of the REST API, served at /api/openapi.json."""

from __future__ import annotations

from typing import Any

_ERROR = {
    "description": "error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_UNREACHABLE = {
    "description": "the camera runs on another replica (docs/kubernetes.md), which cannot be reached (502) or "
    "disagrees on who runs it (409); answers forwarded from the camera's replica carry X-Fakeweb-Replica",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
EVENT_ID = {"name": "event_id", "in": "path", "required": True, "schema": {"type": "string"}}
_SDP = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/SessionDescription"}}}}


def _json(ref: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}


OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "FakeWeb Live",
        "version": "1",
        "description": "Manipulated-face detection in live video.",
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
            },
            "SessionDescription": {
                "type": "object",
                "required": ["sdp", "type"],
                "properties": {
                    "sdp": {"type": "string"},
                    "type": {"type": "string", "enum": ["offer", "answer"]},
                },
            },
            "NewCamera": {
                "type": "object",
                "required": ["name", "url"],
                "properties": {
                    "name": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 80,
                        "description": "unique among the cameras, ignoring case",
                    },
                    "url": {
                        "type": "string",
                        "description": "rtsp://[user:pass@]host[:port]/path or rtsps://...; the host a name or "
                        "an IP address (IPv6 in brackets), the port 1-65535. The host is not looked up here: a "
                        "name that does not resolve shows as the stream's last_error. file:// cameras can only "
                        "be configured in the camera file.",
                    },
                },
            },
            "Face": {
                "type": "object",
                "properties": {
                    "track_id": {"type": "integer"},
                    "box": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4},
                    "probability": {
                        "type": "number",
                        "nullable": True,
                        "minimum": 0,
                        "maximum": 1,
                        "description": "the face's smoothed score, the one its verdict is decided on (compare "
                        "with the model's threshold in /readyz); null while the verdict is unknown",
                    },
                    "verdict": {
                        "type": "string",
                        "enum": ["unknown", "real", "suspect", "manipulated"],
                        "description": "unknown until the face has `min_samples` classifier samples; manipulated "
                        "only with the score at or above the threshold for `manipulated_after` samples in a row "
                        "(docs/operations.md)",
                    },
                },
            },
            "Stream": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "kind": {"type": "string", "enum": ["browser", "camera"]},
                    "name": {"type": "string"},
                    "url": {"type": "string", "nullable": True, "description": "credentials redacted"},
                    "status": {"type": "string", "enum": ["connecting", "live", "reconnecting", "offline"]},
                    "fps": {
                        "type": "number",
                        "description": "frames processed per second; 0 while a camera is down",
                    },
                    "frames_received": {"type": "integer"},
                    "frames_processed": {"type": "integer"},
                    "frames_dropped": {"type": "integer"},
                    "viewers": {"type": "integer"},
                    "faces": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/Face"},
                        "description": "the faces of the last frame processed; none while a camera is down",
                    },
                    "last_error": {
                        "type": "string",
                        "nullable": True,
                        "description": "why the camera's last connection failed (credentials redacted), kept "
                        "after it recovers; null if none has failed (and for browser streams)",
                    },
                    "retry_in_seconds": {
                        "type": "number",
                        "nullable": True,
                        "description": "seconds until the camera's next connection attempt; null while "
                        "connected or connecting",
                    },
                    "next_retry_at": {
                        "type": "string",
                        "format": "date-time",
                        "nullable": True,
                        "description": "the same moment as UTC time",
                    },
                    "replica": {
                        "type": "integer",
                        "description": "only in the answer to adding a camera that another replica runs: that "
                        "replica's index (it starts the camera at its next re-read of the camera list)",
                    },
                    "rtsp_out": {
                        "allOf": [{"$ref": "#/components/schemas/RtspOut"}],
                        "nullable": True,
                        "description": "the stream's annotated video published over RTSP; null with RTSP out off",
                    },
                },
            },
            "RtspOut": {
                "type": "object",
                "properties": {
                    "url": {
                        "type": "string",
                        "description": "where NVRs and players read the stream (credentials redacted)",
                    },
                    "connected": {"type": "boolean", "description": "publishing to the media server now"},
                    "frames_sent": {"type": "integer"},
                    "frames_dropped": {
                        "type": "integer",
                        "description": "replaced by a newer frame before they were sent, or dropped while not "
                        "connected",
                    },
                    "reconnects": {"type": "integer"},
                    "last_error": {
                        "type": "string",
                        "nullable": True,
                        "description": "why the last connection failed; null while connected",
                    },
                },
            },
            "Event": {
                "type": "object",
                "description": "a face judged manipulated (or suspect for events_suspect_seconds) on one stream",
                "properties": {
                    "id": {"type": "string"},
                    "stream": {"type": "string"},
                    "track_id": {"type": "integer"},
                    "verdict": {"type": "string", "enum": ["manipulated", "suspect"]},
                    "status": {
                        "type": "string",
                        "enum": ["open", "closed", "interrupted"],
                        "description": "interrupted: the service stopped before the event ended",
                    },
                    "started_at": {"type": "string", "format": "date-time"},
                    "ended_at": {"type": "string", "format": "date-time", "nullable": True},
                    "peak_score": {"type": "number"},
                    "mean_score": {"type": "number"},
                    "samples": {"type": "integer"},
                    "model_version": {"type": "string"},
                    "snapshot": {
                        "type": "string",
                        "nullable": True,
                        "description": "URL of the annotated frame",
                    },
                    "crops": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "URLs of the face crops the model judged, best scored first",
                    },
                },
            },
            "EventList": {
                "type": "object",
                "properties": {
                    "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                    "total": {"type": "integer", "description": "events matching the filters, all pages"},
                },
            },
            "StreamList": {
                "type": "object",
                "properties": {
                    "streams": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/Stream"},
                        "description": "the streams this replica runs",
                    },
                    "elsewhere": {
                        "type": "array",
                        "description": "cameras of the shared camera list that other replicas run "
                        "(docs/kubernetes.md); empty with one replica",
                        "items": {
                            "type": "object",
                            "properties": {
                                "id": {"type": "string"},
                                "name": {"type": "string"},
                                "replica": {"type": "integer"},
                                "url": {"type": "string", "description": "the stream on its replica"},
                            },
                        },
                    },
                },
            },
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/api/streams": {
            "get": {
                "summary": "List streams",
                "responses": {"200": _json("#/components/schemas/StreamList", "streams"), "401": _ERROR},
            },
            "post": {
                "summary": "Add an RTSP camera",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewCamera"}}},
                },
                "responses": {
                    "201": _json("#/components/schemas/Stream", "the new camera stream"),
                    "400": _ERROR,
                    "401": _ERROR,
                    "409": {**_ERROR, "description": "another camera has this name"},
                    "503": _ERROR,
                },
            },
        },
        "/api/streams/{stream_id}": {
            "parameters": [
                {"name": "stream_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "get": {
                "summary": "One stream: status, fps, faces",
                "responses": {
                    "200": _json("#/components/schemas/Stream", "the stream"),
                    "502": _UNREACHABLE,
                    "401": _ERROR,
                    "404": _ERROR,
                },
            },
            "delete": {
                "summary": "Remove a stream (a camera is also removed from the saved list)",
                "responses": {
                    "204": {
                        "description": "removed (a camera another replica runs stops at its next re-read)"
                    },
                    "502": _UNREACHABLE,
                    "401": _ERROR,
                    "404": _ERROR,
                },
            },
        },
        "/api/streams/{stream_id}/view": {
            "parameters": [
                {"name": "stream_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "post": {
                "summary": "Watch a stream: WebRTC offer (receive only) in, answer out",
                "requestBody": {"required": True, **_SDP},
                "responses": {
                    "200": _json("#/components/schemas/SessionDescription", "answer"),
                    "502": _UNREACHABLE,
                    "400": _ERROR,
                    "401": _ERROR,
                    "404": _ERROR,
                    "503": _ERROR,
                },
            },
        },
        "/api/events": {
            "get": {
                "summary": "List events, newest first",
                "parameters": [
                    {"name": "stream", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "verdict",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["manipulated", "suspect"]},
                    },
                    {
                        "name": "since",
                        "in": "query",
                        "description": "started at or after: ISO 8601 with a time zone, or seconds since the epoch",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "until",
                        "in": "query",
                        "description": "started before",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0, "maximum": 500, "default": 50},
                    },
                    {
                        "name": "offset",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0, "default": 0},
                    },
                ],
                "responses": {
                    "200": _json("#/components/schemas/EventList", "events"),
                    "400": _ERROR,
                    "401": _ERROR,
                    "404": _ERROR,
                },
            },
        },
        "/api/events/{event_id}": {
            "parameters": [EVENT_ID],
            "get": {
                "summary": "One event",
                "responses": {
                    "200": _json("#/components/schemas/Event", "the event"),
                    "401": _ERROR,
                    "404": _ERROR,
                },
            },
            "delete": {
                "summary": "Delete an event and its pictures",
                "responses": {"204": {"description": "deleted"}, "401": _ERROR, "404": _ERROR},
            },
        },
        "/api/events/{event_id}/review": {
            "parameters": [EVENT_ID],
            "post": {
                "summary": "Review an event: manipulated indeed (correct) or a real face (a false alarm)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["outcome"],
                                "properties": {
                                    "outcome": {"type": "string", "enum": ["correct", "real"]},
                                    "note": {"type": "string", "maxLength": 1000},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json("#/components/schemas/Event", "the event with its review"),
                    "400": _ERROR,
                    "401": _ERROR,
                    "404": _ERROR,
                },
            },
        },
        "/api/events/{event_id}/{name}": {
            "parameters": [
                EVENT_ID,
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": "snapshot.jpg or crop-<n>.jpg",
                },
            ],
            "get": {
                "summary": "A picture of an event (JPEG)",
                "responses": {
                    "200": {
                        "description": "the picture",
                        "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
                    },
                    "401": _ERROR,
                    "404": _ERROR,
                },
            },
        },
        "/api/webrtc/offer": {
            "post": {
                "summary": "Send a webcam: WebRTC offer in, answer with the annotated video out",
                "requestBody": {"required": True, **_SDP},
                "responses": {
                    "200": _json("#/components/schemas/SessionDescription", "answer"),
                    "400": _ERROR,
                    "401": _ERROR,
                    "503": _ERROR,
                },
            },
        },
    },
}
