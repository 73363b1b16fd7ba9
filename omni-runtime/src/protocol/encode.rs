//! Encoding of server-to-client messages (docs/PROTOCOL.md). Every message is built once and
//! its bytes shared by all connections that see the same view.

use bytes::Bytes;

use crate::model::{AttrSet, Model, write_object};

/// Appends the JSON encoding of `value` to `out`.
pub(crate) fn json<T: serde::Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    // Serializing plain data into a Vec cannot fail except for maps with non-string keys,
    // which `ClientValue` types do not produce; write `null` rather than a broken frame.
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.extend_from_slice(b"null");
    }
}

/// Appends `s` as a JSON string.
pub(crate) fn push_str(out: &mut Vec<u8>, s: &str) {
    json(s, out);
}

pub(crate) fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `{"t":"add","c":<coll>,"m":{...}}`
pub(crate) fn add<M: Model>(coll_json: &str, oid: u64, model: &M, attrs: AttrSet) -> Bytes {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"{\"t\":\"add\",\"c\":");
    out.extend_from_slice(coll_json.as_bytes());
    out.extend_from_slice(b",\"m\":");
    write_object(model, Some(oid), attrs, &mut out);
    out.push(b'}');
    Bytes::from(out)
}

/// `{"t":"change","c":<coll>,"oid":N,"set":{...},"unset":[...]}`
pub(crate) fn change<M: Model>(
    coll_json: &str,
    oid: u64,
    model: &M,
    set: AttrSet,
    unset: AttrSet,
) -> Bytes {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"{\"t\":\"change\",\"c\":");
    out.extend_from_slice(coll_json.as_bytes());
    out.extend_from_slice(b",\"oid\":");
    push_u64(&mut out, oid);
    out.extend_from_slice(b",\"set\":");
    write_object(model, None, set, &mut out);
    if !unset.is_empty() {
        out.extend_from_slice(b",\"unset\":[");
        for (n, i) in unset.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            push_str(&mut out, crate::model::Attribute::name(M::ATTRS[i]));
        }
        out.push(b']');
    }
    out.push(b'}');
    Bytes::from(out)
}

/// `{"t":"window","c":<coll>,"q":<qid>,"in":[..],"out":[..],"more":b}`, with `"all":true` when
/// `in` is the whole window in order (then `out` is empty).
pub(crate) fn window(
    coll_json: &str,
    qid: &str,
    ins: &[u64],
    outs: &[u64],
    more: bool,
    all: bool,
) -> Bytes {
    let mut out = Vec::with_capacity(64 + 8 * ins.len());
    out.extend_from_slice(b"{\"t\":\"window\",\"c\":");
    out.extend_from_slice(coll_json.as_bytes());
    out.extend_from_slice(b",\"q\":");
    push_str(&mut out, qid);
    for (name, list) in [(&b",\"in\":["[..], ins), (&b",\"out\":["[..], outs)] {
        out.extend_from_slice(name);
        for (i, oid) in list.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_u64(&mut out, *oid);
        }
        out.push(b']');
    }
    out.extend_from_slice(if more {
        b",\"more\":true"
    } else {
        b",\"more\":false"
    });
    if all {
        out.extend_from_slice(b",\"all\":true");
    }
    out.push(b'}');
    Bytes::from(out)
}

/// `{"t":"remove","c":<coll>,"oid":N}`
pub(crate) fn remove(coll_json: &str, oid: u64) -> Bytes {
    let mut out = Vec::with_capacity(40);
    out.extend_from_slice(b"{\"t\":\"remove\",\"c\":");
    out.extend_from_slice(coll_json.as_bytes());
    out.extend_from_slice(b",\"oid\":");
    push_u64(&mut out, oid);
    out.push(b'}');
    Bytes::from(out)
}

/// `{"t":"created","id":N,"tmp":"..","c":<coll>,"m":{...}|null}`
pub(crate) fn created<M: Model>(
    coll_json: &str,
    req: u64,
    tmp: &str,
    oid: u64,
    model: Option<(&M, AttrSet)>,
) -> Bytes {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"{\"t\":\"created\",\"id\":");
    push_u64(&mut out, req);
    out.extend_from_slice(b",\"tmp\":");
    push_str(&mut out, tmp);
    out.extend_from_slice(b",\"c\":");
    out.extend_from_slice(coll_json.as_bytes());
    out.extend_from_slice(b",\"oid\":");
    push_u64(&mut out, oid);
    out.extend_from_slice(b",\"m\":");
    match model {
        Some((m, attrs)) => write_object(m, Some(oid), attrs, &mut out),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
    Bytes::from(out)
}

/// What a `reject` is about: a model by OID or a client's temporary id.
pub(crate) enum Target<'a> {
    Oid(u64),
    Tmp(&'a str),
}

