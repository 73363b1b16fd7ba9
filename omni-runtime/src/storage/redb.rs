//! The durable backend: one [redb](https://docs.rs/redb) file, group-committed.

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::{Backend, BoxFuture, Method, StoreError, StoreReply, StoreRequest, StoredModel};

const META: TableDefinition<'static, &str, u64> = TableDefinition::new("omni_meta");
const LAST_OID: &str = "last_oid";
/// How many batches were ever committed; mirrored, after each commit, into a file beside the
/// store (`<file>.commits`), so a store that opens with fewer (a damaged last page that redb
/// rolled back) is noticed.
const COMMITS: &str = "commits";

/// The largest OID ever stored or reserved, from the meta table.
fn last_oid(meta: &impl ReadableTable<&'static str, u64>) -> Result<u64, StoreError> {
    Ok(meta
        .get(LAST_OID)
        .map_err(StoreError::failed)?
        .map(|v| v.value())
        .unwrap_or(0))
}

fn table(collection: &str) -> String {
    format!("models:{collection}")
}

/// A durable backend in one file, on [redb](https://docs.rs/redb): a pure-Rust, ACID, embedded
/// key-value store (no C toolchain, no server, crash-safe with copy-on-write B-trees and
/// checksummed commits). Each persisted collection is a table from OID to the model's JSON.
///
/// Writes are group-committed: [`Backend::call`] queues a write and a writer thread commits
/// everything queued in one fsynced transaction; the call's future resolves when that
/// transaction is on disk. The engine applies a write, and any client (its writer included)
/// sees it, only then: a restart, even after `SIGKILL`, loses nothing any client has seen, and
/// OIDs are never reused (they are reserved durably in blocks).
pub struct RedbStore {
    shared: Arc<Shared>,
    writer: Option<std::thread::JoinHandle<()>>,
    rolled_back: Option<(u64, u64)>,
}

struct Shared {
    db: redb::Database,
    /// `<file>.commits`: the commit count as of the last commit this process made, kept open
    /// and overwritten in place: one write per batch, no open/truncate/close (which took the
    /// durable store from ~16.9k to ~9.6k acknowledged writes/s; docs/BENCHMARKS.md).
    mirror: std::fs::File,
    queue: parking_lot::Mutex<Queue>,
    wake: parking_lot::Condvar,
    /// Writes per group commit (metrics).
    batch_writes: Histogram,
    /// Time of one group commit, fsync included (metrics).
    commit_seconds: Histogram,
}

#[derive(Default)]
struct Queue {
    ops: Vec<Op>,
    /// The highest OID reserved and not yet written to the meta table.
    reserve: u64,
    stop: bool,
}

