//! A Rust client for Omni servers, over tokio-tungstenite.
//!
//! It keeps the synced collections as JSON objects keyed by OID, applies every message the
//! server sends, and offers requests (`change`, `add`, `remove`, `trigger`) that wait for their
//! answer. Integration tests, bots and load generators use it.
//!
//! ```no_run
//! # async fn run() -> Result<(), omni_runtime::client::ClientError> {
//! use omni_runtime::client::Client;
//! let mut client = Client::connect("ws://127.0.0.1:3000/omni").await?;
//! let reply: serde_json::Value = client.trigger("login", &serde_json::json!({"name": "Ann", "password": "pw"})).await?;
//! let players = client.collection("players");
//! # Ok(()) }
//! ```
//!
//! ## Typed access
//!
//! With the server's model and collection types in scope (share the crate that defines them
//! between server and client), the same client reads and writes typed values: models are decoded
//! with the model's own [`Model::decode_change`] and changes encoded with [`Model::write_attr`],
//! so a client cannot send a value of the wrong type for an attribute.
//!
//! ```no_run
//! # use omni_runtime::prelude::*;
//! # use omni_runtime::client::{Client, ClientError};
//! # #[derive(Default)] struct Session;
//! # #[derive(Model, Clone, Default, Debug)] struct Player { name: String, x: i32 }
//! # impl Permissions<Session> for Player {}
//! # #[collection(model = Player)] struct Players;
//! # impl CollectionPermissions<Session> for Players {}
//! # #[derive(Serialize)] struct Login { name: String, password: String }
//! # #[derive(Deserialize)] struct LoggedIn { oid: Oid<Player> }
//! # async fn run(mut client: Client) -> Result<(), ClientError> {
//! // `Players` is `#[collection(model = Player)]`, `Player` a `#[derive(Model)]` struct.
//! let login = Login { name: "Ann".into(), password: "pw".into() };
//! let reply: LoggedIn = client.trigger("login", &login).await?;  // typed arguments and reply
//! let oid = reply.oid;
//! let players: Vec<(Oid<Player>, Player)> = client.models::<Players>()?;
//! client.set::<Players>(oid, PlayerChange::X(5)).await?;          // waits for the ack
//! let me: Option<Player> = client.get::<Players>(oid)?;
//! let new: Oid<Player> = client.create::<Players>(Player { name: "Bo".into(), ..Default::default() }).await?;
//! client.destroy::<Players>(new).await?;
//! client.wait_model::<Players>(oid, |p| p.x == 5).await?;         // until a change arrives
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::collection::Collection;
use crate::model::{Attribute, Model, Oid};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod queries;
pub use queries::Window;

/// One model as the client holds it: its attributes by wire name, without `oid`.
pub type Attrs = Map<String, Value>;

/// A decoded model of collection `C` with its OID, as the typed accessors return it.
pub type Entry<C> = (Oid<<C as Collection>::Model>, <C as Collection>::Model);

