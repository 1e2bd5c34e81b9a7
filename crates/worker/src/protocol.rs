//! The messages of protocol version 1 (`adapters/PROTOCOL.md`) as serde types.
//!
//! Every line on a worker's stdin or stdout is one [`Message`], a JSON object whose `"type"` names
//! the variant. Unknown fields are ignored (forward compatible); an unknown `type` is an error.
//! Optional fields a peer may omit have serde defaults, and absent optional fields are not written.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// One protocol line, in either direction.
///
/// scrbench → worker: [`Message::Generate`], [`Message::Detect`], [`Message::Shutdown`].
/// worker → scrbench: [`Message::Hello`], [`Message::Result`], [`Message::Progress`],
/// [`Message::Heartbeat`]. A message in the wrong direction is a protocol error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Message {
    Hello(Hello),
    Generate(GenerateRequest),
    Detect(DetectRequest),
    Result(Reply),
    Progress(Progress),
    Heartbeat(Heartbeat),
    Shutdown(Shutdown),
}

impl Message {
    /// Parses one line (without its `\n`). Anything but a JSON object of a known type is an error.
    pub fn parse(line: &str) -> Result<Message, serde_json::Error> {
        serde_json::from_str(line)
    }

    /// One line, `\n`-terminated.
    pub fn to_line(&self) -> String {
        // A `Message` holds only strings, numbers, maps and paths that are valid UTF-8 by
        // construction (`PathBuf`s that are not are rejected by serde); fall back to a message
        // that the worker will reject loudly rather than panic.
        let mut line = serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"type\":\"invalid\",\"error\":{:?}}}", e.to_string()));
        line.push('\n');
        line
    }

    /// The `type` as written on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::Generate(_) => "generate",
            Message::Detect(_) => "detect",
            Message::Result(_) => "result",
            Message::Progress(_) => "progress",
            Message::Heartbeat(_) => "heartbeat",
            Message::Shutdown(_) => "shutdown",
        }
    }
}

/// The worker's first line: who it is and what it can do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Must be [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// Must equal the manifest's `name`.
    pub adapter: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter_version: Option<String>,
    /// Informative (logged): model id, revision, LoRA… The cache key never depends on it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub model: BTreeMap<String, Value>,
    /// Where the model runs, e.g. `cuda:0 (NVIDIA H100 80GB HBM3)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Whether the worker runs its tiny random smoke components; must equal what was asked.
    #[serde(default)]
    pub smoke: bool,
    #[serde(default)]
    pub capabilities: Capabilities,
}

/// What a worker serves and how many requests it accepts before answering the first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Request types served (`generate`, `detect`); empty = not declared (anything may be sent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<String>,
    /// Requests scrbench may send before the first reply arrives (default 1, at least 1).
    #[serde(default = "one")]
    pub max_in_flight: usize,
}

fn one() -> usize {
    1
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            requests: Vec::new(),
            max_in_flight: 1,
        }
    }
}

/// A request scrbench sends; the worker answers it with exactly one [`Reply`].
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Generate(GenerateRequest),
    Detect(DetectRequest),
}

impl Request {
    pub fn id(&self) -> &str {
        match self {
            Request::Generate(r) => &r.id,
            Request::Detect(r) => &r.id,
        }
    }

    pub fn set_id(&mut self, id: String) {
        match self {
            Request::Generate(r) => r.id = id,
            Request::Detect(r) => r.id = id,
        }
    }

    /// The wire `type`: `generate` or `detect`.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Generate(_) => "generate",
            Request::Detect(_) => "detect",
        }
    }

    pub fn into_message(self) -> Message {
        match self {
            Request::Generate(r) => Message::Generate(r),
            Request::Detect(r) => Message::Detect(r),
        }
    }
}

/// `generate`: one image, written as a PNG of exactly `width`×`height` to `output`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    pub id: String,
    /// Already in the model's format (`ENT1…ENTn` for `placeholders`).
    pub prompt: String,
    /// The `kind` of the manifest's prompt format: `plain`, `placeholders` or `text-only`.
    pub format: String,
    /// In subject order; empty for `text-only`.
    #[serde(default)]
    pub references: Vec<ReferenceImage>,
    pub seed: u64,
    pub width: u32,
    pub height: u32,
    pub steps: u32,
    pub guidance: f64,
    /// Absolute path of the PNG to write.
    pub output: PathBuf,
}

/// One reference subject of a [`GenerateRequest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReferenceImage {
    pub name: String,
    pub caption: String,
    #[serde(default)]
    pub idip: bool,
    /// Absolute path of the reference image.
    pub path: PathBuf,
}

/// `detect`: open-vocabulary boxes for `queries` in `image`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectRequest {
    pub id: String,
    /// Absolute path of the image.
    pub image: PathBuf,
    pub queries: Vec<String>,
}