/// `{"t":"reject","id":N,"c":<coll>,"oid":N|"tmp":"..","reason":"..","m":{...}|null}`
pub(crate) fn reject<M: Model>(
    coll_json: &str,
    req: u64,
    target: Target<'_>,
    reason: &str,
    model: Option<(&M, AttrSet)>,
) -> Bytes {
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(b"{\"t\":\"reject\",\"id\":");
    push_u64(&mut out, req);
    out.extend_from_slice(b",\"c\":");
    out.extend_from_slice(coll_json.as_bytes());
    let oid = match target {
        Target::Oid(oid) => {
            out.extend_from_slice(b",\"oid\":");
            push_u64(&mut out, oid);
            Some(oid)
        }
        Target::Tmp(tmp) => {
            out.extend_from_slice(b",\"tmp\":");
            push_str(&mut out, tmp);
            None
        }
    };
    out.extend_from_slice(b",\"reason\":");
    push_str(&mut out, reason);
    out.extend_from_slice(b",\"m\":");
    match model {
        Some((m, attrs)) => write_object(m, oid, attrs, &mut out),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
    Bytes::from(out)
}

/// `{"t":"ack","id":N}`
pub(crate) fn ack(req: u64) -> Bytes {
    let mut out = Vec::with_capacity(24);
    out.extend_from_slice(b"{\"t\":\"ack\",\"id\":");
    push_u64(&mut out, req);
    out.push(b'}');
    Bytes::from(out)
}

/// `{"t":"reply","id":N,"ok":<json>}`
pub(crate) fn reply_ok(req: u64, json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(24 + json.len());
    out.extend_from_slice(b"{\"t\":\"reply\",\"id\":");
    push_u64(&mut out, req);
    out.extend_from_slice(b",\"ok\":");
    out.extend_from_slice(json);
    out.push(b'}');
    Bytes::from(out)
}

/// `{"t":"reply","id":N,"err":".."}`
pub(crate) fn reply_err(req: u64, err: &str) -> Bytes {
    let mut out = Vec::with_capacity(32 + err.len());
    out.extend_from_slice(b"{\"t\":\"reply\",\"id\":");
    push_u64(&mut out, req);
    out.extend_from_slice(b",\"err\":");
    push_str(&mut out, err);
    out.push(b'}');
    Bytes::from(out)
}

/// `{"t":"error","reason":"..","id":N?}`
pub(crate) fn error(req: Option<u64>, reason: &str) -> Bytes {
    let mut out = Vec::with_capacity(32 + reason.len());
    out.extend_from_slice(b"{\"t\":\"error\",\"reason\":");
    push_str(&mut out, reason);
    if let Some(req) = req {
        out.extend_from_slice(b",\"id\":");
        push_u64(&mut out, req);
    }
    out.push(b'}');
    Bytes::from(out)
}

/// `{"t":"emit","name":"..","data":<json>}`
pub(crate) fn emit(name: &str, data_json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(32 + data_json.len());
    out.extend_from_slice(b"{\"t\":\"emit\",\"name\":");
    push_str(&mut out, name);
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data_json);
    out.push(b'}');
    Bytes::from(out)
}

/// `{"t":"hello","v":1,"conn":N,"epoch":E}`
pub(crate) fn hello(conn: u64, epoch: u64, token: &str, resumed: bool) -> Bytes {
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(b"{\"t\":\"hello\",\"v\":");
    push_u64(
        &mut out,
        u64::from(omni_client_gen::schema::PROTOCOL_VERSION),
    );
    out.extend_from_slice(b",\"conn\":");
    push_u64(&mut out, conn);
    out.extend_from_slice(b",\"epoch\":");
    push_u64(&mut out, epoch);
    if !token.is_empty() {
        out.extend_from_slice(b",\"token\":");
        push_str(&mut out, token);
    }
    if resumed {
        out.extend_from_slice(b",\"resumed\":true");
    }
    out.push(b'}');
    Bytes::from(out)
}

/// `{"t":"at","seq":N,"v":V}`: the frame it ends reflects every commit up to `seq`, and the
/// first `v` changes of the connection's view that were not commits (snapshots, syncs, channels).
pub(crate) fn at(seq: u64, view: u64) -> Bytes {
    let mut out = Vec::with_capacity(40);
    out.extend_from_slice(b"{\"t\":\"at\",\"seq\":");
    push_u64(&mut out, seq);
    out.extend_from_slice(b",\"v\":");
    push_u64(&mut out, view);
    out.push(b'}');
    Bytes::from(out)
}

/// `{"t":"sync"}`: `conn.sync()` changed what the connection sees (the messages before it).
pub(crate) fn sync() -> Bytes {
    Bytes::from_static(b"{\"t\":\"sync\"}")
}

/// `{"t":"resumed","seq":N,"full":bool}`: a resumed connection caught up (with only what
/// changed, or with the snapshot just sent).
pub(crate) fn resumed(seq: u64, full: bool) -> Bytes {
    let mut out = Vec::with_capacity(48);
    out.extend_from_slice(b"{\"t\":\"resumed\",\"seq\":");
    push_u64(&mut out, seq);
    out.extend_from_slice(if full {
        b",\"full\":true}"
    } else {
        b",\"full\":false}"
    });
    Bytes::from(out)
}