/// An error of the client: transport, protocol, or a refusal by the server.
#[derive(Debug)]
pub enum ClientError {
    /// The WebSocket failed or closed.
    Transport(String),
    /// The server sent something this client does not understand.
    Protocol(String),
    /// The server refused the request (a `reject`, an event `err` or an `error`), with its reason.
    Refused(String),
    /// No answer in time.
    Timeout,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Transport(e) => write!(f, "transport error: {e}"),
            ClientError::Protocol(e) => write!(f, "protocol error: {e}"),
            ClientError::Refused(e) => write!(f, "refused: {e}"),
            ClientError::Timeout => f.write_str("timed out waiting for the server"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A connected client holding the collections it may see.
pub struct Client {
    /// `None` after [`Client::sever`].
    ws: Option<WebSocketStream<MaybeTlsStream<TcpStream>>>,
    collections: HashMap<String, BTreeMap<u64, Attrs>>,
    conn: u64,
    next_id: u64,
    /// Every message received, in order, for tests that inspect the raw stream.
    log: Vec<Value>,
    /// Messages received but not yet looked at by `next_message`.
    inbox: VecDeque<Value>,
    /// Events the server emitted: (name, data).
    emits: Vec<(String, Value)>,
    timeout: Duration,
    /// The connection's resume token (empty: the server does not resume connections).
    token: String,
    /// The log epoch and the last log position the server's frames said they reflect.
    epoch: u64,
    seq: u64,
    /// How many changes of its view that were not commits the server's frames said they reflect.
    view: u64,
    /// Live queries by collection and query id.
    windows: HashMap<(String, String), queries::Window>,
}

/// How [`Client::reconnect`] came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resumed {
    /// The same connection (session, channels), sent only the models that changed.
    Changes,
    /// The same connection, sent a snapshot (the server's history did not reach back).
    Snapshot,
    /// A new connection: the old one was gone (or the server does not resume).
    New,
}

impl Client {
    /// Connects and waits for the `hello` and the first snapshot.
    pub async fn connect(url: &str) -> Result<Client, ClientError> {
        Client::connect_with(url).await
    }

    /// Connects to the first of `urls` that answers (the nodes of a cluster, in your order).
    /// The error of the last one if none does.
    pub async fn connect_any(urls: &[&str]) -> Result<Client, ClientError> {
        let mut last = ClientError::Transport("no URL given".to_owned());
        for url in urls {
            match Client::connect(url).await {
                Ok(client) => return Ok(client),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Connects with a request of your own (headers such as `Cookie` or `Authorization` for the
    /// server's `authenticate` hook: `let mut r = url.into_client_request()?;
    /// r.headers_mut().insert(...)`) and waits for the `hello` and the first snapshot. A refused
    /// upgrade is a [`ClientError::Transport`] naming the HTTP status.
    pub async fn connect_with(
        request: impl tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin,
    ) -> Result<Client, ClientError> {
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let mut client = Client {
            ws: Some(ws),
            collections: HashMap::new(),
            conn: 0,
            next_id: 0,
            log: Vec::new(),
            inbox: VecDeque::new(),
            emits: Vec::new(),
            timeout: Duration::from_secs(10),
            token: String::new(),
            epoch: 0,
            seq: 0,
            view: 0,
            windows: HashMap::new(),
        };
        client.wait_for(|m| m["t"] == "snapshot").await?;
        Ok(client)
    }

    /// Sets how long requests wait for their answer (default 10 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// This connection's id, from `hello`.
    pub fn conn_id(&self) -> u64 {
        self.conn
    }

    /// The models of one collection the client holds, by OID.
    pub fn collection(&self, name: &str) -> BTreeMap<u64, Attrs> {
        self.collections.get(name).cloned().unwrap_or_default()
    }

    /// One model, if the client holds it.
    pub fn model(&self, collection: &str, oid: u64) -> Option<&Attrs> {
        self.collections.get(collection)?.get(&oid)
    }

    /// All collections.
    pub fn collections(&self) -> &HashMap<String, BTreeMap<u64, Attrs>> {
        &self.collections
    }

    /// Every message received so far.
    pub fn log(&self) -> &[Value] {
        &self.log
    }

    /// Events the server emitted to this client so far: (name, data).
    pub fn emitted(&self) -> &[(String, Value)] {
        &self.emits
    }

    /// Sends a raw text frame (for tests of bad input).
    pub async fn send_raw(&mut self, text: impl Into<String>) -> Result<(), ClientError> {
        let text: String = text.into();
        self.socket()?
            .send(Message::text(text))
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))
    }

    /// Sends a raw WebSocket message (for tests of binary or odd frames).
    pub async fn send_message(&mut self, msg: Message) -> Result<(), ClientError> {
        self.socket()?
            .send(msg)
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))
    }

    fn socket(&mut self) -> Result<&mut WebSocketStream<MaybeTlsStream<TcpStream>>, ClientError> {
        self.ws
            .as_mut()
            .ok_or_else(|| ClientError::Transport("not connected (severed)".into()))
    }

