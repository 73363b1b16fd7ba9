//! The default backend, and a logging middleware.

use super::{
    Backend, BoxFuture, Middleware, Next, StoreError, StoreReply, StoreRequest, StoredModel,
};

/// The default backend: models live only in the engine's memory, as in Omni.js; nothing survives
/// a restart. Every request succeeds at once.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryStore;

impl Backend for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }
    fn load(&self, _: &'static str) -> Result<Option<Vec<StoredModel>>, StoreError> {
        Ok(None)
    }
    fn seed(&self, _: &'static str, _: &[StoredModel]) -> Result<(), StoreError> {
        Ok(())
    }
    fn last_oid(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
    fn call(&self, req: StoreRequest) -> BoxFuture<Result<StoreReply, StoreError>> {
        Box::pin(std::future::ready(Ok(StoreReply::done(&req))))
    }
}

/// A middleware that logs every request (method, collection, OID, connection, outcome) through
/// `tracing` at `info` level, and passes it on.
#[derive(Debug, Default, Clone, Copy)]
pub struct Logging;

impl Middleware for Logging {
    fn call(&self, req: StoreRequest, next: Next) -> BoxFuture<Result<StoreReply, StoreError>> {
        Box::pin(async move {
            let (method, collection, oid) = (req.method, req.collection, req.oid);
            let conn = req
                .conn
                .map(|c| c.to_string())
                .unwrap_or_else(|| "server".into());
            let changed = req.changed.clone();
            let result = next.run(req).await;
            match &result {
                Ok(reply) => {
                    tracing::info!(%method, collection, oid = reply.oid, %conn, ?changed, "storage")
                }
                Err(e) => {
                    tracing::warn!(%method, collection, oid, %conn, error = %e, "storage refused")
                }
            }
            result
        })
    }
}
