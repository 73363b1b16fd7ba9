// Tests of the README's server API block (included in its module).

#[tokio::test]
async fn hooks_events_and_emits_work_as_documented() {
    use omni_runtime::__private::serde_json::{Value, json};
    use omni_runtime::client::Client;
    let server = app().no_static().build();
    let world = server.world();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(server.serve(listener));
    let mut c = Client::connect(&format!("ws://{addr}/omni")).await.unwrap();
    let anon = c.add("notes", json!({"text": "anonymous"})).await;
    assert!(anon.is_err(), "no name yet: can_create refuses");
    let reply: Value = c.trigger("hello", &json!({"name": "Ann"})).await.unwrap();
    assert_eq!(reply, json!({"notes": 1, "others": 0}));
    let oid = c.add("notes", json!({"text": "hi"})).await.unwrap();
    let notes = world.collection::<Notes>();
    let note = notes.all().into_iter().find(|(o, _)| o.raw() == oid).unwrap().1;
    assert_eq!((note.text.as_str(), note.author.as_str()), ("hi", "Ann"));
    let log = c.log().to_vec();
    assert!(
        log.iter().any(|m| m["t"] == "emit" && m["name"] == "motd" && m["data"] == "1 notes so far"),
        "{log:?}"
    );
    assert!(
        log.iter().any(|m| m["t"] == "emit" && m["name"] == "joined" && m["data"] == "Ann"),
        "{log:?}"
    );
    task.abort();
}
