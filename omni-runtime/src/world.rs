//! Server-side access to the collections: [`World`].
//!
//! Every mutation made through the world goes through the sync engine, which records which
//! attributes changed and sends each connection exactly what it may see of it.
//!
//! ```no_run
//! # use omni_runtime::prelude::*;
//! # #[derive(Default)] struct Session;
//! # #[derive(Model, Clone, Default)] struct Player { name: String, x: i32 }
//! # impl Permissions<Session> for Player {}
//! # #[collection(model = Player)] struct Players;
//! # impl CollectionPermissions<Session> for Players {}
//! # async fn run(world: World) -> Result<(), WorldError> {
//! let players = world.collection::<Players>();
//! let oid = players.insert(Player { name: "Jim".into(), ..Default::default() }).await?;
//! players.update(oid, |p| { p.set_x(10); }).await?;
//! # Ok(()) }
//! ```
//!
//! A write is validated when it is made and applied once the storage made it durable; its
//! [`Write`] resolves then. Reads (`get`, `find`, `all`, `read`) see what is applied. Calling the
//! world from inside a permission hook (which runs under the engine's lock) panics with a
//! message instead of waiting for itself.

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::Serialize;

use crate::collection::Collection;
use crate::engine::{Announce, Refusal, ServerWrite, WorldCore};
use crate::error::WorldError;
use crate::ids::ConnId;
use crate::model::{AttrSet, Model, Oid};

/// A write of server code on its way: validated when it was made, applied once the storage
/// made it durable. Await it for its result, which comes once every client that may see the
/// change has it queued; a write that is not awaited is still carried out.
#[must_use = "a write is carried out even if not awaited, but only awaiting it tells whether it was applied"]
pub struct Write<T> {
    inner: Pin<Box<dyn Future<Output = Result<T, WorldError>> + Send>>,
}

impl<T> std::fmt::Debug for Write<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Write")
    }
}

impl<T> Future for Write<T> {
    type Output = Result<T, WorldError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<T: Send + 'static> Write<T> {
    fn new(f: impl Future<Output = Result<T, WorldError>> + Send + 'static) -> Self {
        Write { inner: Box::pin(f) }
    }
}

/// Handle to all collections of a running server. Cheap to clone; usable from any task.
#[derive(Clone)]
pub struct World {
    pub(crate) core: Arc<dyn WorldCore>,
}

