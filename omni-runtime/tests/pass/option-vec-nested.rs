use omni_runtime::prelude::*;
use std::collections::HashMap;

#[derive(Serialize, Deserialize, TS, Clone, Default)]
struct Pos {
    x: i32,
    y: i32,
}

#[derive(Serialize, Deserialize, TS, Clone, Default)]
enum Team {
    #[default]
    Red,
    Blue,
}

#[derive(Serialize, Deserialize, TS, Clone, Default)]
struct Path {
    points: Vec<Pos>,
    team: Option<Team>,
}

#[derive(Model, Clone, Default)]
struct Player {
    pos: Pos,
    path: Path,
    target: Option<Pos>,
    trail: Vec<Pos>,
    tags: Vec<String>,
    nickname: Option<String>,
    scores: HashMap<String, u64>,
    oid_of_friend: Option<Oid<Player>>,
    _cache: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

fn main() {
    let mut schema = omni_runtime::__private::schema::Schema::new();
    Player::describe(&mut schema);
    let names: Vec<_> = schema.types.iter().map(|t| t.name.as_str()).collect();
    assert!(names.contains(&"Pos") && names.contains(&"Path") && names.contains(&"Team"), "{names:?}");
}