    /// Drops the socket without a close frame, as a network failure does; the server keeps
    /// the connection for a resume ([`Client::reconnect`]) during its grace period.
    pub fn sever(&mut self) {
        self.ws = None;
    }

    fn next_request_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Sends a message object and returns its request id, without waiting.
    pub async fn send(&mut self, mut msg: Value) -> Result<u64, ClientError> {
        let id = self.next_request_id();
        msg["id"] = json!(id);
        self.send_raw(msg.to_string()).await?;
        Ok(id)
    }

    /// Changes attributes of a model and waits for the `ack`.
    pub async fn change(
        &mut self,
        collection: &str,
        oid: u64,
        set: Value,
    ) -> Result<(), ClientError> {
        let id = self
            .send(json!({"t": "change", "c": collection, "oid": oid, "set": set}))
            .await?;
        self.answer(id).await.map(|_| ())
    }

    /// Creates a model and waits for its OID.
    pub async fn add(&mut self, collection: &str, attrs: Value) -> Result<u64, ClientError> {
        let tmp = format!("r{}", self.next_id + 1);
        let id = self
            .send(json!({"t": "add", "c": collection, "tmp": tmp, "m": attrs}))
            .await?;
        let answer = self.answer(id).await?;
        answer["oid"]
            .as_u64()
            .ok_or_else(|| ClientError::Protocol(format!("`created` without oid: {answer}")))
    }

    /// Removes a model and waits for the `ack`.
    pub async fn remove(&mut self, collection: &str, oid: u64) -> Result<(), ClientError> {
        let id = self
            .send(json!({"t": "remove", "c": collection, "oid": oid}))
            .await?;
        self.answer(id).await.map(|_| ())
    }

    /// Calls an event handler and waits for its reply.
    pub async fn trigger<A: Serialize + ?Sized, R: DeserializeOwned>(
        &mut self,
        name: &str,
        args: &A,
    ) -> Result<R, ClientError> {
        let args = serde_json::to_value(args).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let id = self
            .send(json!({"t": "event", "name": name, "args": args}))
            .await?;
        let answer = self.answer(id).await?;
        serde_json::from_value(answer["ok"].clone())
            .map_err(|e| ClientError::Protocol(format!("reply of `{name}`: {e}")))
    }

    /// Waits for the answer to request `id`: `Ok` for ack/created/reply-ok, `Err(Refused)` for
    /// reject/error/reply-err.
    pub async fn answer(&mut self, id: u64) -> Result<Value, ClientError> {
        let msg = self
            .wait_for(|m| {
                m["id"] == id
                    && matches!(
                        m["t"].as_str(),
                        Some("ack" | "created" | "reject" | "reply" | "error")
                    )
            })
            .await?;
        match msg["t"].as_str() {
            Some("reject") | Some("error") => Err(ClientError::Refused(
                msg["reason"].as_str().unwrap_or_default().to_owned(),
            )),
            Some("reply") if msg.get("err").is_some() => Err(ClientError::Refused(
                msg["err"].as_str().unwrap_or_default().to_owned(),
            )),
            _ => Ok(msg),
        }
    }

    /// Reads and applies messages until one matches `pred`, which is returned. Messages read
    /// before it are applied too.
    pub async fn wait_for(
        &mut self,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Result<Value, ClientError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            while let Some(msg) = self.inbox.pop_front() {
                if pred(&msg) {
                    return Ok(msg);
                }
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(ClientError::Timeout);
            }
            self.read_frame(remaining).await?;
        }
    }

