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
//! # fn run(world: World) -> Result<(), WorldError> {
//! let oid = world.collection::<Players>().insert(Player { name: "Jim".into(), ..Default::default() });
//! world.collection::<Players>().update(oid, |p| { p.set_x(10); })?;
//! # Ok(()) }
//! ```
//!
//! Do not call the world from inside a permission hook: hooks run while the engine holds its
//! lock, and the call would wait for itself.

use std::any::Any;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use crate::collection::Collection;
use crate::conn::ConnId;
use crate::engine::Announce;
use crate::error::WorldError;
use crate::model::{AttrSet, Model, Oid};
use crate::storage::StoreError;

/// The object-safe face of the engine, so [`World`] needs no session type parameter.
pub(crate) trait WorldCore: Send + Sync {
    fn coll_index(&self, type_id: std::any::TypeId) -> Option<usize>;
    fn insert(&self, idx: usize, model: Box<dyn Any>) -> Result<u64, StoreError>;
    fn update(
        &self,
        idx: usize,
        oid: u64,
        f: &mut dyn FnMut(&mut dyn Any, &mut AttrSet),
    ) -> Result<bool, StoreError>;
    fn remove(&self, idx: usize, oid: u64) -> Result<Option<Box<dyn Any + Send>>, StoreError>;
    fn announce(&self, idx: usize, what: Announce) -> bool;
    fn read(&self, idx: usize, f: &mut dyn FnMut(&dyn Any));
    fn broadcast(&self, msg: Bytes);
    fn connection_ids(&self) -> Vec<ConnId>;
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
        crate::__private::encode(data, &mut json);
        self.core.broadcast(crate::wire::emit(name, &json));
    }

    /// Ids of the connected clients (those that got their first snapshot).
    pub fn connections(&self) -> Vec<ConnId> {
        self.core.connection_ids()
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

impl<C: Collection> Coll<C> {
    /// Adds a model; every connection that may see it gets an `add`. Returns its new OID.
    ///
    /// # Panics
    /// If the storage refuses or fails to store it (only possible with a middleware that
    /// refuses, or a durable backend); use [`Coll::try_insert`] to handle that.
    pub fn insert(&self, model: C::Model) -> Oid<C::Model> {
        match self.try_insert(model) {
            Ok(oid) => oid,
            Err(e) => panic!("{e}"),
        }
    }

    /// Adds a model through the storage; every connection that may see it gets an `add`.
    pub fn try_insert(&self, model: C::Model) -> Result<Oid<C::Model>, WorldError> {
        self.core
            .insert(self.idx, Box::new(model))
            .map(Oid::from_raw)
            .map_err(|e| self.storage_error("insert", None, e))
    }

    fn storage_error(&self, op: &'static str, oid: Option<u64>, e: StoreError) -> WorldError {
        WorldError::Storage {
            collection: C::NAME,
            model: <C::Model as Model>::NAME,
            op,
            oid,
            reason: e.to_string(),
        }
    }

    /// Changes a model through its tracking view (`p.set_x(10)`); connections get exactly the
    /// attributes the setters touched, as far as they may read them. With a storage that keeps
    /// the collection, the new model is stored first; if that fails the model is restored and
    /// nothing is sent.
    pub fn update<R>(
        &self,
        oid: Oid<C::Model>,
        f: impl for<'a> FnOnce(&mut <C::Model as Model>::Mut<'a>) -> R,
    ) -> Result<R, WorldError> {
        let mut f = Some(f);
        let mut result = None;
        let found = self
            .core
            .update(self.idx, oid.raw(), &mut |any, changed| {
                if let (Some(model), Some(f)) = (any.downcast_mut::<C::Model>(), f.take()) {
                    let mut view = model.view_mut(changed);
                    result = Some(f(&mut view));
                }
            })
            .map_err(|e| self.storage_error("update", Some(oid.raw()), e))?;
        match result {
            Some(r) if found => Ok(r),
            _ => Err(WorldError::NoSuchModel {
                collection: C::NAME,
                oid: oid.raw(),
            }),
        }
    }

    /// Replaces a model wholesale; every public attribute counts as changed.
    pub fn replace(&self, oid: Oid<C::Model>, model: C::Model) -> Result<(), WorldError> {
        let mut model = Some(model);
        let found = self
            .core
            .update(self.idx, oid.raw(), &mut |any, changed| {
                if let (Some(slot), Some(new)) = (any.downcast_mut::<C::Model>(), model.take()) {
                    *slot = new;
                    *changed = AttrSet::first(<C::Model as Model>::ATTRS.len());
                }
            })
            .map_err(|e| self.storage_error("replace", Some(oid.raw()), e))?;
        if found {
            Ok(())
        } else {
            Err(WorldError::NoSuchModel {
                collection: C::NAME,
                oid: oid.raw(),
            })
        }
    }

    /// Removes a model; every connection holding it gets a `remove`. `None` if there is no such
    /// model, or if the storage refused to delete it (logged; see [`Coll::try_remove`]).
    pub fn remove(&self, oid: Oid<C::Model>) -> Option<C::Model> {
        match self.try_remove(oid) {
            Ok(model) => Some(model),
            Err(WorldError::NoSuchModel { .. }) => None,
            Err(e) => {
                tracing::error!(error = %e, "remove failed");
                None
            }
        }
    }

    /// Removes a model through the storage; every connection holding it gets a `remove`.
    pub fn try_remove(&self, oid: Oid<C::Model>) -> Result<C::Model, WorldError> {
        self.core
            .remove(self.idx, oid.raw())
            .map_err(|e| self.storage_error("remove", Some(oid.raw()), e))?
            .and_then(|b| b.downcast::<C::Model>().ok())
            .map(|b| *b)
            .ok_or(WorldError::NoSuchModel {
                collection: C::NAME,
                oid: oid.raw(),
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

    /// Runs `f` over the models, in OID order, under the engine lock. Keep it short, and do
    /// not call the world from inside it.
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