impl World {
    /// The collection `C`.
    ///
    /// # Panics
    /// If `C` was not registered with [`Omni::collection`](crate::Omni::collection); use
    /// [`World::try_collection`] to get an error instead.
    pub fn collection<C: Collection>(&self) -> Coll<C> {
        match self.try_collection::<C>() {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    /// The collection `C`, or an error if it was not registered.
    pub fn try_collection<C: Collection>(&self) -> Result<Coll<C>, WorldError> {
        let idx = self.core.coll_index(std::any::TypeId::of::<C>()).ok_or(
            WorldError::NoSuchCollection {
                collection: C::NAME,
            },
        )?;
        Ok(Coll {
            core: self.core.clone(),
            idx,
            _c: PhantomData,
        })
    }

    /// Sends an event to every connected client (`Omni.on(name, cb)` on the client).
    pub fn broadcast<T: Serialize + ?Sized>(&self, name: &str, data: &T) {
        let mut json = Vec::new();
        crate::protocol::encode::json(data, &mut json);
        self.core
            .broadcast(crate::protocol::encode::emit(name, &json));
    }

    /// Ids of the connected clients (those that got their first snapshot), on this server.
    pub fn connections(&self) -> Vec<ConnId> {
        self.core.connection_ids()
    }

    /// The commit log's epoch and the sequence number of the last applied commit.
    pub fn log_position(&self) -> (u64, u64) {
        self.core.log()
    }
}

/// A typed handle to one collection. Cheap to clone.
pub struct Coll<C: Collection> {
    core: Arc<dyn WorldCore>,
    idx: usize,
    _c: PhantomData<fn() -> C>,
}

impl<C: Collection> Clone for Coll<C> {
    fn clone(&self) -> Self {
        Coll {
            core: self.core.clone(),
            idx: self.idx,
            _c: PhantomData,
        }
    }
}

type Models<M> = BTreeMap<u64, M>;

fn refusal<C: Collection>(op: &'static str, oid: Option<u64>, refusal: Refusal) -> WorldError {
    match refusal {
        Refusal::NoSuchModel { oid, .. } => WorldError::NoSuchModel {
            collection: C::NAME,
            oid,
        },
        Refusal::Storage { error, .. } => WorldError::Storage {
            collection: C::NAME,
            model: <C::Model as Model>::NAME,
            op,
            oid,
            reason: error.to_string(),
        },
        other => WorldError::Storage {
            collection: C::NAME,
            model: <C::Model as Model>::NAME,
            op,
            oid,
            reason: other.to_string(),
        },
    }
}

impl<C: Collection> Coll<C> {
    /// Adds a model through the storage; once it is durable, every connection that may see it
    /// gets an `add`, and the write resolves to its new OID.
    pub fn insert(&self, model: C::Model) -> Write<Oid<C::Model>> {
        let pending = self.core.write(
            self.idx,
            ServerWrite::Insert(Box::new(model)),
            "Coll::insert",
        );
        Write::new(async move {
            pending
                .wait()
                .await
                .map(|a| Oid::from_raw(a.oid))
                .map_err(|e| refusal::<C>("insert", None, e))
        })
    }

    /// Finds the first model (in OID order, counting writes still on their way) matching
    /// `pred`, or inserts `make()` if there is none, atomically: two concurrent calls with the
    /// same predicate never both insert. Resolves to the OID and whether it was inserted.
    pub fn find_or_insert(
        &self,
        mut pred: impl FnMut(&C::Model) -> bool,
        make: impl FnOnce() -> C::Model,
    ) -> Write<(Oid<C::Model>, bool)> {
        let mut make = Some(make);
        let mut pred = move |any: &dyn Any| any.downcast_ref::<C::Model>().is_some_and(&mut pred);
        let mut make = move || -> Box<dyn Any + Send> {
            Box::new(make.take().map(|f| f()).unwrap_or_default())
        };
        let pending = self.core.write(
            self.idx,
            ServerWrite::FindOrInsert {
                pred: &mut pred,
                make: &mut make,
            },
            "Coll::find_or_insert",
        );
        Write::new(async move {
            pending
                .wait()
                .await
                .map(|a| (Oid::from_raw(a.oid), !a.existing))
                .map_err(|e| refusal::<C>("insert", None, e))
        })
    }

    /// Changes a model through its tracking view (`p.set_x(10)`); `f` runs at once, on the
    /// model as the last accepted write left it. Once the change is durable, connections get
    /// exactly the attributes whose value changed, as far as they may read them, and the write
    /// resolves to what `f` returned. If the storage refuses, nothing changes.
    pub fn update<R: Send + 'static>(
        &self,
        oid: Oid<C::Model>,
        f: impl for<'a> FnOnce(&mut <C::Model as Model>::Mut<'a>) -> R,
    ) -> Write<R> {
        let mut f = Some(f);
        let mut result = None;
        let pending = self.core.write(
            self.idx,
            ServerWrite::Update {
                oid: oid.raw(),
                f: &mut |any, changed| {
                    if let (Some(model), Some(f)) = (any.downcast_mut::<C::Model>(), f.take()) {
                        let mut view = model.view_mut(changed);
                        result = Some(f(&mut view));
                    }
                },
                merge: true,
            },
            "Coll::update",
        );
        Write::new(async move {
            pending
                .wait()
                .await
                .map_err(|e| refusal::<C>("update", Some(oid.raw()), e))?;
            result.ok_or(WorldError::NoSuchModel {
                collection: C::NAME,
                oid: oid.raw(),
            })
        })
    }