struct Op {
    collection: &'static str,
    oid: u64,
    /// `None`: delete.
    doc: Option<Bytes>,
    /// Told the outcome of the transaction that carried the write.
    done: Box<dyn FnOnce(Result<(), String>) + Send>,
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore")
            .field("queued", &self.shared.queue.lock().ops.len())
            .finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens the store file, creating it if needed, and starts its writer thread.
    ///
    /// A file that exists but is empty is refused (it is not a redb file: an interrupted copy,
    /// a truncation), never silently started as an empty store. A file that was not closed
    /// cleanly (a crash, `SIGKILL`) is repaired by redb, which keeps the last transaction whose
    /// checksum verifies; the repair is logged at `warn` level.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        // redb panics on some damaged pages instead of returning an error: a damaged file is
        // refused with a message either way.
        std::panic::catch_unwind(|| Self::open_file(path)).unwrap_or_else(|panic| {
            Err(StoreError::failed(format!(
                "{} is damaged and cannot be opened (redb: {}): restore it from a backup",
                path.display(),
                crate::hooks::panic_message(&panic)
            )))
        })
    }

    fn open_file(path: &Path) -> Result<Self, StoreError> {
        if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
            return Err(StoreError::failed(format!(
                "{} is empty, not a redb data file (an interrupted copy or a truncation?): restore it from a backup, or delete it to start with an empty store",
                path.display()
            )));
        }
        let shown = path.display().to_string();
        let db = redb::Database::builder()
            .set_repair_callback(move |session| {
                if session.progress() == 0.0 {
                    tracing::warn!(
                        file = %shown,
                        "the data file was not closed cleanly and is being repaired: every transaction whose checksum verifies is kept, a damaged last one is rolled back"
                    );
                }
            })
            .create(path)
            .map_err(|e| StoreError::failed(format!("cannot open {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(StoreError::failed)?;
        let commits = {
            let meta = txn.open_table(META).map_err(StoreError::failed)?;
            meta.get(COMMITS)
                .map_err(StoreError::failed)?
                .map(|v| v.value())
                .unwrap_or(0)
        };
        txn.commit().map_err(StoreError::failed)?;
        let mut mirror = path.as_os_str().to_owned();
        mirror.push(".commits");
        let mirror = std::path::PathBuf::from(mirror);
        let mirrored = std::fs::read_to_string(&mirror)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        let rolled_back = mirrored.filter(|m| *m > commits).map(|m| (m, commits));
        if let Some((had, has)) = rolled_back {
            tracing::warn!(
                file = %path.display(),
                committed = had,
                found = has,
                "the data file holds fewer commits than were made to it: its last {} commit(s) were rolled back (a damaged page?), and the writes they carried are lost",
                had - has
            );
        }
        let mirror = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&mirror)
            .map_err(|e| StoreError::failed(format!("cannot open {}: {e}", mirror.display())))?;
        let shared = Arc::new(Shared {
            db,
            mirror,
            queue: parking_lot::Mutex::new(Queue::default()),
            wake: parking_lot::Condvar::new(),
            batch_writes: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            commit_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
        });
        let writer = std::thread::Builder::new()
            .name("omni-redb-writer".into())
            .spawn({
                let shared = shared.clone();
                move || writer(&shared)
            })
            .map_err(StoreError::failed)?;
        Ok(RedbStore {
            shared,
            writer: Some(writer),
            rolled_back,
        })
    }

    /// If the file opened with fewer commits than were made to it (its last transactions were
    /// rolled back, e.g. a damaged last page): how many were made, and how many it holds. Logged
    /// at `warn` level when it happens.
    pub fn rolled_back(&self) -> Option<(u64, u64)> {
        self.rolled_back
    }

    /// Queues a write; the receiver says when it is durable.
    fn queue(
        &self,
        collection: &'static str,
        oid: u64,
        doc: Option<Bytes>,
    ) -> Result<oneshot::Receiver<Result<(), String>>, StoreError> {
        let (done, rx) = oneshot::channel();
        {
            let mut queue = self.shared.queue.lock();
            if queue.stop {
                return Err(StoreError::failed("the store is closed"));
            }
            queue.ops.push(Op {
                collection,
                oid,
                doc,
                done: Box::new(move |r| {
                    let _ = done.send(r);
                }),
            });
        }
        self.shared.wake.notify_one();
        Ok(rx)
    }

    /// Blocks until every write queued so far is on disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        let (done, rx) = std::sync::mpsc::channel();
        {
            let mut queue = self.shared.queue.lock();
            queue.ops.push(Op {
                collection: "",
                oid: 0,
                doc: None,
                done: Box::new(move |r| {
                    let _ = done.send(r);
                }),
            });
        }
        self.shared.wake.notify_one();
        rx.recv()
            .map_err(|_| StoreError::failed("the store's writer stopped"))?
            .map_err(StoreError::failed)
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        self.shared.queue.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The writer thread: commits what is queued, one transaction per batch, until stopped.
fn writer(shared: &Shared) {
    use std::io::{Seek, SeekFrom, Write};
    loop {
        let (batch, reserve) = {
            let mut queue = shared.queue.lock();
            while queue.ops.is_empty() && queue.reserve == 0 && !queue.stop {
                shared.wake.wait(&mut queue);
            }
            if queue.ops.is_empty() && queue.reserve == 0 {
                return;
            }
            (
                std::mem::take(&mut queue.ops),
                std::mem::take(&mut queue.reserve),
            )
        };
        let started = std::time::Instant::now();
        let committed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            commit(&shared.db, &batch, reserve)
        }));
        shared
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        shared.batch_writes.observe(batch.len() as f64);
        let result = match committed {
            Ok(result) => result.map_err(|e| {
                tracing::error!(error = %e, writes = batch.len(), "redb commit failed");
                e.to_string()
            }),
            Err(panic) => {
                // redb panicked (a damaged page): this writer stops, and so does the store.
                let reason = format!(
                    "the store's writer stopped: redb panicked ({})",
                    crate::hooks::panic_message(&panic)
                );
                tracing::error!(
                    reason,
                    "redb commit panicked; the store accepts no more writes"
                );
                let stranded = {
                    let mut queue = shared.queue.lock();
                    queue.stop = true;
                    std::mem::take(&mut queue.ops)
                };
                for op in batch.into_iter().chain(stranded) {
                    (op.done)(Err(reason.clone()));
                }
                return;
            }
        };
        if result.is_err() && reserve > 0 {
            // Keep the reservation for the next batch.
            let mut queue = shared.queue.lock();
            queue.reserve = queue.reserve.max(reserve);
        }
        let commits = result.as_ref().ok().copied();
        let result = result.map(drop);
        for op in batch {
            (op.done)(result.clone());
        }
        // After the writers heard back, while the next batch gathers. Not fsynced: after a
        // crash the mirror may lag (no false alarm), never lead.
        if let Some(commits) = commits {
            // Fixed width, so a shorter number never leaves digits of a longer one behind.
            let mut file = &shared.mirror;
            let _ = file
                .seek(SeekFrom::Start(0))
                .and_then(|_| file.write_all(format!("{commits:020}\n").as_bytes()));
        }
    }
}

