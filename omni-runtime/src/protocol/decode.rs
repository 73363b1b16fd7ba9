//! Decoding of client-to-server messages (docs/PROTOCOL.md) into owned, typed requests.

use serde_json::{Map, Value};

/// A request on one collection.
#[derive(Debug, Clone)]
pub(crate) enum CollRequest {
    Change {
        oid: u64,
        set: Map<String, Value>,
    },
    Add {
        tmp: String,
        attrs: Map<String, Value>,
    },
    Remove {
        oid: u64,
    },
    /// A one-shot read of one model, answered with a `reply`.
    Read {
        oid: u64,
    },
    /// Subscribe to (or, with `on == false`, leave) a channel of the collection.
    Subscribe {
        channel: String,
        on: bool,
    },
    /// Start or replace the live query `qid` (`spec`: its `where`, `order`, `limit`), or end it
    /// (`spec: None`).
    Query {
        qid: String,
        spec: Option<Map<String, Value>>,
    },
}

impl CollRequest {
    /// The model it is about, if it names one.
    pub(crate) fn oid(&self) -> Option<u64> {
        match self {
            CollRequest::Change { oid, .. }
            | CollRequest::Remove { oid }
            | CollRequest::Read { oid } => Some(*oid),
            CollRequest::Add { .. } | CollRequest::Subscribe { .. } | CollRequest::Query { .. } => {
                None
            }
        }
    }

    /// Its kind, as the metrics name it.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            CollRequest::Change { .. } => "change",
            CollRequest::Add { .. } => "add",
            CollRequest::Remove { .. } => "remove",
            CollRequest::Read { .. } => "read",
            CollRequest::Subscribe { .. } => "subscribe",
            CollRequest::Query { spec: Some(_), .. } => "query",
            CollRequest::Query { spec: None, .. } => "unquery",
        }
    }
}

/// One decoded client message.
#[derive(Debug)]
pub(crate) enum ClientMsg {
    /// A request on a collection (`change`, `add`, `remove`, `read`, `sub`, `unsub`).
    Coll {
        req: u64,
        coll: String,
        request: CollRequest,
        /// The message's `opts`, passed to the storage middleware.
        options: Option<Value>,
    },
    /// A call of a server event.
    Event { req: u64, name: String, args: Value },
}

/// Why a message could not be decoded: the reason, and the request id if it had one.
#[derive(Debug)]
pub(crate) struct Malformed {
    pub(crate) req: Option<u64>,
    pub(crate) reason: String,
}

fn take(obj: &mut Map<String, Value>, key: &str) -> Result<Value, String> {
    obj.remove(key)
        .ok_or_else(|| format!("missing field `{key}`"))
}

fn string(obj: &mut Map<String, Value>, key: &str) -> Result<String, String> {
    match take(obj, key)? {
        Value::String(s) => Ok(s),
        _ => Err(format!("field `{key}` must be a string")),
    }
}

fn u64_field(obj: &Map<String, Value>, key: &str) -> Result<u64, String> {
    obj.get(key)
        .ok_or_else(|| format!("missing field `{key}`"))?
        .as_u64()
        .ok_or_else(|| format!("field `{key}` must be a non-negative integer"))
}

fn object(obj: &mut Map<String, Value>, key: &str) -> Result<Map<String, Value>, String> {
    match take(obj, key)? {
        Value::Object(map) => Ok(map),
        _ => Err(format!("field `{key}` must be an object")),
    }
}

/// Decodes one message object.
pub(crate) fn decode(value: Value) -> Result<ClientMsg, Malformed> {
    let Value::Object(mut obj) = value else {
        return Err(Malformed {
            req: None,
            reason: "each message must be a JSON object with a `t` field".into(),
        });
    };
    let req = obj.get("id").and_then(Value::as_u64);
    decode_object(&mut obj, req).map_err(|reason| Malformed { req, reason })
}

fn decode_object(obj: &mut Map<String, Value>, req: Option<u64>) -> Result<ClientMsg, String> {
    let kind = string(obj, "t")?;
    let req = req.ok_or("missing field `id` (a non-negative integer the answer will carry)")?;
    match kind.as_str() {
        "change" | "add" | "remove" | "read" | "sub" | "unsub" | "query" | "unquery" => {
            let coll = string(obj, "c")?;
            let request = match kind.as_str() {
                "change" => CollRequest::Change {
                    oid: u64_field(obj, "oid")?,
                    set: object(obj, "set")?,
                },
                "add" => CollRequest::Add {
                    tmp: string(obj, "tmp")?,
                    attrs: object(obj, "m")?,
                },
                "remove" => CollRequest::Remove {
                    oid: u64_field(obj, "oid")?,
                },
                "read" => CollRequest::Read {
                    oid: u64_field(obj, "oid")?,
                },
                "query" | "unquery" => {
                    let qid = match take(obj, "q")? {
                        Value::String(s) if !s.is_empty() && s.len() <= 128 => s,
                        Value::Number(n) => n.to_string(),
                        _ => return Err(
                            "field `q` must be a query id: a number, or a string of 1 to 128 bytes"
                                .into(),
                        ),
                    };
                    let spec = (kind == "query").then(|| {
                        let mut spec = Map::new();
                        for key in ["where", "order", "limit"] {
                            if let Some(v) = obj.remove(key) {
                                spec.insert(key.to_owned(), v);
                            }
                        }
                        spec
                    });
                    CollRequest::Query { qid, spec }
                }
                _ => CollRequest::Subscribe {
                    channel: string(obj, "ch")?,
                    on: kind == "sub",
                },
            };
            Ok(ClientMsg::Coll {
                req,
                coll,
                request,
                options: obj.remove("opts"),
            })
        }
        "event" => Ok(ClientMsg::Event {
            req,
            name: string(obj, "name")?,
            args: obj.remove("args").unwrap_or(Value::Null),
        }),
        other => Err(format!(
            "unknown message type `{other}` (expected change, add, remove, read, sub, unsub, query, unquery or event)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_requests_and_names_what_is_wrong() {
        let msg = decode(
            json!({"t":"change","id":3,"c":"players","oid":7,"set":{"x":1},"opts":{"why":"test"}}),
        )
        .unwrap();
        match msg {
            ClientMsg::Coll {
                req: 3,
                coll,
                request: CollRequest::Change { oid: 7, set },
                options,
            } => {
                assert_eq!(coll, "players");
                assert_eq!(set["x"], 1);
                assert_eq!(options, Some(json!({"why":"test"})));
            }
            other => panic!("{other:?}"),
        }
        let err = decode(json!({"t":"change","id":4,"c":"players","set":{}})).unwrap_err();
        assert_eq!(
            (err.req, err.reason.as_str()),
            (Some(4), "missing field `oid`")
        );
        let err = decode(json!({"t":"nope","id":5})).unwrap_err();
        assert!(err.reason.starts_with("unknown message type `nope`"));
        let err = decode(json!([1])).unwrap_err();
        assert_eq!(err.req, None);
    }
}