    /// Like [`Coll::update`], for a read-modify-write (a counter, a list): on a node of a
    /// cluster, when another node's write to the model commits first, `f` runs again on the
    /// newer model, so no change is lost. ([`Coll::update`] keeps the fields its `f` changed
    /// over the other write's, which loses an increment.) On one server `f` runs once, at once.
    pub fn update_with<R, F>(&self, oid: Oid<C::Model>, mut f: F) -> Write<R>
    where
        R: Send + 'static,
        F: for<'a> FnMut(&mut <C::Model as Model>::Mut<'a>) -> R + Send + 'static,
    {
        let (core, idx) = (self.core.clone(), self.idx);
        let run = move |core: &Arc<dyn WorldCore>, f: &mut F| {
            let mut result = None;
            let pending = core.write(
                idx,
                ServerWrite::Update {
                    oid: oid.raw(),
                    f: &mut |any, changed| {
                        if let Some(model) = any.downcast_mut::<C::Model>() {
                            let mut view = model.view_mut(changed);
                            result = Some(f(&mut view));
                        }
                    },
                    merge: false,
                },
                "Coll::update_with",
            );
            (pending, result)
        };
        let (mut pending, mut result) = run(&core, &mut f);
        Write::new(async move {
            for _ in 0..64 {
                match pending.wait().await {
                    Ok(_) => {
                        return result.ok_or(WorldError::NoSuchModel {
                            collection: C::NAME,
                            oid: oid.raw(),
                        });
                    }
                    Err(Refusal::Conflict { .. }) => (pending, result) = run(&core, &mut f),
                    Err(e) => return Err(refusal::<C>("update", Some(oid.raw()), e)),
                }
            }
            Err(refusal::<C>(
                "update",
                Some(oid.raw()),
                Refusal::Conflict {
                    coll: C::NAME,
                    model: <C::Model as Model>::NAME,
                    oid: oid.raw(),
                },
            ))
        })
    }

    /// Replaces a model wholesale; every public attribute whose value differs counts as changed.
    pub fn replace(&self, oid: Oid<C::Model>, model: C::Model) -> Write<()> {
        let mut model = Some(model);
        let pending = self.core.write(
            self.idx,
            ServerWrite::Update {
                oid: oid.raw(),
                f: &mut |any, changed| {
                    if let (Some(slot), Some(new)) = (any.downcast_mut::<C::Model>(), model.take())
                    {
                        *slot = new;
                        *changed = AttrSet::first(<C::Model as Model>::ATTRS.len());
                    }
                },
                merge: true,
            },
            "Coll::replace",
        );
        Write::new(async move {
            pending
                .wait()
                .await
                .map(drop)
                .map_err(|e| refusal::<C>("replace", Some(oid.raw()), e))
        })
    }

    /// Removes a model through the storage; once durable, every connection holding it gets a
    /// `remove`, and the write resolves to the removed model.
    pub fn remove(&self, oid: Oid<C::Model>) -> Write<C::Model> {
        let pending = self.core.write(
            self.idx,
            ServerWrite::Remove { oid: oid.raw() },
            "Coll::remove",
        );
        Write::new(async move {
            pending
                .wait()
                .await
                .map_err(|e| refusal::<C>("remove", Some(oid.raw()), e))?
                .removed
                .and_then(|b| b.downcast::<C::Model>().ok())
                .map(|b| *b)
                .ok_or(WorldError::NoSuchModel {
                    collection: C::NAME,
                    oid: oid.raw(),
                })
        })
    }

    /// Announces a model created outside the engine, e.g. written to the database by another
    /// program, under the id it got there (Backbone.IO's `backend.emit('created', model)`):
    /// it is added to the collection and sent to every connection that may see it, without
    /// going through the storage. `false` if the OID is already in use.
    pub fn announce_created(&self, oid: Oid<C::Model>, model: C::Model) -> bool {
        oid.raw() != 0
            && self
                .core
                .announce(self.idx, Announce::Created(oid.raw(), Box::new(model)))
    }

    /// Announces the new value of a model changed outside the engine
    /// (`backend.emit('updated', model)`): connections get the attributes whose value differs,
    /// as far as they may read them; the storage is not called. `false` if there is no such
    /// model.
    pub fn announce_updated(&self, oid: Oid<C::Model>, model: C::Model) -> bool {
        self.core
            .announce(self.idx, Announce::Updated(oid.raw(), Box::new(model)))
    }

    /// Announces that a model was deleted outside the engine (`backend.emit('deleted', …)`):
    /// connections holding it get a `remove`; the storage is not called. `false` if there is no
    /// such model.
    pub fn announce_deleted(&self, oid: Oid<C::Model>) -> bool {
        self.core.announce(self.idx, Announce::Deleted(oid.raw()))
    }

    fn with_models<R>(&self, f: impl FnOnce(&Models<C::Model>) -> R) -> R {
        let mut f = Some(f);
        let mut result = None;
        self.core.read(self.idx, &mut |any| {
            if let (Some(models), Some(f)) = (any.downcast_ref::<Models<C::Model>>(), f.take()) {
                result = Some(f(models));
            }
        });
        match result {
            Some(r) => r,
            None => unreachable!("collection `{}` holds models of another type", C::NAME),
        }
    }

    /// Runs `f` over the applied models, in OID order, under the engine lock. Keep it short;
    /// calling the world from inside it panics (it would deadlock).
    pub fn read<R>(
        &self,
        f: impl FnOnce(&mut dyn Iterator<Item = (Oid<C::Model>, &C::Model)>) -> R,
    ) -> R {
        self.with_models(|models| f(&mut models.iter().map(|(oid, m)| (Oid::from_raw(*oid), m))))
    }

    /// A copy of one model.
    pub fn get(&self, oid: Oid<C::Model>) -> Option<C::Model> {
        self.with_models(|models| models.get(&oid.raw()).cloned())
    }

    /// The first model (in OID order) matching `pred`, with its OID.
    pub fn find(
        &self,
        mut pred: impl FnMut(&C::Model) -> bool,
    ) -> Option<(Oid<C::Model>, C::Model)> {
        self.with_models(|models| {
            models
                .iter()
                .find(|(_, m)| pred(m))
                .map(|(o, m)| (Oid::from_raw(*o), m.clone()))
        })
    }

    /// Copies of all models, in OID order.
    pub fn all(&self) -> Vec<(Oid<C::Model>, C::Model)> {
        self.with_models(|models| {
            models
                .iter()
                .map(|(o, m)| (Oid::from_raw(*o), m.clone()))
                .collect()
        })
    }

    /// Number of models.
    pub fn len(&self) -> usize {
        self.with_models(|models| models.len())
    }

    /// Whether the collection is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
