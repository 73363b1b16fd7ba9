//! Schema evolution of stored models (issue 14, point 3): a data file written by an older
//! version of a model loads into today's model (serde's attributes for added, renamed and removed
//! fields; a registered migration for a changed type), and a record that still cannot be decoded
//! stops the server, naming it, unless the app lets it skip such records.

use omni_runtime::prelude::*;
use serde_json::json;

/// Version 1 of an item, as an older build stored it.
#[derive(Model, Clone, Default, Serialize, Deserialize)]
struct ItemV1 {
    name: String,
    size: String,
    legacy: bool,
}
impl Permissions<()> for ItemV1 {}
#[collection(model = ItemV1, name = "items")]
struct ItemsV1;
impl CollectionPermissions<()> for ItemsV1 {}

/// Version 2: `name` renamed to `title`, `size` now a number, `legacy` dropped, `color` added.
#[derive(Model, Clone, Default, Serialize, Deserialize, Debug, PartialEq)]
struct ItemV2 {
    #[serde(alias = "name")]
    title: String,
    size: i64,
    #[serde(default = "grey")]
    color: String,
}
fn grey() -> String {
    "grey".into()
}
impl Permissions<()> for ItemV2 {}
#[collection(model = ItemV2, name = "items")]
struct ItemsV2;
impl CollectionPermissions<()> for ItemsV2 {}

/// `size` from a string ("12") to a number; a size that is not a number is left as it is (and
/// will not decode).
fn size_to_number(_oid: u64, doc: &mut serde_json::Value) -> Result<(), String> {
    if let Some(size) = doc.get("size").and_then(|s| s.as_str())
        && let Ok(n) = size.trim().parse::<i64>()
    {
        doc["size"] = n.into();
    }
    Ok(())
}

fn item(name: &str, size: &str) -> ItemV1 {
    ItemV1 {
        name: name.into(),
        size: size.into(),
        legacy: true,
    }
}

/// A data file written by version 1: items 1 "a" (size "12"), 2 "b" ("7"), 3 "c" ("x-large").
fn old_file(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("omni-migrate-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("data.redb");
    let server = Omni::<()>::new()
        .storage(RedbStore::open(&path).unwrap())
        .collection(ItemsV1::with([
            item("a", "12"),
            item("b", "7"),
            item("c", "x-large"),
        ]))
        .persist::<ItemsV1>()
        .no_static()
        .try_build()
        .unwrap();
    drop(server);
    path
}

fn v2(path: &std::path::Path) -> Omni<()> {
    Omni::<()>::new()
        .storage(RedbStore::open(path).unwrap())
        .collection(ItemsV2::empty())
        .persist::<ItemsV2>()
        .no_static()
}

fn err(result: Result<Server<()>, StoreError>) -> String {
    match result {
        Ok(_) => panic!("the server started"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn an_undecodable_record_stops_the_server_and_is_named() {
    let path = old_file("stop");
    // Without the migration, `size` "12" is not a number: the first record already fails.
    let e = err(v2(&path).try_build());
    assert!(
        e.contains("items/ItemV2 1"),
        "names collection, model and OID: {e}"
    );
    assert!(
        e.contains("invalid type: string"),
        "gives serde's reason: {e}"
    );
    assert!(e.contains("Omni::migrate"), "says how to fix it: {e}");
    // With it, only "x-large" is left: record 3.
    let e = err(v2(&path).migrate::<ItemsV2, _>(size_to_number).try_build());
    assert!(e.contains("items/ItemV2 3"), "{e}");
}

#[tokio::test]
async fn old_records_load_into_the_new_model_and_bad_ones_are_skipped_when_allowed() {
    let path = old_file("load");
    let server = v2(&path)
        .migrate::<ItemsV2, _>(size_to_number)
        .skip_undecodable::<ItemsV2>()
        .try_build()
        .unwrap();
    let items = server.world().collection::<ItemsV2>();
    let loaded: Vec<(u64, ItemV2)> = items.all().into_iter().map(|(o, m)| (o.raw(), m)).collect();
    let want = |title: &str, size| ItemV2 {
        title: title.into(),
        size,
        color: "grey".into(),
    };
    assert_eq!(loaded, vec![(1, want("a", 12)), (2, want("b", 7))]);
    // The skipped record's OID is never handed out again.
    let oid = items.insert(want("d", 1)).await.unwrap();
    assert!(oid.raw() > 3, "{oid:?}");
    // A write stores the new shape: it loads without the migration's help.
    items
        .update(Oid::from_raw(1), |i| {
            i.set_size(13);
        })
        .await
        .unwrap();
    drop(items);
    drop(server);
    let again = v2(&path)
        .migrate::<ItemsV2, _>(size_to_number)
        .skip_undecodable::<ItemsV2>();
    let srv = omni_tests::TestServer::start(again).await;
    let items = srv.server.world().collection::<ItemsV2>();
    assert_eq!(items.get(Oid::from_raw(1)), Some(want("a", 13)));
    assert_eq!(items.len(), 3, "a, b and d; c is still skipped");
    // A client over a real socket gets the models in today's shape.
    let client = srv.client().await;
    let b = client.model("items", 2).unwrap();
    assert_eq!(
        (b["title"].clone(), b["size"].clone(), b["color"].clone()),
        (json!("b"), json!(7), json!("grey"))
    );
    assert!(client.model("items", 3).is_none());
}

#[tokio::test]
async fn a_failing_migration_names_the_record() {
    let path = old_file("fail");
    let e = err(v2(&path)
        .migrate::<ItemsV2, _>(|oid, _doc| {
            if oid == 2 {
                Err("cannot convert b".into())
            } else {
                Ok(())
            }
        })
        .try_build());
    // Record 1 fails first (its size is still a string); record 2's migration error would
    // follow. Each names its record.
    assert!(e.contains("items/ItemV2 1"), "{e}");
    let e = err(v2(&path)
        .migrate::<ItemsV2, _>(size_to_number)
        .migrate::<ItemsV2, _>(|oid, _doc| {
            if oid == 2 {
                Err("cannot convert b".into())
            } else {
                Ok(())
            }
        })
        .try_build());
    assert!(e.contains("items/ItemV2 2"), "{e}");
    assert!(e.contains("migration failed: cannot convert b"), "{e}");
}
