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