/// Commits one batch; returns the store's commit count.
fn commit(db: &redb::Database, batch: &[Op], reserve: u64) -> Result<u64, StoreError> {
    let txn = db.begin_write().map_err(StoreError::failed)?;
    let commits;
    {
        let mut meta = txn.open_table(META).map_err(StoreError::failed)?;
        commits = meta
            .get(COMMITS)
            .map_err(StoreError::failed)?
            .map(|v| v.value())
            .unwrap_or(0)
            + 1;
        meta.insert(COMMITS, commits).map_err(StoreError::failed)?;
        let mut last = last_oid(&meta)?.max(reserve);
        for op in batch.iter().filter(|op| !op.collection.is_empty()) {
            let name = table(op.collection);
            let def: TableDefinition<'_, u64, &[u8]> = TableDefinition::new(&name);
            let mut t = txn.open_table(def).map_err(StoreError::failed)?;
            match &op.doc {
                Some(doc) => {
                    t.insert(op.oid, &doc[..]).map_err(StoreError::failed)?;
                    last = last.max(op.oid);
                }
                None => {
                    t.remove(op.oid).map_err(StoreError::failed)?;
                }
            }
        }
        meta.insert(LAST_OID, last).map_err(StoreError::failed)?;
    }
    txn.commit().map_err(StoreError::failed)?;
    // Not fsynced: after a crash the mirror may lag (no false alarm), never lead.
    Ok(commits)
}