/// `result`: the answer to one request, `ok` or not.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub id: String,
    pub ok: bool,
    /// `generate`: the file written (normally the request's `output`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// `detect`: the boxes found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detections: Option<Vec<Detection>>,
    /// Time the worker spent on the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// Free-form details (device, memory…), kept as provenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Value>,
    /// Why the request was not served (`ok: false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One box of a `detect` reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// Index into the request's `queries`.
    pub query: usize,
    pub score: f64,
    /// `[x0, y0, x1, y1]` in the image's pixels.
    pub bbox: [f64; 4],
}

/// `progress`: the worker is alive and this far into request `id`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u64>,
}

/// `heartbeat`: the worker is alive.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {}

/// `shutdown`: finish and exit with status 0 (within 10 s, or be killed).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Shutdown {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_hello_and_ignores_unknown_fields() {
        let line = r#"{"type": "hello", "protocol": 1, "adapter": "mosaic", "adapter_version": "0.1.0",
            "model": {"id": "black-forest-labs/FLUX.1-dev", "revision": "0ef5fff"},
            "device": "cuda:0", "smoke": false, "future": [1, 2],
            "capabilities": {"requests": ["generate"], "max_in_flight": 2, "batch": 4}}"#;
        let Message::Hello(hello) = Message::parse(line).unwrap() else {
            panic!("not a hello");
        };
        assert_eq!(hello.protocol, 1);
        assert_eq!(hello.adapter, "mosaic");
        assert_eq!(hello.capabilities.max_in_flight, 2);
        assert_eq!(hello.capabilities.requests, ["generate"]);
        assert_eq!(hello.model["id"], "black-forest-labs/FLUX.1-dev");
    }

    #[test]
    fn a_minimal_hello_gets_defaults() {
        let Message::Hello(hello) =
            Message::parse(r#"{"type":"hello","protocol":1,"adapter":"x"}"#).unwrap()
        else {
            panic!("not a hello");
        };
        assert!(!hello.smoke);
        assert_eq!(hello.capabilities, Capabilities::default());
    }

    #[test]
    fn unknown_types_and_non_objects_are_errors() {
        for line in [
            r#"{"type":"hullo","protocol":1}"#,
            r#"{"protocol":1}"#,
            "[1, 2]",
            "loading model...",
            "",
            r#"{"type":"result"}"#,
        ] {
            assert!(Message::parse(line).is_err(), "{line}");
        }
    }

    #[test]
    fn heartbeat_and_shutdown_accept_extra_fields() {
        assert_eq!(
            Message::parse(r#"{"type":"heartbeat","t":3}"#).unwrap(),
            Message::Heartbeat(Heartbeat {})
        );
        assert_eq!(
            Message::parse(r#"{"type":"shutdown"}"#).unwrap(),
            Message::Shutdown(Shutdown {})
        );
    }

    #[test]
    fn results_parse_both_ways() {
        let ok = Message::parse(
            r#"{"type": "result", "id": "p07/42", "ok": true, "file": "/abs/1234.png",
                "seconds": 11.8, "info": {"device": "cuda:0"}}"#,
        )
        .unwrap();
        let Message::Result(ok) = ok else {
            panic!("not a result")
        };
        assert!(ok.ok);
        assert_eq!(
            ok.file.as_deref(),
            Some(std::path::Path::new("/abs/1234.png"))
        );
        let Message::Result(refused) = Message::parse(
            r#"{"type": "result", "id": "p07/42", "ok": false, "error": "cannot open"}"#,
        )
        .unwrap() else {
            panic!("not a result")
        };
        assert_eq!(refused.error.as_deref(), Some("cannot open"));
        let Message::Result(detect) = Message::parse(
            r#"{"type": "result", "id": "d", "ok": true,
                "detections": [{"query": 0, "score": 0.91, "bbox": [12.0, 40.5, 230.0, 388.0]}]}"#,
        )
        .unwrap() else {
            panic!("not a result")
        };
        let boxes = detect.detections.unwrap();
        assert_eq!(boxes[0].bbox, [12.0, 40.5, 230.0, 388.0]);
    }

    #[test]
    fn requests_round_trip_as_documented() {
        let request = Message::Generate(GenerateRequest {
            id: "p07/42".into(),
            prompt: "ENT1 and ENT2 sit on a sofa".into(),
            format: "placeholders".into(),
            references: vec![ReferenceImage {
                name: "cat".into(),
                caption: "cat".into(),
                idip: false,
                path: "/abs/refs/cat.jpg".into(),
            }],
            seed: 42,
            width: 512,
            height: 512,
            steps: 28,
            guidance: 3.5,
            output: "/abs/cache/tmp/1234.png".into(),
        });
        let line = request.to_line();
        assert!(line.ends_with('\n') && !line.trim_end().contains('\n'));
        assert!(
            line.starts_with(r#"{"type":"generate","id":"p07/42""#),
            "{line}"
        );
        assert_eq!(Message::parse(line.trim_end()).unwrap(), request);
        let shutdown = Message::Shutdown(Shutdown {}).to_line();
        assert_eq!(shutdown, "{\"type\":\"shutdown\"}\n");
    }
}
