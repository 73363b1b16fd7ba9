// Tests of the README's first app (included in its module: `app`, `Session`, ... in scope).

#[test]
fn the_login_reply_is_an_object_with_the_players_oid_as_the_javascript_expects() {
    let server = app().no_static().build();
    let schema = server.schema();
    let login = schema.events.iter().find(|e| e.name == "login").unwrap();
    assert_eq!((login.args_ts.as_str(), login.reply_ts.as_str()), ("Login", "LoggedIn"));
    let decl = &schema.types.iter().find(|t| t.name == "LoggedIn").unwrap().decl;
    assert_eq!(decl, "type LoggedIn = { oid: number, };");
}

#[tokio::test]
async fn the_first_app_logs_ann_in() {
    use omni_runtime::client::Client;
    let server = app().no_static().build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(server.serve(listener));
    let mut c = Client::connect(&format!("ws://{addr}/omni")).await.unwrap();
    let reply: omni_runtime::__private::serde_json::Value = c
        .trigger(
            "login",
            &omni_runtime::__private::serde_json::json!({"name": "Ann", "password": "pw"}),
        )
        .await
        .unwrap();
    assert_eq!(reply["oid"].as_u64(), Some(1), "{reply}");
    task.abort();
}