impl Backend for RedbStore {
    fn name(&self) -> &'static str {
        "redb"
    }

    fn load(&self, collection: &'static str) -> Result<Option<Vec<StoredModel>>, StoreError> {
        self.flush()?;
        let txn = self.shared.db.begin_read().map_err(StoreError::failed)?;
        let meta = txn.open_table(META).map_err(StoreError::failed)?;
        let seeded = format!("seeded:{collection}");
        if meta
            .get(seeded.as_str())
            .map_err(StoreError::failed)?
            .is_none()
        {
            return Ok(None);
        }
        let name = table(collection);
        let def: TableDefinition<'_, u64, &[u8]> = TableDefinition::new(&name);
        let models = match txn.open_table(def) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Some(Vec::new())),
            Err(e) => return Err(StoreError::failed(e)),
        };
        let mut out = Vec::new();
        for row in models.iter().map_err(StoreError::failed)? {
            let (k, v) = row.map_err(StoreError::failed)?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(Some(out))
    }

    fn seed(&self, collection: &'static str, models: &[StoredModel]) -> Result<(), StoreError> {
        self.flush()?;
        let txn = self.shared.db.begin_write().map_err(StoreError::failed)?;
        {
            let name = table(collection);
            let def: TableDefinition<'_, u64, &[u8]> = TableDefinition::new(&name);
            let mut t = txn.open_table(def).map_err(StoreError::failed)?;
            let mut meta = txn.open_table(META).map_err(StoreError::failed)?;
            let mut last = last_oid(&meta)?;
            for (oid, doc) in models {
                t.insert(*oid, doc.as_slice()).map_err(StoreError::failed)?;
                last = last.max(*oid);
            }
            meta.insert(LAST_OID, last).map_err(StoreError::failed)?;
            meta.insert(format!("seeded:{collection}").as_str(), 1)
                .map_err(StoreError::failed)?;
        }
        txn.commit().map_err(StoreError::failed)
    }

    fn last_oid(&self) -> Result<u64, StoreError> {
        self.flush()?;
        let txn = self.shared.db.begin_read().map_err(StoreError::failed)?;
        let meta = txn.open_table(META).map_err(StoreError::failed)?;
        last_oid(&meta)
    }

    fn reserve_oids(&self, upto: u64) {
        {
            let mut queue = self.shared.queue.lock();
            queue.reserve = queue.reserve.max(upto);
        }
        self.shared.wake.notify_one();
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "store_batch_writes",
            "Writes per group commit of the redb store",
            self.shared.batch_writes.clone(),
        );
        registry.register(
            "store_commit_duration_seconds",
            "Time of one group commit of the redb store, fsync included",
            self.shared.commit_seconds.clone(),
        );
    }

    fn call(&self, req: StoreRequest) -> BoxFuture<Result<StoreReply, StoreError>> {
        if !req.persist || req.method == Method::Read {
            return Box::pin(std::future::ready(Ok(StoreReply::done(&req))));
        }
        let doc = match req.method {
            Method::Create | Method::Update => match &req.doc {
                Some(doc) => Some(doc.clone()),
                None => {
                    return Box::pin(std::future::ready(Err(StoreError::failed(format!(
                        "{} of {}/{} {} carries no document",
                        req.method, req.collection, req.model, req.oid
                    )))));
                }
            },
            _ => None,
        };
        let queued = self.queue(req.collection, req.oid, doc);
        Box::pin(async move {
            queued?
                .await
                .map_err(|_| StoreError::failed("the store's writer stopped"))?
                .map_err(StoreError::failed)?;
            Ok(StoreReply::done(&req))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::req;
    use super::*;

    #[tokio::test]
    async fn redb_store_survives_reopening_and_keeps_reservations() {
        let path = std::env::temp_dir().join(format!("omni-redb-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        {
            let store = RedbStore::open(&path).unwrap();
            assert_eq!(store.load("todos").unwrap(), None, "never seeded");
            store.seed("todos", &[(3, b"{\"a\":1}".to_vec())]).unwrap();
            store
                .call(req(Method::Create, 7, Some(b"{\"a\":2}")))
                .await
                .unwrap();
            store
                .call(req(Method::Update, 3, Some(b"{\"a\":3}")))
                .await
                .unwrap();
            store.reserve_oids(1024);
        }
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(
            store.last_oid().unwrap(),
            1024,
            "the reservation is durable"
        );
        assert_eq!(
            store.load("todos").unwrap(),
            Some(vec![(3, b"{\"a\":3}".to_vec()), (7, b"{\"a\":2}".to_vec())])
        );
        store.call(req(Method::Delete, 3, None)).await.unwrap();
        assert_eq!(
            store.load("todos").unwrap(),
            Some(vec![(7, b"{\"a\":2}".to_vec())])
        );
        drop(store);
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn a_store_that_lost_commits_says_so() {
        let path = std::env::temp_dir().join(format!("omni-redb-rb-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        {
            let store = RedbStore::open(&path).unwrap();
            for oid in 1..=3 {
                store
                    .call(req(Method::Create, oid, Some(b"{}")))
                    .await
                    .unwrap();
            }
        }
        assert_eq!(RedbStore::open(&path).unwrap().rolled_back(), None);
        // As if the file had lost its last two commits: the mirror says more were made.
        let mut mirror_path = path.as_os_str().to_owned();
        mirror_path.push(".commits");
        let made: u64 = std::fs::read_to_string(&mirror_path)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        std::fs::write(&mirror_path, (made + 2).to_string()).unwrap();
        assert_eq!(
            RedbStore::open(&path).unwrap().rolled_back(),
            Some((made + 2, made))
        );
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&mirror_path);
    }

    /// Damages each of the last pages of a store in turn: it either refuses to open, says it
    /// rolled back, or still holds every write. Never silently less.
    #[tokio::test]
    async fn a_damaged_page_never_loses_writes_silently() {
        let path = std::env::temp_dir().join(format!("omni-redb-dmg-{}", std::process::id()));
        let mut mirror = path.as_os_str().to_owned();
        mirror.push(".commits");
        let pristine = {
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(&mirror);
            let store = RedbStore::open(&path).unwrap();
            store.seed("todos", &[]).unwrap();
            for oid in 1..=5 {
                store
                    .call(req(Method::Create, oid, Some(b"{\"t\":1}")))
                    .await
                    .unwrap();
            }
            drop(store);
            std::fs::read(&path).unwrap()
        };
        let pages = pristine.len() / 4096;
        let mut outcomes = [0usize; 3];
        for page in pages.saturating_sub(8)..pages {
            let mut bytes = pristine.clone();
            for b in &mut bytes[page * 4096..(page + 1) * 4096] {
                *b ^= 0x5A;
            }
            std::fs::write(&path, &bytes).unwrap();
            match RedbStore::open(&path) {
                Err(_) => outcomes[0] += 1,
                Ok(store) => {
                    if store.rolled_back().is_some() {
                        outcomes[1] += 1;
                    } else {
                        let all = store.load("todos").ok().flatten().map(|r| r.len());
                        assert_eq!(all, Some(5), "page {page}: writes lost silently");
                        outcomes[2] += 1;
                    }
                }
            }
        }
        eprintln!(
            "damaged pages: {} refused, {} rolled back (said so), {} intact",
            outcomes[0], outcomes[1], outcomes[2]
        );
        assert!(outcomes.iter().sum::<usize>() > 0);
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&mirror);
    }

    #[test]
    fn an_empty_file_is_refused_not_started_empty() {
        let path = std::env::temp_dir().join(format!("omni-redb-empty-{}", std::process::id()));
        std::fs::write(&path, b"").unwrap();
        let err = RedbStore::open(&path).unwrap_err();
        assert!(err.message().contains("is empty"), "{err}");
        let _ = std::fs::remove_file(&path);
    }
}
