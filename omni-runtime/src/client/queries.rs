//! Live queries of the Rust client: run, load more, end, and read their results in order.
//!
//! ```no_run
//! # use omni_runtime::prelude::*;
//! # use omni_runtime::client::Client;
//! # #[derive(Model, Clone, Default)] struct Line { room: String, text: String }
//! # #[collection(model = Line)] struct Lines;
//! # async fn demo(client: &mut Client) -> Result<(), omni_runtime::client::ClientError> {
//! let last = Query::<Line>::new()
//!     .eq(LineChange::Room("lobby".into()))
//!     .order_by_oid(Dir::Desc)
//!     .limit(50);
//! client.query::<Lines>("lobby", &last).await?;       // the window and its models have arrived
//! for (oid, line) in client.results::<Lines>("lobby")? { println!("{oid}: {}", line.text); }
//! client.query::<Lines>("lobby", &last.limit(100)).await?;   // load more: the same id, a larger limit
//! client.unquery::<Lines>("lobby").await?;
//! # Ok(()) }
//! ```

use serde_json::{Map, Value, json};

use super::{Client, ClientError, Entry, decode_model};
use crate::collection::Collection;
use crate::model::{Attribute, Model, Oid};
use crate::query::{Field, Query};

/// What the server says a live query shows (its `window` messages).
#[derive(Debug, Clone)]
pub struct Window {
    /// The collection's wire name.
    pub collection: String,
    /// The query as sent (`where`, `order`, `limit`).
    pub spec: Value,
    /// The OIDs it shows, in no particular order ([`Client::results`] orders them).
    pub oids: Vec<u64>,
    /// Whether more models match than it shows.
    pub more: bool,
}

impl Client {
    /// Runs the live query `qid` on collection `C` (or replaces it: the same `qid` with a
    /// larger limit loads more) and waits until the server answered, its window and models
    /// included. A refusal (`can_query`, an unknown attribute, a limit above the server's) is
    /// `Err(Refused(reason))`.
    pub async fn query<C: Collection>(
        &mut self,
        qid: &str,
        query: &Query<C::Model>,
    ) -> Result<(), ClientError> {
        let spec = query.to_json();
        self.send_query(C::NAME, qid, spec).await
    }

    async fn send_query(&mut self, coll: &str, qid: &str, spec: Value) -> Result<(), ClientError> {
        let mut msg = json!({"t": "query", "c": coll, "q": qid});
        if let (Value::Object(m), Value::Object(s)) = (&mut msg, &spec) {
            m.extend(s.clone());
        }
        let id = self.send(msg).await?;
        self.answer(id).await?;
        if let Some(w) = self.windows.get_mut(&(coll.to_owned(), qid.to_owned())) {
            w.spec = spec;
        }
        Ok(())
    }

    /// Ends the live query `qid`; the models only it showed are removed.
    pub async fn unquery<C: Collection>(&mut self, qid: &str) -> Result<(), ClientError> {
        let id = self
            .send(json!({"t": "unquery", "c": C::NAME, "q": qid}))
            .await?;
        self.answer(id).await?;
        self.windows.remove(&(C::NAME.to_owned(), qid.to_owned()));
        Ok(())
    }

    /// What the server says the live query `qid` on collection `C` shows.
    pub fn window<C: Collection>(&self, qid: &str) -> Option<&Window> {
        self.windows.get(&(C::NAME.to_owned(), qid.to_owned()))
    }

    /// The models the live query `qid` shows, decoded, in the query's order (the order the
    /// server uses, on the attributes the client holds).
    pub fn results<C: Collection>(&self, qid: &str) -> Result<Vec<Entry<C>>, ClientError> {
        let window = self
            .windows
            .get(&(C::NAME.to_owned(), qid.to_owned()))
            .ok_or_else(|| {
                ClientError::Protocol(format!("no live query `{qid}` on `{}`", C::NAME))
            })?;
        let spec = match &window.spec {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        let query = Query::<C::Model>::from_json(&spec).map_err(ClientError::Protocol)?;
        let held = self.collections.get(C::NAME);
        let mut rows = Vec::new();
        for oid in &window.oids {
            let Some(attrs) = held.and_then(|h| h.get(oid)) else {
                continue;
            };
            let oid_value = Value::from(*oid);
            let mut get = |f: Field<<C::Model as Model>::Attr>| match f {
                Field::Oid => Some(&oid_value),
                Field::Attr(a) => attrs.get(a.name()),
            };
            let key = query.key(&mut get);
            rows.push((key, *oid, decode_model::<C::Model>(attrs)?));
        }
        rows.sort_by(|a, b| query.compare((&a.0, a.1), (&b.0, b.1)));
        Ok(rows
            .into_iter()
            .map(|(_, oid, m)| (Oid::from_raw(oid), m))
            .collect())
    }

    /// Sends every live query again (after a reconnect that got a new connection).
    pub(super) async fn requery(&mut self) -> Result<(), ClientError> {
        let queries: Vec<(String, String, Value)> = self
            .windows
            .iter()
            .map(|((_, q), w)| (q.clone(), w.collection.clone(), w.spec.clone()))
            .collect();
        for (qid, coll, spec) in queries {
            self.send_query(&coll, &qid, spec).await?;
        }
        Ok(())
    }

    /// Applies a `window` message.
    pub(super) fn apply_window(&mut self, msg: &Value) -> Result<(), ClientError> {
        let bad = || ClientError::Protocol(format!("bad window message: {msg}"));
        let qid = msg["q"].as_str().ok_or_else(bad)?.to_owned();
        let coll = msg["c"].as_str().ok_or_else(bad)?.to_owned();
        let oids = |key: &str| -> Result<Vec<u64>, ClientError> {
            msg[key]
                .as_array()
                .ok_or_else(bad)?
                .iter()
                .map(|v| v.as_u64().ok_or_else(bad))
                .collect()
        };
        let (ins, outs) = (oids("in")?, oids("out")?);
        let window = self
            .windows
            .entry((coll.clone(), qid))
            .or_insert_with(|| Window {
                collection: coll,
                spec: Value::Null,
                oids: Vec::new(),
                more: false,
            });
        if msg["all"] == true {
            window.oids = ins;
        } else {
            window.oids.retain(|o| !outs.contains(o));
            window.oids.extend(ins);
        }
        window.more = msg["more"] == true;
        Ok(())
    }
}