    /// Reads frames until `pred` holds on the client's state. Every message read is applied
    /// and consumed.
    pub async fn wait_until(
        &mut self,
        mut pred: impl FnMut(&Client) -> bool,
    ) -> Result<(), ClientError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        while !pred(self) {
            self.inbox.clear();
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(ClientError::Timeout);
            }
            self.read_frame(remaining).await?;
        }
        // The messages that led here are consumed: `wait_for` looks only at later ones.
        self.inbox.clear();
        Ok(())
    }

    /// Reads whatever arrives within `quiet`, and returns the messages read.
    pub async fn drain(&mut self, quiet: Duration) -> Result<Vec<Value>, ClientError> {
        let start = self.log.len();
        loop {
            match self.read_frame(quiet).await {
                Ok(()) => {}
                Err(ClientError::Timeout) => break,
                Err(e) => return Err(e),
            }
        }
        self.inbox.clear();
        Ok(self.log[start..].to_vec())
    }

    /// Reconnects to `url` as the same connection (docs/PROTOCOL.md, "Resume"): presents the
    /// resume token, epoch and last log position, and waits until the client caught up. The
    /// old socket is dropped without a close frame (as a network drop does). Requests sent
    /// again with [`Client::send_raw`] and their old ids are answered with their original
    /// answer, not carried out twice.
    pub async fn reconnect(&mut self, url: &str) -> Result<Resumed, ClientError> {
        let target = if self.token.is_empty() {
            url.to_owned()
        } else {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!(
                "{url}{sep}resume={}&epoch={}&seq={}&v={}",
                self.token, self.epoch, self.seq, self.view
            )
        };
        let (ws, _) = tokio_tungstenite::connect_async(target)
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        // Dropped, not closed: the server keeps the connection for the resume.
        drop(self.ws.replace(ws));
        self.inbox.clear();
        let hello = self.wait_for(|m| m["t"] == "hello").await?;
        if hello["resumed"] != true {
            self.wait_for(|m| m["t"] == "snapshot").await?;
            // A new connection has none of the old one's queries: run them again.
            self.requery().await?;
            return Ok(Resumed::New);
        }
        let done = self.wait_for(|m| m["t"] == "resumed").await?;
        Ok(if done["full"] == true {
            Resumed::Snapshot
        } else {
            Resumed::Changes
        })
    }

    /// [`Client::reconnect`] to the first of `urls` that answers, with the index of the one it
    /// reached. A connection resumes only on the server that held it: on another node of a
    /// cluster it is [`Resumed::New`] (a new session and a snapshot).
    pub async fn reconnect_any(&mut self, urls: &[&str]) -> Result<(Resumed, usize), ClientError> {
        let mut last = ClientError::Transport("no URL given".to_owned());
        for (i, url) in urls.iter().enumerate() {
            match self.reconnect(url).await {
                Ok(resumed) => return Ok((resumed, i)),
                Err(e @ ClientError::Transport(_)) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// The last log position the server's frames said they reflect.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Closes the connection.
    pub async fn close(mut self) {
        if let Some(ws) = self.ws.as_mut() {
            let _ = ws.close(None).await;
        }
    }

    async fn read_frame(&mut self, within: Duration) -> Result<(), ClientError> {
        let ws = self.socket()?;
        let msg = match tokio::time::timeout(within, ws.next()).await {
            Err(_) => return Err(ClientError::Timeout),
            Ok(None) => return Err(ClientError::Transport("connection closed".into())),
            Ok(Some(Err(e))) => return Err(ClientError::Transport(e.to_string())),
            Ok(Some(Ok(msg))) => msg,
        };
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(_) => {
                return Err(ClientError::Transport("connection closed by server".into()));
            }
            _ => return Ok(()),
        };
        let value: Value = serde_json::from_str(text.as_str())
            .map_err(|e| ClientError::Protocol(format!("bad JSON from server: {e}")))?;
        match value {
            Value::Array(items) => {
                for item in items {
                    self.apply(item)?;
                }
            }
            other => self.apply(other)?,
        }
        Ok(())
    }

    fn apply(&mut self, msg: Value) -> Result<(), ClientError> {
        let coll = msg["c"].as_str().unwrap_or_default().to_owned();
        match msg["t"].as_str() {
            Some("hello") => {
                self.conn = msg["conn"].as_u64().unwrap_or_default();
                self.epoch = msg["epoch"].as_u64().unwrap_or_default();
                self.token = msg["token"].as_str().unwrap_or_default().to_owned();
            }
            Some("at") => {
                self.seq = msg["seq"].as_u64().unwrap_or(self.seq);
                self.view = msg["v"].as_u64().unwrap_or(self.view);
            }
            Some("resumed") => self.seq = msg["seq"].as_u64().unwrap_or(self.seq),
            Some("snapshot") => {
                self.seq = msg["seq"].as_u64().unwrap_or(self.seq);
                let data = msg["data"]
                    .as_object()
                    .ok_or_else(|| ClientError::Protocol("snapshot without data".into()))?;
                self.collections.clear();
                for (name, models) in data {
                    let mut map = BTreeMap::new();
                    for m in models.as_array().into_iter().flatten() {
                        let (oid, attrs) = split_oid(m)?;
                        map.insert(oid, attrs);
                    }
                    self.collections.insert(name.clone(), map);
                }
            }
            Some("add") => {
                let (oid, attrs) = split_oid(&msg["m"])?;
                self.collections.entry(coll).or_default().insert(oid, attrs);
            }
            Some("created") if !msg["m"].is_null() => {
                let (oid, attrs) = split_oid(&msg["m"])?;
                self.collections.entry(coll).or_default().insert(oid, attrs);
            }
            Some("change") => {
                let oid = msg["oid"]
                    .as_u64()
                    .ok_or_else(|| ClientError::Protocol(format!("change without oid: {msg}")))?;
                let model = self
                    .collections
                    .entry(coll.clone())
                    .or_default()
                    .get_mut(&oid)
                    .ok_or_else(|| {
                        ClientError::Protocol(format!("change for unknown model {coll}/{oid}"))
                    })?;
                for (k, v) in msg["set"].as_object().into_iter().flatten() {
                    model.insert(k.clone(), v.clone());
                }
                for k in msg["unset"].as_array().into_iter().flatten() {
                    model.remove(k.as_str().unwrap_or_default());
                }
            }
            Some("remove") => {
                let oid = msg["oid"].as_u64().unwrap_or_default();
                self.collections.entry(coll).or_default().remove(&oid);
            }
            Some("window") => self.apply_window(&msg)?,
            Some("emit") => self.emits.push((
                msg["name"].as_str().unwrap_or_default().to_owned(),
                msg["data"].clone(),
            )),
            _ => {}
        }
        self.log.push(msg.clone());
        self.inbox.push_back(msg);
        Ok(())
    }
}

/// Typed access to the synced collections, through the models' own encoding (see the module
/// documentation).
impl Client {
    /// The models of collection `C` the client holds, decoded, in OID order. Attributes the
    /// connection may not read keep their `Default` value.
    pub fn models<C: Collection>(&self) -> Result<Vec<Entry<C>>, ClientError> {
        self.collections
            .get(C::NAME)
            .into_iter()
            .flatten()
            .map(|(oid, attrs)| Ok((Oid::from_raw(*oid), decode_model::<C::Model>(attrs)?)))
            .collect()
    }

    /// One model of collection `C`, decoded, if the client holds it.
    pub fn get<C: Collection>(&self, oid: Oid<C::Model>) -> Result<Option<C::Model>, ClientError> {
        self.model(C::NAME, oid.raw())
            .map(decode_model::<C::Model>)
            .transpose()
    }

    /// The first model of collection `C` (in OID order) matching `pred`, with its OID.
    pub fn find<C: Collection>(
        &self,
        mut pred: impl FnMut(&C::Model) -> bool,
    ) -> Result<Option<Entry<C>>, ClientError> {
        Ok(self.models::<C>()?.into_iter().find(|(_, m)| pred(m)))
    }

    /// Changes one attribute of a model and waits for the `ack`; the new value is in the
    /// client's copy by then. A refusal is `Err(Refused(reason))` and changes nothing.
    pub async fn set<C: Collection>(
        &mut self,
        oid: Oid<C::Model>,
        change: <C::Model as Model>::Change,
    ) -> Result<(), ClientError> {
        self.set_all::<C>(oid, [change]).await
    }

    /// Changes several attributes of a model at once (all or nothing) and waits for the `ack`.
    pub async fn set_all<C: Collection>(
        &mut self,
        oid: Oid<C::Model>,
        changes: impl IntoIterator<Item = <C::Model as Model>::Change>,
    ) -> Result<(), ClientError> {
        let mut set = Map::new();
        for change in changes {
            let (name, value) = encode_change::<C::Model>(change);
            set.insert(name.to_owned(), value);
        }
        self.change(C::NAME, oid.raw(), Value::Object(set)).await
    }

    /// Creates a model in collection `C` and waits for its OID. Every public attribute is sent,
    /// except read-only ones left at their `Default` (the server refuses a client-written
    /// read-only attribute; it fills them itself, e.g. in `on_create`).
    pub async fn create<C: Collection>(
        &mut self,
        model: C::Model,
    ) -> Result<Oid<C::Model>, ClientError> {
        let defaults = C::Model::default();
        let mut attrs = Map::new();
        for &attr in <C::Model as Model>::ATTRS {
            let value = model.attr_value(attr);
            if attr.is_readonly() && value == defaults.attr_value(attr) {
                continue;
            }
            attrs.insert(attr.name().to_owned(), value);
        }
        self.add(C::NAME, Value::Object(attrs))
            .await
            .map(Oid::from_raw)
    }

    /// Removes a model of collection `C` and waits for the `ack`.
    pub async fn destroy<C: Collection>(&mut self, oid: Oid<C::Model>) -> Result<(), ClientError> {
        self.remove(C::NAME, oid.raw()).await
    }

    /// Reads messages until the model `oid` of collection `C` is held and satisfies `pred`;
    /// returns it.
    pub async fn wait_model<C: Collection>(
        &mut self,
        oid: Oid<C::Model>,
        mut pred: impl FnMut(&C::Model) -> bool,
    ) -> Result<C::Model, ClientError> {
        let mut found = None;
        let mut failure = None;
        self.wait_until(|c| match c.get::<C>(oid) {
            Ok(Some(m)) if pred(&m) => {
                found = Some(m);
                true
            }
            Ok(_) => false,
            Err(e) => {
                failure = Some(e);
                true
            }
        })
        .await?;
        match (found, failure) {
            (_, Some(e)) => Err(e),
            (Some(m), None) => Ok(m),
            (None, None) => Err(ClientError::Timeout),
        }
    }
}

/// Decodes a model the client holds (attributes by wire name) with the model's own decoders,
/// starting from its `Default`.
pub fn decode_model<M: Model>(attrs: &Attrs) -> Result<M, ClientError> {
    let mut model = M::default();
    for (name, value) in attrs {
        let attr = M::Attr::from_name(name).ok_or_else(|| {
            ClientError::Protocol(format!(
                "the server sent attribute `{name}`, which model `{}` does not have",
                M::NAME
            ))
        })?;
        let change = M::decode_change(attr, value)
            .map_err(|e| ClientError::Protocol(format!("the server sent {e}")))?;
        model.apply(change);
    }
    Ok(model)
}

/// The wire name and JSON value of a typed change, encoded as the server encodes the attribute.
pub fn encode_change<M: Model>(change: M::Change) -> (&'static str, Value) {
    let attr = M::change_attr(&change);
    let mut model = M::default();
    model.apply(change);
    (attr.name(), model.attr_value(attr))
}

fn split_oid(m: &Value) -> Result<(u64, Attrs), ClientError> {
    let mut attrs = m
        .as_object()
        .cloned()
        .ok_or_else(|| ClientError::Protocol(format!("model is not an object: {m}")))?;
    let oid = attrs
        .remove("oid")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| ClientError::Protocol(format!("model without oid: {m}")))?;
    Ok((oid, attrs))
}
